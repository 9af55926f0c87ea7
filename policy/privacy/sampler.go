package privacy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"
)

// Sampler draws exact samples of the Bernoulli, discrete Laplace and discrete
// Gaussian distributions following Canonne, Kamath and Steinke, "The Discrete
// Gaussian for Differential Privacy" (NeurIPS 2020), Algorithms 1–3. Every
// parameter is a rational number and every step is integer arithmetic, so
// the output distribution is exactly the one named, given uniform random
// bytes.
//
// A Sampler buffers its reader and is not safe for concurrent use. The first
// read error sticks: every later draw returns it.
type Sampler struct {
	r   *bufio.Reader
	err error
	b   [8]byte
	u   big.Int // scratch for bernoulli
}

// NewSampler returns a sampler reading uniform random bytes from r; pass
// crypto/rand.Reader in production and a seeded generator in tests.
func NewSampler(r io.Reader) *Sampler {
	return &Sampler{r: bufio.NewReaderSize(r, 512)}
}

// uniform64 returns a uniform integer in [0, n), n ≥ 1, by rejection.
func (s *Sampler) uniform64(n uint64) uint64 {
	if n <= 1 || s.err != nil {
		return 0
	}
	mask := uint64(1)<<bits.Len64(n-1) - 1 // all ones when n−1 needs 64 bits
	for {
		if _, err := io.ReadFull(s.r, s.b[:]); err != nil {
			s.err = fmt.Errorf("read randomness: %w", err)
			return 0
		}
		if v := binary.LittleEndian.Uint64(s.b[:]) & mask; v < n {
			return v
		}
	}
}

// uniformBig sets z to a uniform integer in [0, n), n ≥ 1, by rejection.
func (s *Sampler) uniformBig(z, n *big.Int) *big.Int {
	if n.IsUint64() {
		return z.SetUint64(s.uniform64(n.Uint64()))
	}
	nb := n.BitLen()
	buf := make([]byte, (nb+7)/8)
	top := byte(1)<<(uint(nb-1)%8+1) - 1
	for s.err == nil {
		if _, err := io.ReadFull(s.r, buf); err != nil {
			s.err = fmt.Errorf("read randomness: %w", err)
			break
		}
		buf[0] &= top
		if z.SetBytes(buf).Cmp(n) < 0 {
			return z
		}
	}
	return z.SetUint64(0)
}

// bernoulli returns true with probability num/den, 0 ≤ num ≤ den, den ≥ 1.
func (s *Sampler) bernoulli(num, den *big.Int) bool {
	return s.uniformBig(&s.u, den).Cmp(num) < 0
}

// Bernoulli returns true with probability p, which must be in [0, 1].
func (s *Sampler) Bernoulli(p *big.Rat) (bool, error) {
	if p.Sign() < 0 || p.Cmp(big.NewRat(1, 1)) > 0 {
		return false, fmt.Errorf("bernoulli: p = %s outside [0, 1]", p.RatString())
	}
	b := s.bernoulli(p.Num(), p.Denom())
	return b, s.err
}

// bernoulliExpFrac returns true with probability exp(−num/den) for
// 0 ≤ num/den ≤ 1 (CKS Algorithm 1, first part): draw A_k ~ Bernoulli(γ/k)
// for k = 1, 2, … until one is 0; the answer is whether that k is odd.
func (s *Sampler) bernoulliExpFrac(num, den *big.Int) bool {
	var kden big.Int
	for k := int64(1); s.err == nil; k++ {
		kden.Mul(den, big.NewInt(k))
		if !s.bernoulli(num, &kden) {
			return k%2 == 1
		}
	}
	return false
}

// bernoulliExp returns true with probability exp(−num/den), num/den ≥ 0
// (CKS Algorithm 1): ⌊γ⌋ draws of Bernoulli(exp(−1)) and one of
// Bernoulli(exp(−(γ − ⌊γ⌋))), all of which must be true.
func (s *Sampler) bernoulliExp(num, den *big.Int) bool {
	var q, r big.Int
	q.QuoRem(num, den, &r)
	one := big.NewInt(1)
	for i := new(big.Int); i.Cmp(&q) < 0; i.Add(i, one) {
		if !s.bernoulliExpFrac(one, one) {
			return false
		}
	}
	return s.bernoulliExpFrac(&r, den)
}

