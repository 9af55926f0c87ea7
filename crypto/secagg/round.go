package secagg

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Limits of a round.
const (
	// MaxParticipants bounds a round: each participant expands a mask per
	// other participant, so cost grows with the square of their number.
	MaxParticipants = 1000
	// MaxVectorLen bounds the cells of one vector (32 MiB of uint64).
	MaxVectorLen = 1 << 22
	maxNameLen   = 255

	version1     = 1
	labelRound   = "eduspace secagg v1 round"
	labelPair    = "eduspace secagg v1 pair mask"
	labelSelf    = "eduspace secagg v1 self mask"
	labelSet     = "eduspace secagg v1 set"
	setShared    = 'S' // participants whose share bundles were relayed
	setSurvivors = 'V' // participants whose masked vectors arrived
)

// Errors callers branch on.
var (
	// ErrTooFew is returned when fewer than t+1 participants are left at
	// some step, so the round cannot complete (or would reveal too much).
	ErrTooFew = errors.New("secagg: too few participants to complete the round")
	// ErrInconsistent is returned when recovered secrets do not match the
	// participants' commitments: some share was altered or misdelivered.
	ErrInconsistent = errors.New("secagg: shares inconsistent with commitments")
	// ErrConflictingSurvivors is returned by [Participant.Unmask] when asked
	// a second time with a different set of survivors: answering both could
	// reveal a participant's self mask and its pairwise masks at once.
	ErrConflictingSurvivors = errors.New("secagg: conflicting survivor sets")
)

// Params are a round's parameters, which every participant and the center
// must agree on (the center's signed query carries them).
type Params struct {
	// RoundID names the round, 1..255 bytes; never reused.
	RoundID string
	// Participants are the node ids invited to the round, 3..1000 distinct
	// names of 1..255 bytes without control characters. Their sorted order
	// fixes each participant's index: its Shamir share id is index+1 and
	// the sign of its pairwise masks depends on it.
	Participants []string
	// Threshold is t ≥ 1: any t+1 shares recover a secret and t reveal
	// nothing about it; t+1 ≤ len(Participants). A round completes when at
	// least MinSurvivors participants send masked vectors and t+1 answer.
	// Against a center that tells participants different survivor lists
	// with c participants colluding, t+1 must exceed (n + c)/2
	// (PRIVACY.md §1); the caller chooses t and c and checks that bound.
	Threshold int
	// VectorLen is the number of cells of every vector, 1..[MaxVectorLen].
	VectorLen int
	// MinSurvivors is the fewest masked vectors a release may sum, in
	// [t+1, n]; 0 means t+1. The noise plan assumes at least this many
	// noise shares in the release (PRIVACY.md §4.3): participants refuse to
	// unmask, and Sum refuses to sum, fewer.
	MinSurvivors int
}

// Round is a validated round: the parameters with participants sorted, and
// the digest that binds every message to them. It is immutable and safe for
// concurrent use.
type Round struct {
	id    string
	ids   []string // sorted
	index map[string]int
	t     int
	min   int // fewest survivors
	n     int // vector length
	ctx   [32]byte
}

