package privacy

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

// seeded returns a deterministic source of random bytes, so that the
// statistical tests below always see the same draws.
func seeded(label string) *rand.ChaCha8 {
	var seed [32]byte
	copy(seed[:], "eduspace privacy test "+label)
	return rand.NewChaCha8(seed)
}

func rat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic("bad rational " + s)
	}
	return r
}

// pmf is an exact (to float64) probability mass function on the integers.
type pmf func(y int64) float64

// gaussianPMF returns the pmf of N_Z(0, σ²), normalised over |y| ≤ bound.
func gaussianPMF(sigma2 float64) (pmf, int64) {
	return normalised(func(y int64) float64 { return math.Exp(-float64(y*y) / (2 * sigma2)) },
		int64(40*math.Sqrt(sigma2))+40)
}

// laplacePMF returns the pmf of the discrete Laplace of scale b.
func laplacePMF(b float64) (pmf, int64) {
	return normalised(func(y int64) float64 { return math.Exp(-math.Abs(float64(y)) / b) },
		int64(60*b)+60)
}

func normalised(w func(int64) float64, bound int64) (pmf, int64) {
	z := 0.0
	for y := -bound; y <= bound; y++ {
		z += w(y)
	}
	return func(y int64) float64 { return w(y) / z }, bound
}

// moments returns mean, variance and fourth central moment of p.
func moments(p pmf, bound int64) (mean, variance, m4 float64) {
	for y := -bound; y <= bound; y++ {
		mean += float64(y) * p(y)
	}
	for y := -bound; y <= bound; y++ {
		d := float64(y) - mean
		variance += d * d * p(y)
		m4 += d * d * d * d * p(y)
	}
	return mean, variance, m4
}

// chiSquareCritical approximates the upper quantile of χ² with df degrees
// of freedom at normal quantile z (Wilson–Hilferty).
func chiSquareCritical(df int, z float64) float64 {
	k := float64(df)
	c := 1 - 2/(9*k) + z*math.Sqrt(2/(9*k))
	return k * c * c * c
}

// checkDistribution compares n draws against the exact pmf: mean, variance,
// the tail mass beyond tail, and a χ² test over the bins with an expected
// count of at least 20 (the rest merged into two tail bins). The bounds are
// five standard errors and a χ² p-value of 10⁻⁴; with the fixed seeds the
// test is deterministic.
func checkDistribution(t *testing.T, draws []int64, p pmf, bound int64, tail int64) {
	t.Helper()
	n := float64(len(draws))
	wantMean, wantVar, wantM4 := moments(p, bound)
	var sum, sumSq float64
	counts := map[int64]int{}
	beyond := 0
	for _, y := range draws {
		sum += float64(y)
		counts[y]++
		if y > tail || y < -tail {
			beyond++
		}
	}
	mean := sum / n
	for _, y := range draws {
		d := float64(y) - mean
		sumSq += d * d
	}
	variance := sumSq / (n - 1)
	if se := math.Sqrt(wantVar / n); math.Abs(mean-wantMean) > 5*se {
		t.Errorf("mean %.4f, want %.4f ± %.4f", mean, wantMean, 5*se)
	}
	if se := math.Sqrt((wantM4 - wantVar*wantVar) / n); math.Abs(variance-wantVar) > 5*se {
		t.Errorf("variance %.4f, want %.4f ± %.4f", variance, wantVar, 5*se)
	}
	pTail := 0.0
	for y := -bound; y <= bound; y++ {
		if y > tail || y < -tail {
			pTail += p(y)
		}
	}
	if se := math.Sqrt(pTail * (1 - pTail) / n); math.Abs(float64(beyond)/n-pTail) > 5*se+1/n {
		t.Errorf("mass beyond ±%d: %.5f, want %.5f ± %.5f", tail, float64(beyond)/n, pTail, 5*se)
	}
	// χ² over the central range where every bin expects ≥ 20 draws
	c := int64(0)
	for n*p(c+1) >= 20 {
		c++
	}
	chi, df := 0.0, 0
	bin := func(observed int, prob float64) {
		e := n * prob
		chi += (float64(observed) - e) * (float64(observed) - e) / e
		df++
	}
	lowObs, highObs, lowP := 0, 0, 0.0
	for y := -bound; y < -c; y++ {
		lowP += p(y)
	}
	for y, k := range counts {
		if y < -c {
			lowObs += k
		} else if y > c {
			highObs += k
		}
	}
	for y := -c; y <= c; y++ {
		bin(counts[y], p(y))
	}
	if lowP*n >= 5 {
		bin(lowObs, lowP)
		bin(highObs, lowP) // symmetric
	}
	df--
	if crit := chiSquareCritical(df, 3.719); chi > crit {
		t.Errorf("χ² = %.1f over %d degrees of freedom, above %.1f (p < 10⁻⁴)", chi, df, crit)
	}
	t.Logf("mean %.4f (want %.4f), variance %.4f (want %.4f), tail %.5f (want %.5f), χ² %.1f df %d",
		mean, wantMean, variance, wantVar, float64(beyond)/n, pTail, chi, df)
}

