package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// PurposeSpacePolicy is the composite-signature purpose of a space policy.
const PurposeSpacePolicy = "space-policy"

const (
	magicSpacePolicy = "EDSP"
	// MaxSpacePolicySize bounds an encoded space policy.
	MaxSpacePolicySize = 4 << 10
)

// SpacePolicy is the authority's signed policy for one space: what every
// node of the space holds to whatever its own configuration says. A newer
// policy has a larger Serial; a node keeps the newest it has verified.
type SpacePolicy struct {
	Space  string
	Serial uint64 // ≥ 1, grows with every policy the authority signs
	Issued time.Time
	// MinSuite is the weakest suite envelopes of the space may be sealed
	// with (Strength): nodes neither seal nor open below it. Naming the
	// GM/T suite puts the space on that suite alone (Allows).
	MinSuite SuiteID
	// Linkage names the space's linkage evaluator and its key
	// (node/linkage/LINKAGE.md); nil when the space has none.
	Linkage *LinkageEvaluator
}

// LinkageEvaluator is the member a space policy names to evaluate the
// space's linkage pseudonyms (RFC 9497 POPRF), with the public key its
// proofs verify under. Binding the key in the authority's signed policy
// gives every member the same key: an evaluator cannot answer one member
// under another key undetected.
type LinkageEvaluator struct {
	Node string
	// Suite is the RFC 9497 suite identifier, e.g. "ristretto255-SHA512".
	Suite string
	// Key is the evaluator's public key, serialised as RFC 9497 does.
	Key []byte
}

// maxLinkageKey bounds a linkage public key (a compressed P-521 point).
const maxLinkageKey = 133

func (l *LinkageEvaluator) validate() error {
	switch {
	case !validName(l.Node):
		return errors.New("invalid linkage evaluator name")
	case l.Suite == "" || len(l.Suite) > 64:
		return errors.New("invalid linkage suite")
	case len(l.Key) == 0 || len(l.Key) > maxLinkageKey:
		return fmt.Errorf("linkage key of %d bytes", len(l.Key))
	}
	return nil
}

// Strength ranks suites for a space's minimum: a post-quantum hybrid above
// a classical one. The GM/T suite, classical, ranks with X25519 but stands
// outside the ranking in a policy ([SpacePolicy.Allows]). An unknown suite
// ranks below every known one.
func (s SuiteID) Strength() int {
	switch s {
	case SuiteXWing:
		return 2
	case SuiteX25519, SuiteSM2:
		return 1
	}
	return 0
}

// Allows reports whether p lets envelopes be sealed with suite s; a nil
// policy allows every known suite. A policy naming the GM/T suite
// ([SuiteSM2]) allows only it, since a space assessed under GM/T 0054 uses
// no other algorithms; a policy naming another suite allows the suites of
// at least its strength but not the GM/T one.
func (p *SpacePolicy) Allows(s SuiteID) bool { return p.Refusal(s) == nil }

// Refusal is nil when p allows suite s ([SpacePolicy.Allows]), else an
// error saying why and what would be allowed.
func (p *SpacePolicy) Refusal(s SuiteID) error {
	switch {
	case !s.known():
		return fmt.Errorf("suite %s is unknown: %w", s, ErrSuite)
	case p == nil:
		return nil
	case p.MinSuite == SuiteSM2 && s != SuiteSM2:
		return fmt.Errorf("suite %s is not the space's: its policy %d selects the GM/T suite %s, and only it", s, p.Serial, SuiteSM2)
	case p.MinSuite != SuiteSM2 && s == SuiteSM2:
		return fmt.Errorf("suite %s is outside the space's policy %d, whose minimum is %s: the GM/T suite is used only where the policy selects it", s, p.Serial, p.MinSuite)
	case s.Strength() < p.MinSuite.Strength():
		return fmt.Errorf("suite %s is below the space's minimum, %s (space policy %d)", s, p.MinSuite, p.Serial)
	}
	return nil
}

func (p *SpacePolicy) validate() error {
	switch {
	case !validName(p.Space):
		return errors.New("invalid space name")
	case p.Serial == 0:
		return errors.New("serial 0")
	case !validTime(p.Issued):
		return errors.New("invalid issue time")
	case !p.MinSuite.known():
		return fmt.Errorf("unknown minimum suite %d", p.MinSuite)
	case p.Linkage != nil:
		return p.Linkage.validate()
	}
	return nil
}

func (p *SpacePolicy) appendTo(b []byte) []byte {
	b = append(b, magicSpacePolicy...)
	b = append(b, statementVersion1)
	b = appendStr8(b, p.Space)
	b = binary.BigEndian.AppendUint64(b, p.Serial)
	b = appendMillis(b, p.Issued)
	b = binary.BigEndian.AppendUint16(b, uint16(p.MinSuite))
	if l := p.Linkage; l != nil {
		// An optional section, after the fields every version has: a
		// policy without it encodes as before.
		b = append(b, spacePolicyLinkage)
		b = appendStr8(b, l.Node)
		b = appendStr8(b, l.Suite)
		b = appendStr8(b, string(l.Key))
	}
	return b
}

// spacePolicyLinkage tags the linkage section of a space policy.
const spacePolicyLinkage = 1

// SignSpacePolicy encodes p and signs it with the composite root key under
// purpose "space-policy". Times are truncated to milliseconds.
func (a *AuthorityKey) SignSpacePolicy(p SpacePolicy) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("sign space policy: %w", err)
	}
	b := p.appendTo(nil)
	sig, err := a.ck.Sign(PurposeSpacePolicy, b)
	if err != nil {
		return nil, fmt.Errorf("sign space policy: %w", err)
	}
	return append(b, sig...), nil
}

// ParseSpacePolicy decodes data strictly, verifies its composite signature
// with the root key and checks that it is for space. Signature failures
// wrap [ErrCompositeSignature].
func ParseSpacePolicy(data []byte, root AuthorityPublicKey, space string) (*SpacePolicy, error) {
	if len(data) > MaxSpacePolicySize {
		return nil, fmt.Errorf("parse space policy: %d bytes, more than %d", len(data), MaxSpacePolicySize)
	}
	signed, body, sig, err := splitStatement(data, magicSpacePolicy)
	if err != nil {
		return nil, fmt.Errorf("parse space policy: %w", err)
	}
	r := &statementReader{b: body}
	p := &SpacePolicy{Space: r.str8(), Serial: r.u64()}
	p.Issued = r.millis("issued")
	p.MinSuite = SuiteID(r.u16())
	if r.err == nil && len(r.b) != 0 {
		if tag := r.u8(); tag != spacePolicyLinkage {
			r.err = fmt.Errorf("unknown section %d", tag)
		} else {
			p.Linkage = &LinkageEvaluator{Node: r.str8(), Suite: r.str8(), Key: []byte(r.str8())}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errors.New("trailing bytes")
	}
	if r.err != nil {
		return nil, fmt.Errorf("parse space policy: %w", r.err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("parse space policy: %w", err)
	}
	if err := root.cv.Verify(PurposeSpacePolicy, signed, sig); err != nil {
		return nil, fmt.Errorf("parse space policy: %w", err)
	}
	if p.Space != space {
		return nil, fmt.Errorf("parse space policy: for space %q, want %q", p.Space, space)
	}
	return p, nil
}
