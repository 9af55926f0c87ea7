package release

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// TestPlannedRho: the ρ a DP release is checked against the budget with,
// computed before the data is read, is the ρ its tables state.
func TestPlannedRho(t *testing.T) {
	rt, _ := schema.Default().Type("student")
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	rows := people(rand.New(rand.NewPCG(1, 2)), 300)
	for _, fields := range [][]string{{"gender"}, {"address", "birth_date", "gender"}} {
		for _, eps := range []float64{0.1, 1, 2.5, 9} {
			want, err := plannedRho(rt, fields, eps, 1e-6, now)
			if err != nil {
				t.Fatal(err)
			}
			s := privacy.NewSampler(rand.NewChaCha8([32]byte{1}))
			_, dp, err := synthesise(rows, rt, fields, eps, 1e-6, s, rand.New(rand.NewChaCha8([32]byte{2})), now)
			if err != nil {
				t.Fatal(err)
			}
			if dp.Rho != want || want <= 0 {
				t.Errorf("fields %v, ε %v: planned ρ %v, stated %v", fields, eps, want, dp.Rho)
			}
		}
	}
	if _, err := plannedRho(rt, []string{"address"}, 1, 1e-6, now); err == nil {
		t.Errorf("planned ρ of a release with no field of public domain: want an error")
	}
}

// TestOnePerPerson: a DP release's source keeps one record of each
// subject, each of a subject's records about equally often, and every
// record without a subject.
func TestOnePerPerson(t *testing.T) {
	var rows []map[string]any
	var subjects []string
	for i := range 4 { // subject a has 4 records, b one, two have none
		rows = append(rows, map[string]any{"i": i})
		subjects = append(subjects, "a")
	}
	rows = append(rows, map[string]any{"i": 4}, map[string]any{"i": 5}, map[string]any{"i": 6})
	subjects = append(subjects, "b", "", "")
	draw := rand.New(rand.NewChaCha8([32]byte{3}))
	picked := map[int]int{}
	const runs = 4000
	for range runs {
		out := onePerPerson(rows, subjects, draw)
		if len(out) != 4 {
			t.Fatalf("kept %v, want one of a's, b's and the two without a subject", out)
		}
		a := 0
		for _, r := range out {
			if i := r["i"].(int); i < 4 {
				picked[i]++
				a++
			}
		}
		if a != 1 {
			t.Fatalf("kept %d of a's records, want 1", a)
		}
	}
	for i := range 4 {
		if p := picked[i]; p < runs/4-200 || p > runs/4+200 {
			t.Errorf("a's record %d kept %d times in %d, want about %d", i, p, runs, runs/4)
		}
	}
}