func validName(s string) bool {
	if s == "" || len(s) > maxNameLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// NewRound validates p and returns the round.
func NewRound(p Params) (*Round, error) {
	if !validName(p.RoundID) {
		return nil, errors.New("new round: round id: 1..255 bytes of text")
	}
	n := len(p.Participants)
	if n < 3 || n > MaxParticipants {
		return nil, fmt.Errorf("new round: %d participants, want 3..%d", n, MaxParticipants)
	}
	if p.Threshold < 1 || p.Threshold+1 > n {
		return nil, fmt.Errorf("new round: threshold %d with %d participants, want 1 ≤ t and t+1 ≤ n", p.Threshold, n)
	}
	if p.MinSurvivors == 0 {
		p.MinSurvivors = p.Threshold + 1
	}
	if p.MinSurvivors < p.Threshold+1 || p.MinSurvivors > n {
		return nil, fmt.Errorf("new round: minimum survivors %d, want t+1 = %d..%d", p.MinSurvivors, p.Threshold+1, n)
	}
	if p.VectorLen < 1 || p.VectorLen > MaxVectorLen {
		return nil, fmt.Errorf("new round: vector length %d, want 1..%d", p.VectorLen, MaxVectorLen)
	}
	ids := slices.Clone(p.Participants)
	slices.Sort(ids)
	r := &Round{id: p.RoundID, ids: ids, index: make(map[string]int, n), t: p.Threshold, min: p.MinSurvivors, n: p.VectorLen}
	for i, id := range ids {
		if !validName(id) {
			return nil, fmt.Errorf("new round: participant %d: invalid id", i)
		}
		if _, dup := r.index[id]; dup {
			return nil, fmt.Errorf("new round: participant %q listed twice", id)
		}
		r.index[id] = i
	}
	// ctx = SHA-256(label ‖ 0 ‖ str8(round id) ‖ u16(t) ‖ u16(min survivors) ‖
	//              u32(len) ‖ u16(n) ‖ str8(id)…)
	b := append([]byte(labelRound), 0)
	b = appendStr8(b, r.id)
	b = binary.BigEndian.AppendUint16(b, uint16(r.t))
	b = binary.BigEndian.AppendUint16(b, uint16(r.min))
	b = binary.BigEndian.AppendUint32(b, uint32(r.n))
	b = binary.BigEndian.AppendUint16(b, uint16(len(ids)))
	for _, id := range ids {
		b = appendStr8(b, id)
	}
	r.ctx = sha256.Sum256(b)
	return r, nil
}

// ID returns the round id.
func (r *Round) ID() string { return r.id }

// Participants returns the invited participants in index order.
func (r *Round) Participants() []string { return slices.Clone(r.ids) }

// Threshold returns t.
func (r *Round) Threshold() int { return r.t }

// MinSurvivors returns the fewest masked vectors a release may sum.
func (r *Round) MinSurvivors() int { return r.min }

// VectorLen returns the number of cells of a vector.
func (r *Round) VectorLen() int { return r.n }

// Digest returns the 32-byte digest of the round's parameters that every
// message carries.
func (r *Round) Digest() [32]byte { return r.ctx }

// SharedDigest returns the digest of a list U2 of participants who shared,
// as a [MaskedInput] carries it, so that the list can be recorded and
// compared.
func (r *Round) SharedDigest(ids []string) ([32]byte, error) {
	idx, err := r.indices(ids)
	if err != nil {
		return [32]byte{}, fmt.Errorf("shared digest: %w", err)
	}
	return r.setDigest(setShared, idx), nil
}

// SurvivorsDigest returns the digest of a survivor list U3, as an
// [UnmaskResponse] carries it.
func (r *Round) SurvivorsDigest(ids []string) ([32]byte, error) {
	idx, err := r.indices(ids)
	if err != nil {
		return [32]byte{}, fmt.Errorf("survivors digest: %w", err)
	}
	return r.setDigest(setSurvivors, idx), nil
}

// setDigest binds a set of participants (sorted indices) to the round.
func (r *Round) setDigest(kind byte, idx []int) [32]byte {
	b := append([]byte(labelSet), 0, kind)
	b = append(b, r.ctx[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(idx)))
	for _, i := range idx {
		b = binary.BigEndian.AppendUint16(b, uint16(i))
	}
	return sha256.Sum256(b)
}

// indices maps ids to sorted indices, refusing unknown and repeated ids.
func (r *Round) indices(ids []string) ([]int, error) {
	out := make([]int, 0, len(ids))
	seen := make(map[int]bool, len(ids))
	for _, id := range ids {
		i, ok := r.index[id]
		if !ok {
			return nil, fmt.Errorf("%q is not a participant", id)
		}
		if seen[i] {
			return nil, fmt.Errorf("%q listed twice", id)
		}
		seen[i] = true
		out = append(out, i)
	}
	slices.Sort(out)
	return out, nil
}

func appendStr8(b []byte, s string) []byte { return append(append(b, byte(len(s))), s...) }
