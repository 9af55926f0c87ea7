package release

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// publicDomains are the values a field may take in a synthetic release,
// fixed before the data is read, for fields whose kind does not fix them
// (an enum's values and a date's years do): the domain of a
// differentially private histogram must not depend on the data, or the
// cells that exist would tell who is in it.
var publicDomains = map[string][]string{
	"gender": {"男", "女"},
}

// dpYears is the public range of years a date field's synthetic values
// are drawn from: 1950 to the year of the release.
const dpFirstYear = 1950

// domainOf is the public domain of field spec in a synthetic release at
// now, or nil when the field has none (it is left out of the release).
func domainOf(spec schema.FieldSpec, now time.Time) []string {
	if d, ok := publicDomains[spec.Name]; ok {
		return d
	}
	switch spec.Kind {
	case schema.KindEnum:
		return spec.Values
	case schema.KindBool, schema.KindFlag:
		return []string{"true", "false"}
	case schema.KindDate:
		var ys []string
		for y := dpFirstYear; y <= now.Year(); y++ {
			ys = append(ys, strconv.Itoa(y))
		}
		return ys
	}
	return nil
}

// DP is the differential-privacy statement of a synthetic release.
type DP struct {
	// Epsilon and Delta: the release is (ε, δ)-differentially private
	// with respect to adding or removing one record of its source, which
	// holds one record per person (onePerPerson): one person.
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
	// Rho is its zero-concentrated DP parameter, from which ε is derived
	// (privacy.Epsilon, CKS 2020 Corollary 13).
	Rho float64 `json:"rho"`
	// Sigma2 is the discrete Gaussian's parameter σ² added to each count.
	Sigma2 string `json:"sigma2"`
	// Marginals are the fields whose one-way marginal was noised; the
	// synthetic rows draw each independently from its noised marginal.
	Marginals []string `json:"marginals"`
	// Dropped are fields of the source with no public domain: not in the
	// synthetic rows.
	Dropped []string `json:"dropped,omitempty"`
	// NoisyTotal is the noised count of source records, the number of
	// synthetic rows.
	NoisyTotal int64 `json:"noisy_total"`
}

