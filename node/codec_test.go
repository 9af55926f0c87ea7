package node

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/synth"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
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
	a := benchAgreement(now)
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
		plain = appendWire(plain, rec, d, tz)
	}
	return plain
}

// BenchmarkRecordsCodec compresses and decompresses one 500-record
// envelope's payload at the levels worth considering; "ratio" is plain
// bytes per compressed byte. The node uses SpeedFastest (codec.go).
func BenchmarkRecordsCodec(b *testing.B) {
	plain := wirePayload(b, 500)
	for _, lv := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv), zstd.WithSingleSegment(true), zstd.WithEncoderConcurrency(1))
		if err != nil {
			b.Fatal(err)
		}
		z := enc.EncodeAll(plain, nil)
		b.Run("compress/"+lv.String(), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			dst := make([]byte, 0, len(plain))
			for b.Loop() {
				dst = enc.EncodeAll(plain, dst[:0])
			}
			b.ReportMetric(float64(len(plain))/float64(len(z)), "ratio")
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
		})
		b.Run("decompress/"+lv.String(), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				if _, err := recordsPlain(z, recordsLimit(500)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// frame compresses plain as the node does.
func frame(plain []byte) []byte { return recordsEncoder().EncodeAll(plain, nil) }

// streamFrame compresses plain with a streaming writer, whose frame does
// not declare its size.
func streamFrame(tb testing.TB, plain []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	// A flush before the end writes the header before the size is known.
	w.Write(plain[:len(plain)-1])
	w.Flush()
	w.Write(plain[len(plain)-1:])
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	var fh zstd.Header
	if err := fh.Decode(buf.Bytes()); err != nil || fh.HasFCS {
		tb.Fatalf("stream of %d bytes: %v, header declares its size: %v", len(plain), err, fh.HasFCS)
	}
	return buf.Bytes()
}

// lyingFrame is a frame of plain whose header declares declared bytes
// (plain must be 256 bytes to 64 KiB, so that the declared size is two
// bytes long, and declared in that range too).
func lyingFrame(tb testing.TB, plain []byte, declared int) []byte {
	tb.Helper()
	z := bytes.Clone(frame(plain))
	var fh zstd.Header
	if err := fh.Decode(z); err != nil || !fh.SingleSegment || z[4]>>6 != 1 {
		tb.Fatalf("frame of %d bytes: %v, header %+v", len(plain), err, fh)
	}
	z[5], z[6] = byte(declared-256), byte((declared-256)>>8) // RFC 8878 §3.1.1.1.4: two bytes, minus 256
	return z
}

// splice is the header of frame a on the blocks of frame b.
func splice(tb testing.TB, a, b []byte) []byte {
	tb.Helper()
	var ha, hb zstd.Header
	if err := ha.Decode(a); err != nil {
		tb.Fatal(err)
	}
	if err := hb.Decode(b); err != nil {
		tb.Fatal(err)
	}
	return append(bytes.Clone(a[:ha.HeaderSize]), b[hb.HeaderSize:]...)
}

func TestRecordsPlain(t *testing.T) {
	line := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdef","course_code":"CS101","score":91}` + "\n")
	plain := bytes.Repeat(line, 100)
	big := bytes.Repeat(line, 2*maxRecordsPlain/len(line)) // 16 MiB: more than any envelope may hold
	corrupt := bytes.Clone(frame(plain))
	corrupt[len(corrupt)/2] ^= 0xff
	small := plain[:1000]
	cases := []struct {
		name  string
		body  []byte
		limit int
		want  []byte // nil: an error
	}{
		{"NDJSON as it is", plain, recordsLimit(100), plain},
		{"NDJSON above the limit (the envelope size bounds it)", plain, 10, plain},
		{"empty (a body emptied by retention)", []byte{}, maxRecordsPlain, []byte{}},
		{"a frame", frame(plain), recordsLimit(100), plain},
		{"a frame at exactly the limit", frame(plain), len(plain), plain},
		{"a frame one byte above the limit", frame(plain), len(plain) - 1, nil},
		{"a frame of 16 MiB (a bomb)", frame(big), maxRecordsPlain, nil},
		{"a frame of 16 MiB without its size", streamFrame(t, big), maxRecordsPlain, nil},
		{"a frame without its size", streamFrame(t, plain), recordsLimit(100), nil},
		{"a frame declaring fewer bytes than it holds", lyingFrame(t, small, 300), recordsLimit(100), nil},
		{"a frame declaring more bytes than it holds", lyingFrame(t, small, 2000), recordsLimit(100), nil},
		{"a corrupt frame", corrupt, recordsLimit(100), nil},
		{"a truncated frame", frame(plain)[:len(frame(plain))-10], recordsLimit(100), nil},
		{"the magic alone", zstdMagic, recordsLimit(100), nil},
		{"a frame and trailing bytes", append(frame(plain), "{}\n"...), recordsLimit(100), nil},
		{"two frames", append(frame(plain), frame(plain)...), 2 * len(plain), nil},
	}
	for _, c := range cases {
		got, err := recordsPlain(c.body, c.limit)
		if c.want == nil {
			if err == nil || !errors.Is(err, errRecordsFrame) {
				t.Errorf("%s: got %d bytes, %v; want an error wrapping errRecordsFrame", c.name, len(got), err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %d bytes, %v; want %d bytes", c.name, len(got), err, len(c.want))
		}
	}
}

// TestRecordsPlainBounded: refusing a bomb allocates about what the limit
// allows, not what the bomb holds.
func TestRecordsPlainBounded(t *testing.T) {
	zeros := make([]byte, 64<<20)
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"declared 64 MiB", frame(zeros)},
		{"undeclared 64 MiB", streamFrame(t, zeros)},
		{"declaring 1000 bytes, holding 64 MiB", splice(t, lyingFrame(t, bytes.Repeat([]byte("{}\n"), 400), 1000), frame(zeros))},
		{"declaring 1 MiB, holding 64 MiB", splice(t, frame(zeros[:1<<20]), frame(zeros))},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := recordsPlain(c.body, recordsLimit(1))
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 4*(schema.MaxLineBytes+1) {
			t.Errorf("%s: allocated %d bytes to refuse it, limit %d", c.name, got, recordsLimit(1))
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
		{"one short record (the frame would not be smaller)", []byte(`{"type":"x"}` + "\n"), 1, false},
		{"more than the receiver accepts decompressed", bytes.Repeat(line, 2*maxRecordsPlain/len(line)), 100000, false},
		{"more than count records may be", bytes.Repeat(line, 20000), 1, false},
		{"empty", nil, 1, false},
	} {
		got := compressRecords(c.plain, c.count)
		if isFrame := bytes.HasPrefix(got, zstdMagic); isFrame != c.compressed {
			t.Errorf("%s: compressed %v, want %v", c.name, isFrame, c.compressed)
			continue
		}
		if !c.compressed && !bytes.Equal(got, c.plain) {
			t.Errorf("%s: payload changed though not compressed", c.name)
		}
		back, err := recordsPlain(got, recordsLimit(c.count))
		if err != nil || !bytes.Equal(back, c.plain) {
			t.Errorf("%s: round trip gave %d bytes, %v; want %d bytes", c.name, len(back), err, len(c.plain))
		}
	}
	if z := compressRecords(plain, 500); len(z)*4 > len(plain) {
		t.Errorf("500 records: %d bytes compressed to %d, want at least 4:1", len(plain), len(z))
	}
}

// FuzzRecordsPlain: whatever the body, recordsPlain does not panic, and a
// frame it accepts gives at most limit bytes.
func FuzzRecordsPlain(f *testing.F) {
	line := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdef","course_code":"CS101","score":91}` + "\n")
	plain := bytes.Repeat(line, 20)
	f.Add(plain)
	f.Add(frame(plain))
	f.Add(streamFrame(f, plain))
	f.Add(frame(make([]byte, 1<<20)))
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 64 << 10
		got, err := recordsPlain(body, limit)
		if err != nil {
			return
		}
		if bytes.HasPrefix(body, zstdMagic) && len(got) > limit {
			t.Fatalf("%d bytes decompressed, limit %d", len(got), limit)
		}
	})
}
