package privacy

import (
	"errors"
	"fmt"
	"math/big"
)

// MaxCells bounds the cells of one release, so that a noise share or a
// suppression pass stays in memory a node can spare.
const MaxCells = 1 << 24

// ShareVariance returns σ²/m, the parameter of the discrete Gaussian each
// node adds when the release must carry noise of parameter σ² even if only m
// of the nodes' shares end up in it (PRIVACY.md §4). The division is exact.
func ShareVariance(sigma2 *big.Rat, m int) (*big.Rat, error) {
	if sigma2 == nil || sigma2.Sign() <= 0 {
		return nil, errors.New("share variance: σ² must be positive")
	}
	if m < 1 {
		return nil, fmt.Errorf("share variance: %d contributors, want ≥ 1", m)
	}
	return new(big.Rat).Quo(sigma2, new(big.Rat).SetInt64(int64(m))), nil
}

// NoiseShare returns cells independent draws of N_Z(0, shareVariance): the
// node's share of the distributed noise, to be added cell by cell to its
// local table before masking. shareVariance must be at least 1/4 for the
// accounting of [DistributedRho] to apply.
func NoiseShare(s *Sampler, shareVariance *big.Rat, cells int) ([]int64, error) {
	if shareVariance == nil || shareVariance.Cmp(big.NewRat(1, 4)) < 0 {
		return nil, errors.New("noise share: share variance must be at least 1/4")
	}
	if cells < 0 || cells > MaxCells {
		return nil, fmt.Errorf("noise share: %d cells outside [0, %d]", cells, MaxCells)
	}
	out := make([]int64, cells)
	for i := range out {
		v, err := s.DiscreteGaussian(shareVariance)
		if err != nil {
			return nil, fmt.Errorf("noise share: %w", err)
		}
		out[i] = v
	}
	return out, nil
}

// AddNoise adds noise to table cell by cell and reports an error, leaving
// table unchanged, if the lengths differ or a sum leaves int64.
func AddNoise(table, noise []int64) error {
	if len(table) != len(noise) {
		return fmt.Errorf("add noise: %d cells, %d noise values", len(table), len(noise))
	}
	for i := range table {
		if s := table[i] + noise[i]; (s > table[i]) != (noise[i] > 0) {
			return fmt.Errorf("add noise: cell %d overflows", i)
		}
	}
	for i := range table {
		table[i] += noise[i]
	}
	return nil
}

// Cell is one released cell: its noisy value, or nothing when suppressed.
type Cell struct {
	Value      int64 `json:"value"`
	Suppressed bool  `json:"suppressed,omitempty"` // the noisy count was under k; Value is 0
}

// Suppress releases the cells of a noisy count table whose value is at
// least k and suppresses the others, returning the cells and how many were
// suppressed. It looks only at noisy values, so it is post-processing and
// costs no privacy budget; k ≤ 0 suppresses nothing.
func Suppress(noisy []int64, k int64) (cells []Cell, suppressed int) {
	return SuppressBy(noisy, noisy, k)
}

// SuppressBy releases values[i] only where the noisy count counts[i] of the
// same cell is at least k: a bounded-sum measure is suppressed by the noisy
// count released with it (which has its own cost in the ledger). It panics
// if the lengths differ.
func SuppressBy(values, counts []int64, k int64) (cells []Cell, suppressed int) {
	if len(values) != len(counts) {
		panic("privacy: SuppressBy with values and counts of different lengths")
	}
	cells = make([]Cell, len(values))
	for i, v := range values {
		if counts[i] < k {
			cells[i] = Cell{Suppressed: true}
			suppressed++
			continue
		}
		cells[i] = Cell{Value: v}
	}
	return cells, suppressed
}
