package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// TestRunSmall runs the whole benchmark on a few records: every record
// arrives, the figures are filled in and consistent.
func TestRunSmall(t *testing.T) {
	res, err := Run(context.Background(), Options{Records: 2000, LatencySamples: 5, Suite: crypto.SuiteX25519})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 2000 || res.RecordsPerS <= 0 || res.BaselineMsgsPerS <= 0 || res.P50ms <= 0 || res.P99ms < res.P50ms {
		t.Fatalf("implausible result: %+v", res)
	}
	if got := res.RecordsPerS / res.BaselineMsgsPerS; got != res.Ratio {
		t.Errorf("ratio %v, want records_per_s / baseline_msgs_per_s = %v", res.Ratio, got)
	}
	for name, p := range map[string]Path{"stream": res.Paths.Stream, "held": res.Paths.Held, "forward": res.Paths.Forward} {
		if p.Records != 2000 || p.RecordsPerS <= 0 || p.CPUMicrosPerRecord <= 0 || p.Ratio != p.RecordsPerS/res.BaselineMsgsPerS {
			t.Errorf("path %s: implausible %+v", name, p)
		}
	}
	if res.Paths.Held.IngestRecordsPerS <= 0 {
		t.Errorf("held path: no ingest figure: %+v", res.Paths.Held)
	}
	if res.RecordsPerS != res.Paths.Stream.RecordsPerS || res.Ratio != res.Paths.Stream.Ratio {
		t.Errorf("top-level figures %v/%v, want the stream path's %+v", res.RecordsPerS, res.Ratio, res.Paths.Stream)
	}
}

// TestRecordsAreRealistic: the generated records are valid, adult,
// about 600 bytes, and all at level L3 or below.
func TestRecordsAreRealistic(t *testing.T) {
	data, size := synth.Students(500, 3)
	if mean := size / 500; mean < 500 || mean > 700 {
		t.Errorf("mean record size %d bytes, want about 600", mean)
	}
	rd := schema.NewNDJSONReader(bytes.NewReader(data), "")
	for i := 0; i < 500; i++ {
		rec, _, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		l, err := schema.Default().Classify(rec, time.Now())
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if l.Level > schema.L3 || len(l.Flags) > 0 {
			t.Fatalf("record %d: level %s flags %v", i, l.Level, l.Flags)
		}
	}
}

// BenchmarkPipeline is `eduspace bench` as a Go benchmark: records/s of
// the full pipeline and its ratio to plain JetStream in the same run.
func BenchmarkPipeline(b *testing.B) {
	for b.Loop() {
		res, err := Run(context.Background(), Options{Records: 20000, LatencySamples: 20})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.RecordsPerS, "records/s")
		b.ReportMetric(res.BaselineMsgsPerS, "baseline_msgs/s")
		b.ReportMetric(res.Ratio, "ratio")
		b.ReportMetric(res.P99ms, "p99_ms")
	}
}