// rhoFor is the largest ρ (to a relative 10⁻⁶) whose ε by
// privacy.Epsilon at delta is at most eps: the classic conversion (Bun
// and Steinke 2016), √ρ = √(ln(1/δ) + ε) − √ln(1/δ), gives a ρ that
// meets it, and the tighter conversion lets a larger one, so less noise.
func rhoFor(eps, delta float64) float64 {
	l := math.Log(1 / delta)
	r := math.Sqrt(l+eps) - math.Sqrt(l)
	lo := r * r
	hi := 4 * lo
	for hi-lo > 1e-6*lo {
		mid := (lo + hi) / 2
		if e, err := privacy.Epsilon(mid, delta); err == nil && e <= eps {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// noiseFor is the discrete Gaussian's σ² for m marginals and the total at
// (eps, delta), and the ρ it gives: one record changes the total and one
// cell of each marginal by 1, L2 sensitivity √(m+1); σ² = (m+1)/(2ρ) for
// the ρ of rhoFor, rounded up to a rational with a denominator of 10⁶, so
// the ρ reached is at most rhoFor's. It depends on m and not on the
// data, so the ρ a release will cost is known before any noise is drawn.
func noiseFor(m int, eps, delta float64) (*big.Rat, float64, error) {
	l2 := math.Sqrt(float64(m + 1))
	target := rhoFor(eps, delta)
	sigma2 := new(big.Rat).SetFrac64(int64(math.Ceil(l2*l2/(2*target)*1e6)), 1e6)
	rho, err := privacy.GaussianRho(sigma2, l2)
	if err != nil {
		return nil, 0, err
	}
	return sigma2, rho, nil
}

// plannedRho is the ρ synthesise will state for record type rt with
// fields at (eps, delta) and now: that of noiseFor for the fields with a
// public domain. Computed from the schema only, before the data is read.
func plannedRho(rt *schema.RecordType, fields []string, eps, delta float64, now time.Time) (float64, error) {
	m := 0
	for _, f := range fields {
		if spec, ok := rt.Field(f); ok && len(domainOf(spec, now)) > 0 {
			m++
		}
	}
	if m == 0 {
		return 0, errors.New("no released field has a public domain: nothing to synthesise (RELEASES.md §4)")
	}
	_, rho, err := noiseFor(m, eps, delta)
	return rho, err
}

// onePerPerson keeps one record of each subject, chosen uniformly at
// random by draw and never by its values, so that adding or removing one
// person changes a type's tables as adding or removing one record does:
// the ρ of the tables is then about a person, which is what the privacy
// ledger counts (policy/PRIVACY.md §4.1, §6). Records without a subject
// (a type that concerns no person) are all kept. The order of the records
// kept is that of the source.
func onePerPerson(rows []map[string]any, subjects []string, draw *rand.Rand) []map[string]any {
	seen := map[string]int{}
	kept := map[string]int{}
	keep := make([]bool, len(rows))
	for i, s := range subjects {
		if s == "" {
			keep[i] = true
			continue
		}
		seen[s]++
		// Reservoir sampling of one: the n-th record of a subject replaces
		// the kept one with probability 1/n.
		if n := seen[s]; n == 1 || draw.IntN(n) == 0 {
			if j, ok := kept[s]; ok {
				keep[j] = false
			}
			kept[s], keep[i] = i, true
		}
	}
	out := make([]map[string]any, 0, len(kept))
	for i, k := range keep {
		if k {
			out = append(out, rows[i])
		}
	}
	return out
}

// synthesise makes a differentially private synthetic table from rows
// (the source, as policy lets it leave, direct identifiers out) of record
// type rt: each field with a public domain gets a one-way marginal, every
// cell noised with N_Z(0, σ²), and the total likewise; then noisyTotal
// rows are drawn, each field independently from its noised marginal
// (negative counts taken as 0; draw, seeded from the node's randomness,
// picks them: post-processing needs no more). One record changes the total and one cell
// of each marginal by 1: L2 sensitivity √(m+1) for m marginals, so
// ρ = (m+1)/(2σ²). Everything after the noise is post-processing.
func synthesise(rows []map[string]any, rt *schema.RecordType, fields []string, eps, delta float64, s *privacy.Sampler, draw *rand.Rand, now time.Time) ([]map[string]any, DP, error) {
	dp := DP{Delta: delta}
	type marginal struct {
		field  string
		date   bool // a date field: counted by its year
		domain []string
		index  map[string]int // value → its first cell in domain
		counts []int64
		sum    int64 // of counts, once noised
	}
	var ms []marginal
	for _, f := range fields {
		spec, ok := rt.Field(f)
		if !ok {
			continue
		}
		d := domainOf(spec, now)
		if len(d) == 0 {
			dp.Dropped = append(dp.Dropped, f)
			continue
		}
		index := make(map[string]int, len(d))
		for k, v := range d {
			if _, ok := index[v]; !ok {
				index[v] = k
			}
		}
		ms = append(ms, marginal{field: f, date: spec.Kind == schema.KindDate, domain: d, index: index, counts: make([]int64, len(d))})
	}
	if len(ms) == 0 {
		return nil, dp, errors.New("no released field has a public domain: nothing to synthesise (RELEASES.md §4)")
	}
	for _, r := range rows {
		for i := range ms {
			v := valueString(r[ms[i].field])
			if ms[i].date && len(v) >= 4 {
				v = v[:4]
			}
			if k, ok := ms[i].index[v]; ok {
				ms[i].counts[k]++
			}
		}
	}
	sigma2, rho, err := noiseFor(len(ms), eps, delta)
	if err != nil {
		return nil, dp, err
	}
	if dp.Epsilon, err = privacy.Epsilon(rho, delta); err != nil {
		return nil, dp, err
	}
	dp.Rho, dp.Sigma2 = rho, sigma2.RatString()
	noise := func(v int64) (int64, error) {
		z, err := s.DiscreteGaussian(sigma2)
		return v + z, err
	}
	total, err := noise(int64(len(rows)))
	if err != nil {
		return nil, dp, err
	}
	total = max(total, 0)
	dp.NoisyTotal = total
	for i := range ms {
		dp.Marginals = append(dp.Marginals, ms[i].field)
		for k := range ms[i].counts {
			v, err := noise(ms[i].counts[k])
			if err != nil {
				return nil, dp, err
			}
			ms[i].counts[k] = max(v, 0)
			ms[i].sum += ms[i].counts[k]
		}
	}
	out := make([]map[string]any, 0, total)
	for range total {
		row := map[string]any{}
		for _, m := range ms {
			if m.sum == 0 {
				continue // every cell noised to nothing: the field stays out of the row
			}
			pick := draw.Int64N(m.sum)
			for k, c := range m.counts {
				if pick < c {
					row[m.field] = m.domain[k]
					break
				}
				pick -= c
			}
		}
		out = append(out, row)
	}
	return out, dp, nil
}
