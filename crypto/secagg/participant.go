package secagg

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
)

var g = group.Ristretto255

type phase int

const (
	phaseCommitted phase = iota
	phaseShared
	phaseMasked
)

// Participant is one node's side of a round. Its methods must be called in
// order — Commit, Shares, Mask, Unmask — and it is not safe for concurrent
// use. It holds secrets (its own until it has masked, others' shares until
// the round ends) and prints as redacted. A Participant lives in memory: a
// node that restarts mid-round drops out of it.
type Participant struct {
	r     *Round
	id    string
	me    int
	rnd   io.Reader
	phase phase

	maskKey, selfSeed group.Scalar  // s_u and b_u; zeroed after Mask
	maskPub, selfPub  group.Element // S_u = s_u·G, B_u = b_u·G

	peers  map[int]peerKeys   // committed participants U1, self included
	held   map[int]heldShares // my shares of each U1 member's secrets
	shared []int              // U2: participants I masked with, sorted

	answered *[32]byte // digest of the survivor set I answered
}

type peerKeys struct{ mask, self group.Element }

type heldShares struct{ mask, self group.Scalar }

// NewParticipant starts participant id's side of round r, drawing its
// per-round key-agreement key and self-mask seed, and later its Shamir
// polynomials, from rnd (crypto/rand when nil).
func (r *Round) NewParticipant(id string, rnd io.Reader) (*Participant, error) {
	me, ok := r.index[id]
	if !ok {
		return nil, fmt.Errorf("new participant: %q is not a participant of round %s", id, r.id)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	p := &Participant{r: r, id: id, me: me, rnd: rnd}
	p.maskKey = g.RandomNonZeroScalar(rnd)
	p.selfSeed = g.RandomNonZeroScalar(rnd)
	p.maskPub = g.NewElement().MulGen(p.maskKey)
	p.selfPub = g.NewElement().MulGen(p.selfSeed)
	return p, nil
}

// ID returns the participant's id.
func (p *Participant) ID() string { return p.id }

// String returns a redacted description.
func (p *Participant) String() string {
	return "secagg.Participant(" + p.id + " in " + p.r.id + ", redacted)"
}

// Format prints the redacted [Participant.String] for every verb.
func (p *Participant) Format(f fmt.State, _ rune) { io.WriteString(f, p.String()) }

// LogValue keeps the participant's secrets out of structured logs.
func (p *Participant) LogValue() slog.Value { return slog.StringValue(p.String()) }

// Commit returns the participant's commitment: its two public values.
func (p *Participant) Commit() Commitment {
	c := Commitment{Round: p.r.ctx, From: p.id}
	copy(c.MaskKey[:], mustMarshal(p.maskPub))
	copy(c.SelfKey[:], mustMarshal(p.selfPub))
	return c
}

// Shares takes the commitments the center relayed (the participants who
// committed, U1, which must include this one and number at least t+1) and
// returns one bundle for each of them, this participant's own included: the
// recipient's Shamir shares of this participant's key-agreement key and
// self-mask seed. Every bundle but its own goes, encrypted, to its
// recipient; the own bundle is kept and need not be passed to Mask.
func (p *Participant) Shares(commits []Commitment) ([]ShareBundle, error) {
	if p.phase != phaseCommitted {
		return nil, errors.New("shares: called out of order")
	}
	peers := make(map[int]peerKeys, len(commits))
	for _, c := range commits {
		i, keys, err := p.r.checkCommitment(c)
		if err != nil {
			return nil, fmt.Errorf("shares: %w", err)
		}
		if _, dup := peers[i]; dup {
			return nil, fmt.Errorf("shares: two commitments from %q", c.From)
		}
		peers[i] = keys
	}
	own, ok := peers[p.me]
	if !ok || !own.mask.IsEqual(p.maskPub) || !own.self.IsEqual(p.selfPub) {
		return nil, errors.New("shares: own commitment missing or altered")
	}
	if len(peers) < p.r.t+1 {
		return nil, fmt.Errorf("shares: %d committed, need %d: %w", len(peers), p.r.t+1, ErrTooFew)
	}
	maskSS := secretsharing.New(p.rnd, uint(p.r.t), p.maskKey)
	selfSS := secretsharing.New(p.rnd, uint(p.r.t), p.selfSeed)
	ids := sortedKeys(peers)
	out := make([]ShareBundle, 0, len(ids))
	id := g.NewScalar()
	for _, j := range ids {
		id.SetUint64(uint64(j + 1))
		ms, ss := maskSS.ShareWithID(id), selfSS.ShareWithID(id)
		b := ShareBundle{Round: p.r.ctx, From: p.id, To: p.r.ids[j]}
		copy(b.MaskShare[:], mustMarshal(ms.Value))
		copy(b.SelfShare[:], mustMarshal(ss.Value))
		out = append(out, b)
		if j == p.me {
			p.held = map[int]heldShares{p.me: {mask: ms.Value, self: ss.Value}}
		}
	}
	p.peers = peers
	p.phase = phaseShared
	return out, nil
}

// Mask takes the share bundles addressed to this participant that the
// center relayed (from the participants who shared, U2, itself excepted) and
// returns x masked: x + self mask + Σ± pairwise masks with every member of
// U2, modulo 2⁶⁴. len(x) must be the round's vector length and U2 must
// number at least the round's MinSurvivors (≥ t+1): a center that relays
// fewer could not release a sum with the noise planned, and a shorter U2
// would leave this participant's vector masked against fewer peers. After
// Mask the participant's own secrets are erased.
func (p *Participant) Mask(x []int64, received []ShareBundle) (MaskedInput, error) {
	if p.phase != phaseShared {
		return MaskedInput{}, errors.New("mask: called out of order")
	}
	if len(x) != p.r.n {
		return MaskedInput{}, fmt.Errorf("mask: %d cells, want %d", len(x), p.r.n)
	}
	held := map[int]heldShares{p.me: p.held[p.me]}
	for _, b := range received {
		if b.Round != p.r.ctx {
			return MaskedInput{}, errors.New("mask: share bundle for another round")
		}
		if b.To != p.id {
			return MaskedInput{}, fmt.Errorf("mask: share bundle addressed to %q", b.To)
		}
		i, ok := p.r.index[b.From]
		if !ok || i == p.me {
			return MaskedInput{}, fmt.Errorf("mask: share bundle from %q", b.From)
		}
		if _, ok := p.peers[i]; !ok {
			return MaskedInput{}, fmt.Errorf("mask: share bundle from %q, which did not commit", b.From)
		}
		if _, dup := held[i]; dup {
			return MaskedInput{}, fmt.Errorf("mask: two share bundles from %q", b.From)
		}
		ms, err := parseScalar(b.MaskShare[:])
		if err != nil {
			return MaskedInput{}, fmt.Errorf("mask: share bundle from %q: %w", b.From, err)
		}
		ss, err := parseScalar(b.SelfShare[:])
		if err != nil {
			return MaskedInput{}, fmt.Errorf("mask: share bundle from %q: %w", b.From, err)
		}
		held[i] = heldShares{mask: ms, self: ss}
	}
	if len(held) < p.r.min {
		return MaskedInput{}, fmt.Errorf("mask: %d shared, need %d: %w", len(held), p.r.min, ErrTooFew)
	}
	shared := sortedKeys(held)
	y := make([]uint64, p.r.n)
	for i, v := range x {
		y[i] = uint64(v)
	}
	var e expander
	e.add(y, selfKey(&p.r.ctx, mustMarshal(p.selfSeed), p.me), false)
	for _, j := range shared {
		if j == p.me {
			continue
		}
		pt := g.NewElement().Mul(p.peers[j].mask, p.maskKey)
		lo, hi := min(p.me, j), max(p.me, j)
		e.add(y, pairKey(&p.r.ctx, mustMarshal(pt), lo, hi), p.me > j)
	}
	p.maskKey.SetUint64(0)
	p.selfSeed.SetUint64(0)
	p.held, p.shared, p.phase = held, shared, phaseMasked
	return MaskedInput{Round: p.r.ctx, From: p.id, Shared: p.r.setDigest(setShared, shared), Vector: y}, nil
}

// Unmask answers the center's list of survivors — the participants whose
// masked vectors it received, U3 — with this participant's shares of each
// survivor's self-mask seed and of each dropped participant's (U2 minus U3)
// key-agreement key. U3 must be part of U2, include this participant and
// number at least the round's MinSurvivors (≥ t+1). The participant answers one survivor set only: the
// same set again gets the same answer, another set [ErrConflictingSurvivors].
func (p *Participant) Unmask(survivors []string) (UnmaskResponse, error) {
	if p.phase != phaseMasked {
		return UnmaskResponse{}, errors.New("unmask: called out of order")
	}
	idx, err := p.r.indices(survivors)
	if err != nil {
		return UnmaskResponse{}, fmt.Errorf("unmask: survivors: %w", err)
	}
	alive := make(map[int]bool, len(idx))
	for _, i := range idx {
		if _, ok := p.held[i]; !ok {
			return UnmaskResponse{}, fmt.Errorf("unmask: survivor %q did not share", p.r.ids[i])
		}
		alive[i] = true
	}
	if !alive[p.me] {
		return UnmaskResponse{}, errors.New("unmask: survivors omit this participant")
	}
	if len(idx) < p.r.min {
		return UnmaskResponse{}, fmt.Errorf("unmask: %d survivors, need %d: %w", len(idx), p.r.min, ErrTooFew)
	}
	d := p.r.setDigest(setSurvivors, idx)
	if p.answered != nil && *p.answered != d {
		return UnmaskResponse{}, fmt.Errorf("unmask: %w", ErrConflictingSurvivors)
	}
	p.answered = &d
	u := UnmaskResponse{Round: p.r.ctx, From: p.id, Survivors: d}
	for _, j := range p.shared {
		if alive[j] {
			s := RevealedShare{Of: p.r.ids[j]}
			copy(s.Share[:], mustMarshal(p.held[j].self))
			u.SelfShares = append(u.SelfShares, s)
		} else {
			s := RevealedShare{Of: p.r.ids[j]}
			copy(s.Share[:], mustMarshal(p.held[j].mask))
			u.MaskShares = append(u.MaskShares, s)
		}
	}
	return u, nil
}

// checkCommitment checks that c is for this round from a participant and
// that its points are valid and not the identity.
func (r *Round) checkCommitment(c Commitment) (int, peerKeys, error) {
	if c.Round != r.ctx {
		return 0, peerKeys{}, errors.New("commitment for another round")
	}
	i, ok := r.index[c.From]
	if !ok {
		return 0, peerKeys{}, fmt.Errorf("commitment from %q, not a participant", c.From)
	}
	mask, err := parseElement(c.MaskKey[:])
	if err != nil {
		return 0, peerKeys{}, fmt.Errorf("commitment from %q: mask key: %w", c.From, err)
	}
	self, err := parseElement(c.SelfKey[:])
	if err != nil {
		return 0, peerKeys{}, fmt.Errorf("commitment from %q: self key: %w", c.From, err)
	}
	return i, peerKeys{mask: mask, self: self}, nil
}

func parseElement(b []byte) (group.Element, error) {
	e := g.NewElement()
	if err := e.UnmarshalBinary(b); err != nil {
		return nil, errors.New("not a canonical Ristretto255 point")
	}
	if e.IsIdentity() {
		return nil, errors.New("identity point")
	}
	return e, nil
}

func parseScalar(b []byte) (group.Scalar, error) {
	s := g.NewScalar()
	if err := s.UnmarshalBinary(b); err != nil {
		return nil, errors.New("not a canonical Ristretto255 scalar")
	}
	return s, nil
}

func mustMarshal(v interface{ MarshalBinary() ([]byte, error) }) []byte {
	b, err := v.MarshalBinary()
	if err != nil {
		panic("secagg: marshal: " + err.Error()) // never for Ristretto255
	}
	return b
}

func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
