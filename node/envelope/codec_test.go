package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// wirePayload is the NDJSON payload of one envelope of n of the bench's
// records, as the sender encodes them for an agreement that permits every
// field.
func wirePayload(tb testing.TB, n int) []byte {
	tb.Helper()
	data, _ := synth.Students(n, 9)
	rd := schema.NewNDJSONReader(bytes.NewReader(data), "")
	std, rb := schema.Default(), policy.DefaultRulebook()
	now := time.Now()
	a := &policy.Agreement{ID: "bench", Provider: "sender", Recipient: "receiver", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisPublicInterest, RecordTypes: map[string][]string{"student": synth.StudentFields},
		MaxLevel: schema.L3, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(time.Hour)}
	tz := crypto.NewTokenizer(crypto.TokenKey([]byte("secret"), "receiver"))
	var plain []byte
	for range n {
		rec, _, err := rd.Next()
		if err != nil {
			tb.Fatal(err)
		}
		l, err := std.Classify(rec, now)
		if err != nil {
			tb.Fatal(err)
		}
		d := policy.Decide(rb, policy.Input{Provider: "sender", Recipient: "receiver", RecipientRole: "university",
			Labels: l, Agreement: a, Now: now})
		if !d.Permit {
			tb.Fatalf("denied: %s", d.Reason)
		}
		plain = policy.AppendRecord(plain, rec, d, tz)
	}
	return plain
}

// BenchmarkRecordsCodec compresses and decompresses one 500-record
// envelope's payload with the node's codec (s2.Encode), with S2's better
// level, and with zstd at its fastest level (the alternative S2 is
// measured against), each into a buffer it reuses; "ratio" is plain bytes
// per compressed byte. "node" is compressRecords and recordsPlain, allocations included.
func BenchmarkRecordsCodec(b *testing.B) {
	plain := wirePayload(b, 500)
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(true), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	zdec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	codecs := []struct {
		name   string
		encode func(dst, src []byte) []byte
		decode func(dst, src []byte) ([]byte, error)
	}{
		{"s2", s2.Encode, s2.Decode},
		{"s2-better", s2.EncodeBetter, s2.Decode},
		{"zstd-fastest",
			func(dst, src []byte) []byte { return zenc.EncodeAll(src, dst) },
			func(dst, src []byte) ([]byte, error) { return zdec.DecodeAll(src, dst) }},
	}
	for _, c := range codecs {
		z := c.encode(nil, plain)
		b.Run("compress/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			dst := make([]byte, 0, s2.MaxEncodedLen(len(plain)))
			for b.Loop() {
				dst = c.encode(dst[:0], plain)
			}
			b.ReportMetric(float64(len(plain))/float64(len(z)), "ratio")
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
		})
		b.Run("decompress/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			dst := make([]byte, 0, len(plain))
			for b.Loop() {
				if dst, err = c.decode(dst[:0], z); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
		})
	}
	b.Run("node", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := RecordsPlain(CompressRecords(plain, 500), RecordsLimit(500)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
	})
}

// compressed is plain as a compressed payload, whatever its size.
func compressed(plain []byte) []byte {
	return append(bytes.Clone(s2BlockMagic), s2.Encode(nil, plain)...)
}

// declaring is a compressed payload z whose block declares declared bytes
// instead of what it does.
func declaring(tb testing.TB, z []byte, declared uint64) []byte {
	tb.Helper()
	block := z[len(s2BlockMagic):]
	_, n := binary.Uvarint(block)
	if n <= 0 {
		tb.Fatalf("block size does not parse: %d", n)
	}
	return append(binary.AppendUvarint(bytes.Clone(s2BlockMagic), declared), block[n:]...)
}

// ops is a compressed payload declaring size bytes, of the S2 operations
// given by hand.
func ops(size uint64, op ...byte) []byte {
	return append(binary.AppendUvarint(bytes.Clone(s2BlockMagic), size), op...)
}

