package privacy

import (
	"math"
	"math/big"
	"testing"
)

// The ε values below were computed independently with mpmath at 30 digits:
// "cks" by minimising the same Corollary 13 expression, "gauss" as the
// exact (ε, δ) curve of the continuous Gaussian mechanism with the same ρ
// (Balle and Wang 2018), which no valid zCDP conversion can beat.
var conversionVectors = []struct {
	rho, delta     float64
	cks, gauss, bs float64
}{
	{0.01, 1e-5, 0.545725548274, 0.496975363915, 0.688614042},
	{0.05, 1e-6, 1.47159475053, 1.36757147508, 1.712258136},
	{0.5, 1e-6, 5.22153444453, 4.88655411746, 5.756521770},
	{0.5, 1e-5, 4.728386985, 0, 5.298525912},
	{1, 1e-9, 9.52146367179, 9.09255836858, 10.104562776},
}

func TestEpsilonVectors(t *testing.T) {
	for _, v := range conversionVectors {
		got, err := Epsilon(v.rho, v.delta)
		if err != nil {
			t.Fatal(err)
		}
		if got < v.cks*(1-1e-9) || got > v.cks*(1+1e-8) {
			t.Errorf("Epsilon(%v, %v) = %.10f, want %.10f (rounded up)", v.rho, v.delta, got, v.cks)
		}
		if got < v.gauss {
			t.Errorf("Epsilon(%v, %v) = %.6f beats the exact Gaussian %.6f: impossible", v.rho, v.delta, got, v.gauss)
		}
		bs, err := EpsilonBunSteinke(v.rho, v.delta)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(bs-v.bs) > 1e-8 {
			t.Errorf("EpsilonBunSteinke(%v, %v) = %.9f, want %.9f", v.rho, v.delta, bs, v.bs)
		}
		if got > bs {
			t.Errorf("Epsilon(%v, %v) = %.6f is looser than Bun–Steinke %.6f", v.rho, v.delta, got, bs)
		}
		if d := Delta(v.rho, got); d > v.delta {
			t.Errorf("Delta(%v, Epsilon) = %g > δ = %g", v.rho, d, v.delta)
		}
	}
}

func TestEpsilonRejects(t *testing.T) {
	for _, tc := range []struct{ rho, delta float64 }{
		{-1, 1e-6}, {math.NaN(), 1e-6}, {math.Inf(1), 1e-6}, {1, 0}, {1, 1}, {1, math.NaN()},
	} {
		if _, err := Epsilon(tc.rho, tc.delta); err == nil {
			t.Errorf("Epsilon(%v, %v): no error", tc.rho, tc.delta)
		}
	}
	if e, err := Epsilon(0, 1e-6); err != nil || e != 0 {
		t.Errorf("Epsilon(0, 1e-6) = %v, %v; want 0", e, err)
	}
}

func TestGaussianRho(t *testing.T) {
	got, err := GaussianRho(big.NewRat(10, 1), 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.05; got < want || got > want*(1+1e-11) {
		t.Errorf("GaussianRho(10, 1) = %v, want %v", got, want)
	}
}

func TestDistributedRho(t *testing.T) {
	unit := Sensitivity{L1: 1, L2: 1}
	// one share is exactly the single discrete Gaussian
	one, _ := DistributedRho(big.NewRat(10, 1), 1, 10000, unit)
	single, _ := GaussianRho(big.NewRat(10, 1), 1)
	if one != single {
		t.Errorf("one share: ρ = %v, want GaussianRho %v", one, single)
	}
	for _, tc := range []struct {
		v          *big.Rat
		k, cells   int
		want, tol  float64 // want ± relative tol
		comparison string
	}{
		// τ negligible: the continuous figure Δ²/(2kσᵢ²)
		{big.NewRat(5, 2), 10, 10000, 1.0 / 50, 1e-6, "σᵢ²=5/2, k=10"},
		{big.NewRat(2, 1), 20, 10000, 1.0 / 80, 1e-4, "σᵢ²=2, k=20"},
		// τ not negligible at σᵢ² = 1 with 10,000 cells: ρ is larger
		{big.NewRat(1, 1), 20, 10000, 0.0386594608, 1e-6, "σᵢ²=1, k=20"},
	} {
		got, err := DistributedRho(tc.v, tc.k, tc.cells, unit)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-tc.want) > tc.tol*tc.want || got < tc.want*(1-1e-12) {
			t.Errorf("%s: ρ = %.10f, want %.10f", tc.comparison, got, tc.want)
		}
	}
	if _, err := DistributedRho(big.NewRat(1, 5), 10, 10, unit); err == nil {
		t.Error("σᵢ² = 1/5 < 1/4 accepted")
	}
	if _, err := DistributedRho(big.NewRat(2, 1), 10, 10, Sensitivity{L1: 1, L2: 2}); err == nil {
		t.Error("L2 > L1 accepted")
	}
}

func TestPlanShareVariance(t *testing.T) {
	unit := Sensitivity{L1: 1, L2: 1}
	for _, tc := range []struct {
		rho               float64
		minK, maxK, cells int
	}{
		{0.05, 9, 10, 10000},
		{0.05, 17, 20, 10000},
		{0.5, 17, 20, 1000},
		{0.01, 1, 1, 10},
	} {
		v, r, err := PlanShareVariance(tc.rho, tc.minK, tc.maxK, tc.cells, unit)
		if err != nil {
			t.Fatal(err)
		}
		if r > tc.rho {
			t.Errorf("plan for ρ = %v gave worst ρ = %v", tc.rho, r)
		}
		w, _ := WorstRho(v, tc.minK, tc.maxK, tc.cells, unit)
		if w != r {
			t.Errorf("plan reports ρ = %v, WorstRho says %v", r, w)
		}
		// the continuous figure is a lower bound on the share variance
		f, _ := v.Float64()
		if lower := 1 / (2 * tc.rho * float64(tc.minK)); f < lower*(1-1e-9) {
			t.Errorf("plan for ρ = %v: σᵢ² = %v below %v", tc.rho, f, lower)
		}
		t.Logf("ρ %v, shares %d..%d, %d cells: σᵢ² = %s, ρ = %.6f", tc.rho, tc.minK, tc.maxK, tc.cells, v.RatString(), r)
	}
}