func TestDiscreteGaussianDistribution(t *testing.T) {
	n := 40000
	if testing.Short() {
		n = 10000
	}
	for _, sigma2 := range []string{"1/4", "3/2", "10", "1000/7"} {
		t.Run(sigma2, func(t *testing.T) {
			s := NewSampler(seeded("gaussian " + sigma2))
			v := rat(sigma2)
			draws := make([]int64, n)
			for i := range draws {
				y, err := s.DiscreteGaussian(v)
				if err != nil {
					t.Fatal(err)
				}
				draws[i] = y
			}
			f, _ := v.Float64()
			p, bound := gaussianPMF(f)
			checkDistribution(t, draws, p, bound, int64(math.Ceil(2*math.Sqrt(f))))
		})
	}
}

func TestDiscreteLaplaceDistribution(t *testing.T) {
	n := 40000
	if testing.Short() {
		n = 10000
	}
	for _, scale := range []string{"1", "5/2", "12"} {
		t.Run(scale, func(t *testing.T) {
			s := NewSampler(seeded("laplace " + scale))
			v := rat(scale)
			draws := make([]int64, n)
			for i := range draws {
				y, err := s.DiscreteLaplace(v)
				if err != nil {
					t.Fatal(err)
				}
				draws[i] = y
			}
			f, _ := v.Float64()
			p, bound := laplacePMF(f)
			checkDistribution(t, draws, p, bound, int64(math.Ceil(3*f)))
		})
	}
}

func TestBernoulliExp(t *testing.T) {
	const n = 40000
	for _, gamma := range []string{"0", "1/3", "1", "7/3", "9/2"} {
		s := NewSampler(seeded("bexp " + gamma))
		g := rat(gamma)
		hits := 0
		for range n {
			b, err := s.BernoulliExp(g)
			if err != nil {
				t.Fatal(err)
			}
			if b {
				hits++
			}
		}
		f, _ := g.Float64()
		want := math.Exp(-f)
		if se := math.Sqrt(want * (1 - want) / n); math.Abs(float64(hits)/n-want) > 5*se+1e-9 {
			t.Errorf("exp(−%s): frequency %.4f, want %.4f ± %.4f", gamma, float64(hits)/n, want, 5*se)
		}
	}
}

func TestBernoulli(t *testing.T) {
	const n = 40000
	for _, p := range []string{"0", "1", "1/2", "1/3", "123456789012345678901/1000000000000000000000000"} {
		s := NewSampler(seeded("bern " + p))
		pr := rat(p)
		hits := 0
		for range n {
			b, err := s.Bernoulli(pr)
			if err != nil {
				t.Fatal(err)
			}
			if b {
				hits++
			}
		}
		f, _ := pr.Float64()
		if se := math.Sqrt(f * (1 - f) / n); math.Abs(float64(hits)/n-f) > 5*se+1e-9 {
			t.Errorf("p = %s: frequency %.5f, want %.5f ± %.5f", p, float64(hits)/n, f, 5*se)
		}
	}
}

func TestSamplerDeterministic(t *testing.T) {
	draw := func() []int64 {
		s := NewSampler(seeded("determinism"))
		out, err := NoiseShare(s, rat("5/2"), 100)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := draw(), draw()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same seed, different draws:\n%v\n%v", a, b)
	}
}

type failingReader struct{ after int }

var errRead = errors.New("entropy source gone")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errRead
	}
	n := min(len(p), f.after)
	for i := range p[:n] {
		p[i] = byte(i * 37)
	}
	f.after -= n
	return n, nil
}

func TestSamplerReadErrorSticks(t *testing.T) {
	s := NewSampler(&failingReader{after: 0})
	if _, err := s.DiscreteGaussian(rat("10")); !errors.Is(err, errRead) {
		t.Fatalf("DiscreteGaussian with a failing reader: err = %v, want %v", err, errRead)
	}
	if _, err := s.DiscreteLaplace(rat("1")); !errors.Is(err, errRead) {
		t.Fatalf("second draw: err = %v, want %v", err, errRead)
	}
	if _, err := NoiseShare(NewSampler(&failingReader{after: 600}), rat("10"), 1000); !errors.Is(err, errRead) {
		t.Fatalf("NoiseShare with a reader failing midway: err = %v, want %v", err, errRead)
	}
}

func TestSamplerRejectsParameters(t *testing.T) {
	s := NewSampler(seeded("params"))
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"gaussian σ²=0", func() error { _, err := s.DiscreteGaussian(rat("0")); return err }},
		{"gaussian σ²<0", func() error { _, err := s.DiscreteGaussian(rat("-1")); return err }},
		{"laplace scale 0", func() error { _, err := s.DiscreteLaplace(rat("0")); return err }},
		{"bernoulli p>1", func() error { _, err := s.Bernoulli(rat("3/2")); return err }},
		{"bernoulli p<0", func() error { _, err := s.Bernoulli(rat("-1/2")); return err }},
		{"bernoulli exp γ<0", func() error { _, err := s.BernoulliExp(rat("-1")); return err }},
	} {
		if err := tc.call(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func BenchmarkDiscreteGaussian(b *testing.B) {
	for _, sigma2 := range []string{"5/2", "10", "1000"} {
		b.Run("sigma2="+sigma2, func(b *testing.B) {
			s := NewSampler(seeded("bench"))
			v := rat(sigma2)
			for b.Loop() {
				if _, err := s.DiscreteGaussian(v); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "draws/s")
		})
	}
}

func BenchmarkNoiseShare(b *testing.B) {
	for _, cells := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("cells=%d", cells), func(b *testing.B) {
			s := NewSampler(seeded("bench"))
			v := rat("5/2")
			for b.Loop() {
				if _, err := NoiseShare(s, v, cells); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/share")
		})
	}
}
