package node

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/schema"
)

// The payload of a records envelope is NDJSON, either as it is or as one
// zstd frame (crypto/ENVELOPE.md §11). The two tell themselves apart by
// their first bytes: a record line starts with '{', a zstd frame with the
// frame magic. Senders compress; receivers read both, so envelopes from
// nodes that do not compress still open. The received table stores the
// payload as it arrived, so a stored body is of either form too.
//
// zstd is klauspost/compress's: the module is in the build already (the
// embedded NATS server compresses with its s2 and flate packages), and its
// zstd package brings no other module.

// zstdMagic starts every zstd frame (RFC 8878 §3.1.1).
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// maxRecordsPlain is the most NDJSON one envelope's payload may hold once
// decompressed: what an uncompressed envelope can carry at most
// (crypto.MaxEnvelopeSize). Compression thus lets no sender hand this node
// more than it could before, and decompressing one envelope costs about
// the memory that reading the largest uncompressed one does.
const maxRecordsPlain = crypto.MaxEnvelopeSize

// recordsLimit is the most bytes of NDJSON a payload of count records may
// decompress to: count lines of the longest record any reader of the
// project accepts (schema.MaxLineBytes and its newline), and never more
// than maxRecordsPlain. The count is the sender's, from the signed header;
// it only tightens the bound for small envelopes.
func recordsLimit(count uint32) int {
	return int(min(uint64(count)*(schema.MaxLineBytes+1), maxRecordsPlain))
}

// The encoder and the decoder are shared by every node of the process and
// made on first use. EncodeAll and DecodeAll are safe for concurrent use;
// each allows GOMAXPROCS calls at once, more wait.
//
// SpeedFastest: on a 500-record envelope of the bench's records (295 KB)
// it takes 1.0–1.2 ms and leaves 49 KB (6.03:1); SpeedDefault takes
// 1.4–1.7 ms for 5.98:1, SpeedBetterCompression 3.7 ms for 6.14:1;
// decompressing takes 0.35–0.4 ms at any of them (BenchmarkRecordsCodec,
// 2 shared cores). The pipeline is CPU-bound: the fastest level it is.
// Single segment: every frame declares its size, which the receiver checks
// against recordsLimit before it decodes anything.
var (
	recordsEncoder = sync.OnceValue(func() *zstd.Encoder {
		e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(true))
		if err != nil {
			panic("node: zstd encoder: " + err.Error()) // constant options: a bug
		}
		return e
	})
	recordsDecoder = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxRecordsPlain), zstd.WithDecoderMaxWindow(maxRecordsPlain),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic("node: zstd decoder: " + err.Error()) // constant options: a bug
		}
		return d
	})
)

// compressRecords returns the payload for count records of NDJSON plain:
// one zstd frame, or plain itself when the frame would not be smaller or
// plain is longer than a receiver accepts decompressed (recordsLimit; then
// the envelope travels as before, or is too large as before).
func compressRecords(plain []byte, count uint32) []byte {
	if len(plain) == 0 || len(plain) > recordsLimit(count) {
		return plain
	}
	z := recordsEncoder().EncodeAll(plain, make([]byte, 0, len(plain)/4))
	if len(z) >= len(plain) {
		return plain
	}
	return z
}

// errRecordsFrame wraps every reason a compressed payload is refused.
var errRecordsFrame = errors.New("compressed records")

// recordsPlain returns the NDJSON of a records payload or stored body: body
// itself unless it starts with the zstd magic, else the frame decompressed.
// A frame that does not declare its size, declares more than limit bytes,
// or does not decode to exactly what it declares is an error. Decoding
// allocates the declared size, and at most a few times limit for a frame
// that holds more than it declares, whatever it holds (TestRecordsPlainBounded).
// Errors name no content.
func recordsPlain(body []byte, limit int) ([]byte, error) {
	if !bytes.HasPrefix(body, zstdMagic) {
		return body, nil
	}
	var fh zstd.Header
	if err := fh.Decode(body); err != nil {
		return nil, fmt.Errorf("%w: frame header: %w", errRecordsFrame, err)
	}
	if !fh.HasFCS {
		return nil, fmt.Errorf("%w: frame does not declare its size", errRecordsFrame)
	}
	if fh.FrameContentSize > uint64(limit) {
		return nil, fmt.Errorf("%w: %d bytes decompressed, more than the %d allowed", errRecordsFrame, fh.FrameContentSize, limit)
	}
	// With the decoder's cap limit, DecodeAll writes at most cap(dst) bytes.
	out, err := recordsDecoder().DecodeAll(body, make([]byte, 0, int(fh.FrameContentSize)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errRecordsFrame, err)
	}
	return out, nil
}

// ReceivedNDJSON returns the records of a body as the received table stores
// it (one envelope's payload as it arrived: NDJSON, or NDJSON compressed as
// crypto/ENVELOPE.md §11 describes), as NDJSON: for tools and tests that
// read a node's database directly.
func ReceivedNDJSON(body []byte) ([]byte, error) {
	return recordsPlain(body, maxRecordsPlain)
}
