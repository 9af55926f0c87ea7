package secagg

import (
	"errors"
	"fmt"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
)

// Transcript is what the center collected in a round.
type Transcript struct {
	// Commitments from the participants who committed (U1).
	Commitments []Commitment
	// Shared names the participants whose share bundles the center
	// relayed (U2): every participant's masked vector must say it masked
	// with exactly this set.
	Shared []string
	// Masked are the masked vectors received (their senders are U3, the
	// survivors).
	Masked []MaskedInput
	// Responses are the survivors' answers to the survivor list; at least
	// t+1 are needed.
	Responses []UnmaskResponse
}

// Sum returns the sum, modulo 2⁶⁴ and read as int64, of the vectors of the
// participants in tr.Masked (the survivors). It recovers each survivor's
// self-mask seed and each dropped participant's key-agreement key from t+1
// responses, checks them against the commitments, and removes the self masks
// and the dropped participants' pairwise masks. It errs with [ErrTooFew]
// when fewer than MinSurvivors vectors or t+1 responses arrived and [ErrInconsistent]
// when a recovered secret does not match its commitment.
func (r *Round) Sum(tr Transcript) ([]int64, error) {
	keys := make(map[int]peerKeys, len(tr.Commitments))
	for _, c := range tr.Commitments {
		i, k, err := r.checkCommitment(c)
		if err != nil {
			return nil, fmt.Errorf("sum: %w", err)
		}
		if _, dup := keys[i]; dup {
			return nil, fmt.Errorf("sum: two commitments from %q", c.From)
		}
		keys[i] = k
	}
	shared, err := r.indices(tr.Shared)
	if err != nil {
		return nil, fmt.Errorf("sum: shared: %w", err)
	}
	for _, i := range shared {
		if _, ok := keys[i]; !ok {
			return nil, fmt.Errorf("sum: %q shared without committing", r.ids[i])
		}
	}
	inShared := setOf(shared)
	sharedDigest := r.setDigest(setShared, shared)

	total := make([]uint64, r.n)
	var alive []string
	for _, m := range tr.Masked {
		if m.Round != r.ctx {
			return nil, errors.New("sum: masked input for another round")
		}
		i, ok := r.index[m.From]
		if !ok || !inShared[i] {
			return nil, fmt.Errorf("sum: masked input from %q, which did not share", m.From)
		}
		if m.Shared != sharedDigest {
			return nil, fmt.Errorf("sum: %q masked with another set of participants", m.From)
		}
		if len(m.Vector) != r.n {
			return nil, fmt.Errorf("sum: %q sent %d cells, want %d", m.From, len(m.Vector), r.n)
		}
		alive = append(alive, m.From)
	}
	survivors, err := r.indices(alive)
	if err != nil {
		return nil, fmt.Errorf("sum: masked inputs: %w", err)
	}
	if len(survivors) < r.min {
		return nil, fmt.Errorf("sum: %d masked inputs, need %d: %w", len(survivors), r.min, ErrTooFew)
	}
	for _, m := range tr.Masked {
		for j, v := range m.Vector {
			total[j] += v
		}
	}
	isAlive := setOf(survivors)
	survivorDigest := r.setDigest(setSurvivors, survivors)

	// t+1 responses, in index order, each complete
	type answer struct {
		id          group.Scalar
		self, masks map[int]group.Scalar
	}
	var answers []answer
	responded := map[int]bool{}
	for _, u := range tr.Responses {
		i, ok := r.index[u.From]
		if u.Round != r.ctx || !ok || !isAlive[i] {
			return nil, fmt.Errorf("sum: unmask response from %q, not a survivor of this round", u.From)
		}
		if responded[i] {
			return nil, fmt.Errorf("sum: two unmask responses from %q", u.From)
		}
		responded[i] = true
		if u.Survivors != survivorDigest {
			return nil, fmt.Errorf("sum: %q answered another survivor set", u.From)
		}
		a := answer{id: g.NewScalar().SetUint64(uint64(i + 1))}
		if a.self, err = r.revealed(u.SelfShares, func(j int) bool { return isAlive[j] }); err != nil {
			return nil, fmt.Errorf("sum: %q self shares: %w", u.From, err)
		}
		if a.masks, err = r.revealed(u.MaskShares, func(j int) bool { return inShared[j] && !isAlive[j] }); err != nil {
			return nil, fmt.Errorf("sum: %q mask shares: %w", u.From, err)
		}
		if len(a.self) != len(survivors) || len(a.masks) != len(shared)-len(survivors) {
			return nil, fmt.Errorf("sum: %q answered for %d survivors and %d dropped, want %d and %d",
				u.From, len(a.self), len(a.masks), len(survivors), len(shared)-len(survivors))
		}
		answers = append(answers, a)
	}
	if len(answers) < r.t+1 {
		return nil, fmt.Errorf("sum: %d unmask responses, need %d: %w", len(answers), r.t+1, ErrTooFew)
	}
	answers = answers[:r.t+1]
	recoverSecret := func(pick func(answer) group.Scalar) (group.Scalar, error) {
		shares := make([]secretsharing.Share, len(answers))
		for k, a := range answers {
			shares[k] = secretsharing.Share{ID: a.id, Value: pick(a)}
		}
		return secretsharing.Recover(uint(r.t), shares)
	}

	var e expander
	for _, j := range survivors {
		seed, err := recoverSecret(func(a answer) group.Scalar { return a.self[j] })
		if err != nil {
			return nil, fmt.Errorf("sum: recover seed of %q: %w", r.ids[j], err)
		}
		if !g.NewElement().MulGen(seed).IsEqual(keys[j].self) {
			return nil, fmt.Errorf("sum: seed of %q: %w", r.ids[j], ErrInconsistent)
		}
		e.add(total, selfKey(&r.ctx, mustMarshal(seed), j), true)
	}
	for _, d := range shared {
		if isAlive[d] {
			continue
		}
		key, err := recoverSecret(func(a answer) group.Scalar { return a.masks[d] })
		if err != nil {
			return nil, fmt.Errorf("sum: recover key of %q: %w", r.ids[d], err)
		}
		if !g.NewElement().MulGen(key).IsEqual(keys[d].mask) {
			return nil, fmt.Errorf("sum: key of %q: %w", r.ids[d], ErrInconsistent)
		}
		// survivor v added +PRG(k_vd) when v < d and −PRG(k_vd) when v > d
		for _, v := range survivors {
			pt := g.NewElement().Mul(keys[v].mask, key)
			e.add(total, pairKey(&r.ctx, mustMarshal(pt), min(v, d), max(v, d)), v < d)
		}
	}
	out := make([]int64, r.n)
	for i, v := range total {
		out[i] = int64(v)
	}
	return out, nil
}

// revealed decodes a list of revealed shares, each about a participant for
// which want is true, none twice.
func (r *Round) revealed(list []RevealedShare, want func(int) bool) (map[int]group.Scalar, error) {
	out := make(map[int]group.Scalar, len(list))
	for _, s := range list {
		j, ok := r.index[s.Of]
		if !ok || !want(j) {
			return nil, fmt.Errorf("unexpected share of %q", s.Of)
		}
		if _, dup := out[j]; dup {
			return nil, fmt.Errorf("two shares of %q", s.Of)
		}
		v, err := parseScalar(s.Share[:])
		if err != nil {
			return nil, fmt.Errorf("share of %q: %w", s.Of, err)
		}
		out[j] = v
	}
	return out, nil
}

func setOf(idx []int) map[int]bool {
	m := make(map[int]bool, len(idx))
	for _, i := range idx {
		m[i] = true
	}
	return m
}