func TestRecordsPlain(t *testing.T) {
	line := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdef","course_code":"CS101","score":91}` + "\n")
	plain := bytes.Repeat(line, 100)
	big := bytes.Repeat(line, 2*MaxRecordsPlain/len(line)) // 16 MiB: more than any envelope may hold
	z := compressed(plain)
	cases := []struct {
		name  string
		body  []byte
		limit int
		want  []byte // nil: an error
	}{
		{"NDJSON as it is", plain, RecordsLimit(100), plain},
		{"NDJSON above the limit (the envelope size bounds it)", plain, 10, plain},
		{"empty (a body emptied by retention)", []byte{}, MaxRecordsPlain, []byte{}},
		{"a block", z, RecordsLimit(100), plain},
		{"a block of nothing", compressed(nil), RecordsLimit(1), []byte{}},
		{"a block of one literal", ops(3, 2<<2, '{', '}', '\n'), RecordsLimit(1), []byte("{}\n")},
		{"a block at exactly the limit", z, len(plain), plain},
		{"a block one byte above the limit", z, len(plain) - 1, nil},
		{"a block of 16 MiB (a bomb)", compressed(big), MaxRecordsPlain, nil},
		{"a block declaring 4 GiB", declaring(t, z, 1<<32-1), MaxRecordsPlain, nil},
		{"a block whose size has more than 32 bits", declaring(t, z, 1<<32), MaxRecordsPlain, nil},
		{"a block whose size does not end", append(bytes.Clone(s2BlockMagic), 0x80, 0x80, 0x80, 0x80, 0x80, 0x80), MaxRecordsPlain, nil},
		{"the magic alone (no size)", s2BlockMagic, RecordsLimit(100), nil},
		{"a block declaring one byte less than it holds", declaring(t, z, uint64(len(plain)-1)), RecordsLimit(100), nil},
		{"a block declaring one byte more than it holds", declaring(t, z, uint64(len(plain)+1)), RecordsLimit(100), nil},
		{"a block declaring nothing, holding records", declaring(t, z, 0), RecordsLimit(100), nil},
		{"a copy before anything was written", ops(10, 9<<2|2, 0x10, 0x00), RecordsLimit(1), nil},
		{"a copy from before the start", ops(13, 2<<2, '{', '}', '\n', 9<<2|2, 0x04, 0x00), RecordsLimit(1), nil},
		{"a literal longer than the block", ops(3, 5<<2, '{', '}', '\n'), RecordsLimit(1), nil},
		{"a truncated block", z[:len(z)-10], RecordsLimit(100), nil},
		{"a block and a newline", append(bytes.Clone(z), '\n'), RecordsLimit(100), nil},
		{"a block and a record", append(bytes.Clone(z), line...), RecordsLimit(100), nil},
		{"two blocks", append(bytes.Clone(z), s2.Encode(nil, plain)...), 2 * len(plain), nil},
		{"a block then the magic", append(bytes.Clone(z), s2BlockMagic...), 2 * len(plain), nil},
	}
	for _, c := range cases {
		got, err := RecordsPlain(c.body, c.limit)
		if c.want == nil {
			if err == nil || !errors.Is(err, errRecordsBlock) {
				t.Errorf("%s: got %d bytes, %v; want an error wrapping errRecordsBlock", c.name, len(got), err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %d bytes, %v; want %d bytes", c.name, len(got), err, len(c.want))
		}
	}
}

// TestRecordsPlainBounded: refusing a bomb allocates at most what the
// limit allows, and nothing when the block declares more than that,
// whatever the block holds.
func TestRecordsPlainBounded(t *testing.T) {
	zeros := make([]byte, 64<<20)
	bomb := compressed(zeros)
	limit := RecordsLimit(1)
	for _, c := range []struct {
		name  string
		body  []byte
		bound uint64 // bytes it may allocate
	}{
		{"declared 64 MiB", bomb, 1 << 10},
		{"declared 4 GiB", declaring(t, bomb, 1<<32-1), 1 << 10},
		{"declaring 1000 bytes, holding 64 MiB", declaring(t, bomb, 1000), 1000 + 1<<10},
		{"declaring the limit, holding 64 MiB", declaring(t, bomb, uint64(limit)), uint64(limit) + 16<<10}, // rounded up to pages
	} {
		// The fewest bytes of three tries: anything else the process
		// allocates meanwhile (the runtime, the race detector) only adds.
		got := uint64(math.MaxUint64)
		for range 3 {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := RecordsPlain(c.body, limit)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Errorf("%s: accepted", c.name)
			}
			got = min(got, after.TotalAlloc-before.TotalAlloc)
		}
		if got > c.bound {
			t.Errorf("%s: allocated %d bytes to refuse it, want at most %d", c.name, got, c.bound)
		}
	}
}

func TestCompressRecords(t *testing.T) {
	line := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdef","course_code":"CS101","score":91}` + "\n")
	plain := wirePayload(t, 500)
	for _, c := range []struct {
		name       string
		plain      []byte
		count      uint32
		compressed bool
	}{
		{"an envelope of the bench's records", plain, 500, true},
		{"one short record (the block would not be smaller)", []byte(`{"type":"x"}` + "\n"), 1, false},
		{"more than the receiver accepts decompressed", bytes.Repeat(line, 2*MaxRecordsPlain/len(line)), 100000, false},
		{"more than count records may be", bytes.Repeat(line, 20000), 1, false},
		{"empty", nil, 1, false},
	} {
		got := CompressRecords(c.plain, c.count)
		if isBlock := bytes.HasPrefix(got, s2BlockMagic); isBlock != c.compressed {
			t.Errorf("%s: compressed %v, want %v", c.name, isBlock, c.compressed)
			continue
		}
		if !c.compressed && !bytes.Equal(got, c.plain) {
			t.Errorf("%s: payload changed though not compressed", c.name)
		}
		if c.compressed && cap(got) != len(got) {
			t.Errorf("%s: %d bytes in a buffer of %d", c.name, len(got), cap(got))
		}
		back, err := RecordsPlain(got, RecordsLimit(c.count))
		if err != nil || !bytes.Equal(back, c.plain) {
			t.Errorf("%s: round trip gave %d bytes, %v; want %d bytes", c.name, len(back), err, len(c.plain))
		}
	}
	if z := CompressRecords(plain, 500); len(z)*3 > len(plain) {
		t.Errorf("500 records: %d bytes compressed to %d, want at least 3:1", len(plain), len(z))
	}
}

// FuzzRecordsPlain: whatever the body, recordsPlain does not panic, a
// block it accepts gives at most limit bytes, and what it gives survives
// the round trip.
func FuzzRecordsPlain(f *testing.F) {
	line := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdef","course_code":"CS101","score":91}` + "\n")
	plain := bytes.Repeat(line, 20)
	f.Add(plain)
	f.Add(compressed(plain))
	f.Add(declaring(f, compressed(plain), uint64(len(plain)-1)))
	f.Add(compressed(make([]byte, 1<<20)))
	f.Add(ops(13, 2<<2, '{', '}', '\n', 9<<2|2, 0x04, 0x00))
	f.Add(s2BlockMagic)
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 64 << 10
		got, err := RecordsPlain(body, limit)
		if err != nil || !bytes.HasPrefix(body, s2BlockMagic) {
			return
		}
		if len(got) > limit {
			t.Fatalf("%d bytes decompressed, limit %d", len(got), limit)
		}
		back, err := RecordsPlain(compressed(got), limit)
		if err != nil || !bytes.Equal(back, got) {
			t.Fatalf("round trip of %d bytes: %d bytes, %v", len(got), len(back), err)
		}
	})
}
