//go:build unix

package share_test

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/schema/synth"
)

// BenchmarkIngest stores 100,000 NDJSON student records, as `eduspace
// ingest` hands them to a node (Node.Ingest): read, parse, classify, seal
// at rest, store. Each iteration ingests other students into a fresh node.
// Run:
//
//	go test ./node/share/ -run '^$' -bench Ingest -benchtime 3x
func BenchmarkIngest(b *testing.B) {
	const records = 100_000
	var cpu float64
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		s := nodetest.NewSpace(b)
		n := s.Open(s.Member("uni-a", "university"))
		data, _ := synth.Students(records, uint64(i+1))
		cpu0 := cpuSeconds(b)
		b.StartTimer()
		res, err := n.Ingest(context.Background(), bytes.NewReader(data), "")
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuSeconds(b) - cpu0
		if res.Stored != records {
			b.Fatalf("stored %d of %d: %+v", res.Stored, records, res.ByReason)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(records*b.N)/b.Elapsed().Seconds(), "records/s")
	// The CPU time of the whole process, NATS included, per record.
	b.ReportMetric(cpu/float64(records*b.N)*1e6, "cpu-µs/record")
}

// cpuSeconds is the user and system CPU time this process has used.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
