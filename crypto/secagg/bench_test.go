package secagg

import (
	"fmt"
	"testing"
)

// BenchmarkRound plays one whole round — every participant's Commit,
// Shares, Mask and Unmask, and the center's Sum — on one core, for 10 and
// 20 participants and 1,000 and 10,000 cells, with no dropout and with one
// participant dropping out after sharing. In a real round each node does
// its own part in parallel; the per-node figure is the round's time divided
// by the participants plus one (the center), a rough lower bound on wall
// time per round.
func BenchmarkRound(b *testing.B) {
	for _, n := range []int{10, 20} {
		for _, cells := range []int{1000, 10000} {
			for _, drop := range []int{0, 1} {
				sc := scenario{n: n, t: (n - 1) / 3, cells: cells}
				if drop == 1 {
					sc.beforeMask = []int{n / 2}
				}
				b.Run(fmt.Sprintf("n=%d/cells=%d/dropouts=%d", n, cells, drop), func(b *testing.B) {
					rnd := seeded("bench")
					for b.Loop() {
						o := run(b, sc, rnd)
						if _, err := o.round.Sum(o.tr); err != nil {
							b.Fatal(err)
						}
					}
					ms := b.Elapsed().Seconds() * 1000 / float64(b.N)
					b.ReportMetric(ms, "ms/round")
					b.ReportMetric(1000/ms, "rounds/s")
					b.ReportMetric(0, "ns/op")
				})
			}
		}
	}
}

// BenchmarkMask is one participant's costliest step: masking its vector
// with n−1 pairwise masks and its self mask.
func BenchmarkMask(b *testing.B) {
	for _, n := range []int{10, 20} {
		for _, cells := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("n=%d/cells=%d", n, cells), func(b *testing.B) {
				rnd := seeded("bench-mask")
				sc := scenario{n: n, t: (n - 1) / 3, cells: cells, beforeUnmask: make([]int, 0)}
				x := make([]int64, cells)
				for b.Loop() {
					b.StopTimer()
					o := runUntilMask(b, sc, rnd)
					b.StartTimer()
					if _, err := o.p.Mask(x, o.inbox); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/mask")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

type maskSetup struct {
	p     *Participant
	inbox []ShareBundle
}

// runUntilMask plays a round up to participant 0's Mask.
func runUntilMask(tb testing.TB, sc scenario, rnd interface{ Read([]byte) (int, error) }) maskSetup {
	r, err := NewRound(Params{RoundID: "bench", Participants: names(sc.n), Threshold: sc.t, VectorLen: sc.cells})
	if err != nil {
		tb.Fatal(err)
	}
	var parts []*Participant
	var cs []Commitment
	for _, id := range r.Participants() {
		p, _ := r.NewParticipant(id, rnd)
		parts = append(parts, p)
		cs = append(cs, p.Commit())
	}
	var inbox []ShareBundle
	for i, p := range parts {
		bs, err := p.Shares(cs)
		if err != nil {
			tb.Fatal(err)
		}
		if i != 0 {
			inbox = append(inbox, bs[0])
		}
	}
	return maskSetup{p: parts[0], inbox: inbox}
}
