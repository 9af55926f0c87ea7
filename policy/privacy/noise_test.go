package privacy

import (
	"math"
	"math/big"
	"testing"
)

func TestShareVariance(t *testing.T) {
	v, err := ShareVariance(big.NewRat(20, 1), 8)
	if err != nil {
		t.Fatal(err)
	}
	if v.Cmp(big.NewRat(5, 2)) != 0 {
		t.Errorf("ShareVariance(20, 8) = %s, want 5/2", v.RatString())
	}
	if _, err := ShareVariance(big.NewRat(20, 1), 0); err == nil {
		t.Error("0 contributors accepted")
	}
}

// TestDistributedNoiseSum: the sum of n shares of N_Z(σ²/n) has variance σ²
// (each share's variance is within 10⁻⁸ of its parameter once σᵢ ≥ 1).
func TestDistributedNoiseSum(t *testing.T) {
	const n, cells = 10, 20000
	v, _ := ShareVariance(big.NewRat(25, 1), n)
	s := NewSampler(seeded("sum"))
	sum := make([]int64, cells)
	for range n {
		share, err := NoiseShare(s, v, cells)
		if err != nil {
			t.Fatal(err)
		}
		if err := AddNoise(sum, share); err != nil {
			t.Fatal(err)
		}
	}
	var m, m2 float64
	for _, x := range sum {
		m += float64(x)
	}
	m /= cells
	for _, x := range sum {
		m2 += (float64(x) - m) * (float64(x) - m)
	}
	m2 /= cells - 1
	// Var of the sample variance of a near-Gaussian: 2σ⁴/cells
	if se := math.Sqrt(2 * 25 * 25 / float64(cells)); math.Abs(m2-25) > 5*se || math.Abs(m) > 5*math.Sqrt(25.0/cells) {
		t.Errorf("sum of %d shares: mean %.3f, variance %.3f; want 0 and 25", n, m, m2)
	}
}

func TestNoiseShareRejects(t *testing.T) {
	s := NewSampler(seeded("x"))
	if _, err := NoiseShare(s, big.NewRat(1, 5), 10); err == nil {
		t.Error("share variance 1/5 accepted")
	}
	if _, err := NoiseShare(s, big.NewRat(1, 1), MaxCells+1); err == nil {
		t.Error("too many cells accepted")
	}
}

func TestAddNoiseOverflow(t *testing.T) {
	table := []int64{1, math.MaxInt64}
	if err := AddNoise(table, []int64{5, 1}); err == nil {
		t.Fatal("overflow accepted")
	}
	if table[0] != 1 {
		t.Error("table changed by a refused AddNoise")
	}
	table = []int64{1, math.MinInt64}
	if err := AddNoise(table, []int64{-2, -1}); err == nil {
		t.Fatal("negative overflow accepted")
	}
	if err := AddNoise([]int64{1}, []int64{1, 2}); err == nil {
		t.Fatal("length mismatch accepted")
	}
}

func TestSuppress(t *testing.T) {
	cells, n := Suppress([]int64{12, 4, -3, 5, 0, 100}, 5)
	want := []Cell{{Value: 12}, {Suppressed: true}, {Suppressed: true}, {Value: 5}, {Suppressed: true}, {Value: 100}}
	if n != 3 {
		t.Errorf("suppressed %d, want 3", n)
	}
	for i := range want {
		if cells[i] != want[i] {
			t.Errorf("cell %d = %+v, want %+v", i, cells[i], want[i])
		}
	}
	cells, n = SuppressBy([]int64{1000, 2000}, []int64{4, 9}, 5)
	if n != 1 || !cells[0].Suppressed || cells[1].Value != 2000 {
		t.Errorf("SuppressBy = %+v, %d", cells, n)
	}
}