// BernoulliExp returns true with probability exp(−γ), γ ≥ 0.
func (s *Sampler) BernoulliExp(gamma *big.Rat) (bool, error) {
	if gamma.Sign() < 0 {
		return false, fmt.Errorf("bernoulli exp: γ = %s is negative", gamma.RatString())
	}
	b := s.bernoulliExp(gamma.Num(), gamma.Denom())
	return b, s.err
}

// geometricExp1 returns V ≥ 0 with P[V = v] = (1 − 1/e)·e^(−v): the number
// of Bernoulli(exp(−1)) successes before the first failure.
func (s *Sampler) geometricExp1() int64 {
	one := big.NewInt(1)
	var v int64
	for s.err == nil && s.bernoulliExpFrac(one, one) {
		v++
	}
	return v
}

// discreteLaplace draws Y with P[Y = y] ∝ exp(−|y|·den/num), that is the
// discrete Laplace distribution of scale num/den (CKS Algorithm 2 with
// t = num, s = den).
func (s *Sampler) discreteLaplace(t, sc *big.Int) *big.Int {
	var u, x big.Int
	y := new(big.Int)
	for s.err == nil {
		s.uniformBig(&u, t)
		if !s.bernoulliExp(&u, t) {
			continue
		}
		v := s.geometricExp1()
		x.Mul(t, big.NewInt(v))
		x.Add(&x, &u)
		y.Quo(&x, sc) // ⌊X/s⌋, X ≥ 0
		neg := s.uniform64(2) == 1
		if neg && y.Sign() == 0 {
			continue
		}
		if neg {
			y.Neg(y)
		}
		return y
	}
	return y.SetInt64(0)
}

// DiscreteLaplace returns a draw of the discrete Laplace distribution of
// the given scale b > 0: P[Y = y] = (e^(1/b) − 1)/(e^(1/b) + 1)·e^(−|y|/b)
// for every integer y.
func (s *Sampler) DiscreteLaplace(scale *big.Rat) (int64, error) {
	if scale.Sign() <= 0 {
		return 0, fmt.Errorf("discrete laplace: scale %s is not positive", scale.RatString())
	}
	y := s.discreteLaplace(scale.Num(), scale.Denom())
	if s.err != nil {
		return 0, s.err
	}
	if !y.IsInt64() {
		return 0, errors.New("discrete laplace: draw outside int64")
	}
	return y.Int64(), nil
}

// DiscreteGaussian returns a draw of N_Z(0, σ²), the discrete Gaussian with
// parameter sigma2 = σ² > 0: P[Y = y] ∝ exp(−y²/(2σ²)) for every integer y
// (CKS Algorithm 3). Its variance is slightly below σ² (at most σ², and
// within 10⁻⁸ of it once σ ≥ 1).
func (s *Sampler) DiscreteGaussian(sigma2 *big.Rat) (int64, error) {
	if sigma2.Sign() <= 0 {
		return 0, fmt.Errorf("discrete gaussian: σ² = %s is not positive", sigma2.RatString())
	}
	p, q := sigma2.Num(), sigma2.Denom() // σ² = p/q
	// t = ⌊σ⌋ + 1, and ⌊σ⌋ = ⌊√⌊σ²⌋⌋.
	t := new(big.Int).Quo(p, q)
	t.Sqrt(t)
	t.Add(t, big.NewInt(1))
	one := big.NewInt(1)
	// Accept Y ~ Lap_Z(t) with probability exp(−(|Y| − σ²/t)²/(2σ²)):
	// γ = (|Y|·q·t − p)² / (2·p·q·t²).
	den := new(big.Int).Mul(p, q)
	den.Mul(den, t)
	den.Mul(den, t)
	den.Lsh(den, 1)
	qt := new(big.Int).Mul(q, t)
	var num big.Int
	for s.err == nil {
		y := s.discreteLaplace(t, one)
		num.Abs(y)
		num.Mul(&num, qt)
		num.Sub(&num, p)
		num.Mul(&num, &num)
		if s.bernoulliExp(&num, den) {
			if !y.IsInt64() {
				return 0, errors.New("discrete gaussian: draw outside int64")
			}
			return y.Int64(), s.err
		}
	}
	return 0, s.err
}
