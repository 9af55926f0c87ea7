package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/s2"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/schema"
)

// The payload of a records envelope is NDJSON, either as it is or as one
// S2 block behind a magic of our own (crypto/ENVELOPE.md §11). The two tell
// themselves apart by their first bytes: a record line starts with '{', a
// compressed payload with s2BlockMagic. Senders compress; receivers read
// both, so envelopes from nodes that do not compress still open. The
// received table stores the payload as it arrived, so a stored body is of
// either form too. A zstd frame is not read: it is not NDJSON either, and
// is refused as such.
//
// S2 is klauspost/compress's: the module is in the build already, and the
// embedded NATS server compresses with the same package. On a 500-record
// envelope of the bench's records (295 KB of NDJSON) s2.Encode takes
// 0.21–0.26 ms and leaves 72 KB (4.07:1), s2.Decode 0.12–0.15 ms;
// s2.EncodeBetter 0.7–0.8 ms for 71 KB (4.15:1); zstd at its fastest
// level 1.0–1.25 ms for 49 KB (6.03:1) and 0.25–0.3 ms to decompress
// (BenchmarkRecordsCodec, 2 shared cores). The
// pipeline is CPU-bound and SQLite spends about 8 ns per stored byte on
// each side, so zstd's 23 KB less per envelope buy back only part of the
// ≈ 1.1 ms its codec costs more. End to end, `eduspace bench --records
// 99000` uses 25.9 µs of CPU per record with S2 against 27.8 with zstd
// (−7 %; means of 16 alternate runs each, CPU profiles): compressing
// −2.1 µs, decompressing −0.55, SQLite +0.7, NATS +0.15.
//
// The block format, not S2's stream format: the size is known before
// compressing and the block declares it in its first bytes, so the
// receiver checks it against RecordsLimit and allocates exactly that
// before it decodes anything, and decoding fails unless the block fills
// exactly what it declares. The stream's checksums would guard nothing the
// envelope's AEAD does not; its reader decodes each block into buffers of
// its own (1–4 MiB) and copies it out, which doubles the decoding time on
// the bench's envelopes (0.21–0.23 ms against 0.10–0.15, allocations
// included); and it cannot say how much it will produce before it has. A
// block has no magic of its own, hence ours; without it, a stored body is
// what `s2d -block` reads.

// s2BlockMagic starts every compressed payload; an S2 block follows it.
// 0x89 starts no UTF-8 text, so no NDJSON either.
var s2BlockMagic = []byte("\x89S2B")

// MaxRecordsPlain is the most NDJSON one envelope's payload may hold once
// decompressed: what an uncompressed envelope can carry at most
// (crypto.MaxEnvelopeSize). Compression thus lets no sender hand this node
// more than it could uncompressed, and decompressing one envelope costs
// about the memory that reading the largest uncompressed one does.
const MaxRecordsPlain = crypto.MaxEnvelopeSize

// RecordsLimit is the most bytes of NDJSON a payload of count records may
// decompress to: count lines of the longest record any reader of the
// project accepts (schema.MaxLineBytes and its newline), and never more
// than MaxRecordsPlain. The count is the sender's, from the signed header;
// it only tightens the bound for small envelopes.
func RecordsLimit(count uint32) int {
	return int(min(uint64(count)*(schema.MaxLineBytes+1), MaxRecordsPlain))
}

// encodeScratch holds buffers for s2.Encode, which wants room for an
// input that does not compress (s2.MaxEncodedLen, a little more than the
// input) though a records payload takes a quarter of that: the block is
// encoded here and copied out at its size, so a sender allocates what it
// sends and no more.
var encodeScratch = sync.Pool{New: func() any { return new([]byte) }}

// CompressRecords returns the payload for count records of NDJSON plain:
// s2BlockMagic and one S2 block, or plain itself when that would not be
// smaller or plain is longer than a receiver accepts decompressed
// (RecordsLimit; then the envelope travels uncompressed, or is too large
// as it would be uncompressed).
func CompressRecords(plain []byte, count uint32) []byte {
	if len(plain) == 0 || len(plain) > RecordsLimit(count) {
		return plain
	}
	scratch := encodeScratch.Get().(*[]byte)
	defer encodeScratch.Put(scratch)
	if n := s2.MaxEncodedLen(len(plain)); cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	block := s2.Encode(*scratch, plain)
	if len(s2BlockMagic)+len(block) >= len(plain) {
		return plain
	}
	z := make([]byte, 0, len(s2BlockMagic)+len(block))
	return append(append(z, s2BlockMagic...), block...)
}

// errRecordsBlock wraps every reason a compressed payload is refused.
var errRecordsBlock = errors.New("compressed records")

// RecordsPlain returns the NDJSON of a records payload or stored body: body
// itself unless it starts with s2BlockMagic, else the block decompressed.
// A block whose size does not parse, that declares more than limit bytes,
// or that does not decode to exactly what it declares (corrupt, truncated,
// followed by anything) is an error. Decoding allocates the declared size
// and nothing else, whatever the block holds (TestRecordsPlainBounded).
// Errors name no content.
func RecordsPlain(body []byte, limit int) ([]byte, error) {
	return RecordsPlainInto(nil, body, limit)
}

// RecordsPlainInto is recordsPlain decompressing into dst's storage when
// it is large enough (a new buffer otherwise); body itself comes back when
// it is not compressed.
func RecordsPlainInto(dst, body []byte, limit int) ([]byte, error) {
	block, ok := bytes.CutPrefix(body, s2BlockMagic)
	if !ok {
		return body, nil
	}
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, fmt.Errorf("%w: block size: %w", errRecordsBlock, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes decompressed, more than the %d allowed", errRecordsBlock, n, limit)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out, err := s2.Decode(dst[:n], block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errRecordsBlock, err)
	}
	return out, nil
}

// ReceivedNDJSON returns the records of a body as the received table stores
// it (one envelope's payload as it arrived: NDJSON, or NDJSON compressed as
// crypto/ENVELOPE.md §11 describes), as NDJSON: for tools and tests that
// read a node's database directly.
func ReceivedNDJSON(body []byte) ([]byte, error) {
	return RecordsPlain(body, MaxRecordsPlain)
}
