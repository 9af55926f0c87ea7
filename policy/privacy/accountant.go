package privacy

import (
	"errors"
	"fmt"
	"math"
	"math/big"
)

// Accounting is in zero-concentrated differential privacy (zCDP, Bun and
// Steinke 2016): a mechanism is ρ-zCDP when the Rényi divergence of order α
// between its outputs on neighbouring inputs is at most ρ·α for every α > 1.
// ρ adds up under composition, which is all the [Ledger] does. The figures
// computed here use float64; each is rounded up by a relative 10⁻¹², far
// more than the rounding error of the few operations involved, so a
// computed ρ or ε is never below the true bound.

// roundUp returns x increased by a relative 10⁻¹².
func roundUp(x float64) float64 { return x + math.Abs(x)*1e-12 }

// Sensitivity is how much one unit of privacy (PRIVACY.md §4.1) can change a
// whole table: L1 is the largest sum over cells of |change|, L2 the largest
// Euclidean norm of the change. A count table in which each unit adds 1 to
// exactly one cell has L1 = L2 = 1.
type Sensitivity struct {
	L1, L2 float64
}

func (s Sensitivity) validate() error {
	if !(s.L1 > 0) || !(s.L2 > 0) || math.IsInf(s.L1, 0) || math.IsInf(s.L2, 0) || s.L2 > s.L1 {
		return fmt.Errorf("sensitivity L1 = %v, L2 = %v: want 0 < L2 ≤ L1 < ∞", s.L1, s.L2)
	}
	return nil
}

// GaussianRho returns the ρ of adding N_Z(0, σ²) to each cell of a table of
// L2 sensitivity l2: ρ = l2²/(2σ²) (CKS 2020, Theorem 4; exactly as for the
// continuous Gaussian).
func GaussianRho(sigma2 *big.Rat, l2 float64) (float64, error) {
	if sigma2 == nil || sigma2.Sign() <= 0 || !(l2 > 0) || math.IsInf(l2, 0) {
		return 0, errors.New("gaussian rho: want σ² > 0 and 0 < l2 < ∞")
	}
	v := ratFloorFloat(sigma2)
	return roundUp(l2 * l2 / (2 * v)), nil
}

// ratFloorFloat returns a float64 no larger than r > 0.
func ratFloorFloat(r *big.Rat) float64 {
	f, exact := r.Float64()
	if !exact {
		f = math.Nextafter(f, 0)
	}
	return f
}

// DistributedRho returns the ρ of a release to which k independent shares of
// N_Z(0, σᵢ²) noise were added in each of cells cells, σᵢ² = shareVariance
// ≥ 1/4. It is the bound of Kairouz, Liu and Steinke, "The Distributed
// Discrete Gaussian Mechanism for Federated Learning with Secure
// Aggregation" (ICML 2021), Proposition 14 in its pure-zCDP form:
//
//	ρ = ½·(Δ₂/(√k·σᵢ) + τ·√d),   τ = 10·Σ_{j=1}^{k−1} exp(−2π²σᵢ²·j/(j+1))
//
// with d = cells. For k = 1 it is exactly [GaussianRho]. τ measures how far
// a sum of discrete Gaussians is from a discrete Gaussian; it is below
// 10·(k−1)·exp(−π²σᵢ²), about 2.7·10⁻⁸·(k−1) at σᵢ² = 2 and 1.9·10⁻¹⁰·(k−1)
// at σᵢ² = 5/2, so that with σᵢ² ≥ 2 ρ is the continuous figure
// Δ₂²/(2kσᵢ²) to within a relative 10⁻⁴ even for 10⁴ cells.
func DistributedRho(shareVariance *big.Rat, k, cells int, sens Sensitivity) (float64, error) {
	if shareVariance == nil || shareVariance.Cmp(big.NewRat(1, 4)) < 0 {
		return 0, errors.New("distributed rho: share variance must be at least 1/4")
	}
	if k < 1 || cells < 1 || cells > MaxCells {
		return 0, fmt.Errorf("distributed rho: %d shares and %d cells, want ≥ 1 of each and ≤ %d cells", k, cells, MaxCells)
	}
	if err := sens.validate(); err != nil {
		return 0, fmt.Errorf("distributed rho: %w", err)
	}
	v := ratFloorFloat(shareVariance)
	return roundUp(rhoKLS(v, k, cells, sens.L2)), nil
}

func rhoKLS(v float64, k, cells int, l2 float64) float64 {
	tau := 0.0
	for j := 1; j < k; j++ {
		tau += math.Exp(-2 * math.Pi * math.Pi * v * float64(j) / float64(j+1))
	}
	tau *= 10
	s := l2/math.Sqrt(float64(k)*v) + tau*math.Sqrt(float64(cells))
	return s * s / 2
}

// WorstRho returns the largest [DistributedRho] for any number of noise
// shares from minShares to maxShares: the ρ a node must debit before a round
// whose release will carry at least minShares and at most maxShares shares.
func WorstRho(shareVariance *big.Rat, minShares, maxShares, cells int, sens Sensitivity) (float64, error) {
	if minShares < 1 || maxShares < minShares {
		return 0, fmt.Errorf("worst rho: shares in [%d, %d]", minShares, maxShares)
	}
	worst := 0.0
	for k := minShares; k <= maxShares; k++ {
		r, err := DistributedRho(shareVariance, k, cells, sens)
		if err != nil {
			return 0, err
		}
		worst = max(worst, r)
	}
	return worst, nil
}

