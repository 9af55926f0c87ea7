//go:build unix

package linkage_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
)

// BenchmarkLinkage100k links the 100,000 students a university holds
// through the evaluator, two nodes on embedded NATS, by the path `eduspace
// linkage pseudonymize` takes (Node.LinkagePseudonyms): read the records,
// blind, seal and send the chunks, evaluate with proofs, answer, verify,
// unblind. Each iteration takes another epoch, so the evaluator's limits
// are not reached. Run:
//
//	go test ./node/linkage/ -run '^$' -bench Linkage100k -benchtime 3x
func BenchmarkLinkage100k(b *testing.B) {
	const people = 100_000
	s := nodetest.NewSpace(b)
	ca, ce := s.Member("uni-a", "university"), s.Member("uni-e", "university")
	s.LinkageEvaluator("uni-e")
	a := s.Open(ca)
	s.Open(ce)
	ctx := context.Background()
	var body strings.Builder
	body.WriteString(students(s.Now, "A", 0, people))
	if _, err := a.Ingest(ctx, strings.NewReader(body.String()), ""); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuSeconds(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p, rep, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, fmt.Sprintf("bench-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if len(p) != people || rep.Evaluated != people {
			b.Fatalf("%d pseudonyms, report %+v", len(p), rep)
		}
	}
	b.ReportMetric(float64(people*b.N)/b.Elapsed().Seconds(), "ids/s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/100k")
	// The CPU time of the whole process (requester, evaluator and NATS):
	// what the linkage costs whatever else the machine runs.
	b.ReportMetric((cpuSeconds(b)-cpu0)/float64(b.N), "cpu-s/100k")
}

// cpuSeconds is the user and system CPU time this process has used.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