// PlanShareVariance returns the smallest share variance σᵢ² (a multiple of
// 1/1000, raised by steps of 0.1 %) at which a release carrying between
// minShares and maxShares noise shares is targetRho-zCDP, and that release's
// [WorstRho]. The continuous starting point is σᵢ² = Δ₂²/(2·ρ·minShares).
func PlanShareVariance(targetRho float64, minShares, maxShares, cells int, sens Sensitivity) (*big.Rat, float64, error) {
	if !(targetRho > 0) || math.IsInf(targetRho, 0) {
		return nil, 0, fmt.Errorf("plan share variance: target ρ = %v, want > 0", targetRho)
	}
	if err := sens.validate(); err != nil {
		return nil, 0, fmt.Errorf("plan share variance: %w", err)
	}
	if minShares < 1 {
		return nil, 0, fmt.Errorf("plan share variance: %d minimum shares", minShares)
	}
	start := max(sens.L2*sens.L2/(2*targetRho*float64(minShares)), 0.25)
	if start > 1e15 {
		return nil, 0, fmt.Errorf("plan share variance: target ρ = %v needs σᵢ² > 10¹⁵", targetRho)
	}
	v := big.NewRat(int64(math.Ceil(start*1000)), 1000)
	step := big.NewRat(1001, 1000)
	for range 10000 {
		r, err := WorstRho(v, minShares, maxShares, cells, sens)
		if err != nil {
			return nil, 0, fmt.Errorf("plan share variance: %w", err)
		}
		if r <= targetRho {
			return v, r, nil
		}
		v.Mul(v, step)
		// keep the denominator at 1000: round the numerator up
		num := new(big.Int).Mul(v.Num(), big.NewInt(1000))
		num.Add(num, new(big.Int).Sub(v.Denom(), big.NewInt(1)))
		num.Quo(num, v.Denom())
		v.SetFrac(num, big.NewInt(1000))
	}
	return nil, 0, fmt.Errorf("plan share variance: no σᵢ² reaches ρ = %v", targetRho)
}

// EpsilonBunSteinke returns ε = ρ + 2·√(ρ·ln(1/δ)), the classic conversion of
// ρ-zCDP to (ε, δ)-DP (Bun and Steinke 2016, Proposition 1.3). It is looser
// than [Epsilon] and is given for comparison with published figures.
func EpsilonBunSteinke(rho, delta float64) (float64, error) {
	if err := checkRhoDelta(rho, delta); err != nil {
		return 0, err
	}
	return roundUp(rho + 2*math.Sqrt(rho*math.Log(1/delta))), nil
}

func checkRhoDelta(rho, delta float64) error {
	if !(rho >= 0) || math.IsInf(rho, 0) {
		return fmt.Errorf("ρ = %v, want finite and ≥ 0", rho)
	}
	if !(delta > 0 && delta < 1) {
		return fmt.Errorf("δ = %v, want in (0, 1)", delta)
	}
	return nil
}

// Delta returns the δ at which a ρ-zCDP mechanism is (ε, δ)-DP, by the
// conversion of Canonne, Kamath and Steinke 2020 (Corollary 13):
//
//	δ = inf_{α>1} exp((α−1)(αρ−ε)) / α · (1 − 1/α)^(α−1)
//
// minimised numerically over α, capped at 1.
func Delta(rho, eps float64) float64 {
	if rho <= 0 {
		return 0
	}
	logDelta := func(a float64) float64 {
		return (a-1)*(a*rho-eps) - math.Log(a) + (a-1)*math.Log1p(-1/a)
	}
	// coarse log-spaced scan of α in (1, 10⁸], then golden-section search
	// around the best point (the function is unimodal in α)
	bestA, best := 0.0, math.Inf(1)
	const steps = 400
	for i := 0; i <= steps; i++ {
		a := 1 + math.Pow(10, -6+14*float64(i)/steps)
		if f := logDelta(a); f < best {
			bestA, best = a, f
		}
	}
	lo, hi := 1+(bestA-1)*math.Pow(10, -14.0/steps), 1+(bestA-1)*math.Pow(10, 14.0/steps)
	const g = 0.6180339887498949
	x1, x2 := hi-g*(hi-lo), lo+g*(hi-lo)
	f1, f2 := logDelta(x1), logDelta(x2)
	for range 200 {
		if f1 < f2 {
			hi, x2, f2 = x2, x1, f1
			x1 = hi - g*(hi-lo)
			f1 = logDelta(x1)
		} else {
			lo, x1, f1 = x1, x2, f2
			x2 = lo + g*(hi-lo)
			f2 = logDelta(x2)
		}
	}
	best = min(best, f1, f2)
	return min(1, roundUp(math.Exp(best)))
}

// Epsilon returns the smallest ε (to a relative 10⁻⁹, rounded up) at which a
// ρ-zCDP mechanism is (ε, δ)-DP by [Delta]'s conversion. It is never above
// [EpsilonBunSteinke].
func Epsilon(rho, delta float64) (float64, error) {
	if err := checkRhoDelta(rho, delta); err != nil {
		return 0, err
	}
	if rho == 0 {
		return 0, nil
	}
	hi := rho + 2*math.Sqrt(rho*math.Log(1/delta))
	for Delta(rho, hi) > delta {
		hi *= 2
	}
	lo := 0.0
	for hi-lo > 1e-9*hi {
		mid := (lo + hi) / 2
		if Delta(rho, mid) <= delta {
			hi = mid
		} else {
			lo = mid
		}
	}
	return roundUp(hi), nil
}
