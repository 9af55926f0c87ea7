package policy

import (
	"fmt"
	"time"
)

// AgreementState is where a signed agreement stands.
type AgreementState string

// The states of a signed agreement. Only an active agreement lets records
// leave (Effective); Decide still checks its validity period.
const (
	StateProposed AgreementState = "proposed" // signed by the side that proposed it, not yet accepted
	StateActive   AgreementState = "active"   // signed by both sides
	StateRevoked  AgreementState = "revoked"  // either side revoked it
	StateExpired  AgreementState = "expired"  // past valid_until
)

// SignedAgreement is an agreement with its signatures and history: one
// side proposes it (signing Agreement.SigningMessage), the other accepts it
// (signing the same bytes), either may revoke it. Policy only keeps the
// structure and the states; the node creates and verifies the signatures
// with its crypto keys and passes the bytes in.
type SignedAgreement struct {
	Agreement
	ProviderSig  []byte    `json:"provider_sig,omitempty"`
	RecipientSig []byte    `json:"recipient_sig,omitempty"`
	ProposedBy   string    `json:"proposed_by"`
	ProposedAt   time.Time `json:"proposed_at"`
	AcceptedAt   time.Time `json:"accepted_at,omitzero"`
	RevokedBy    string    `json:"revoked_by,omitempty"`
	RevokedAt    time.Time `json:"revoked_at,omitzero"`
}

// Propose starts a signed agreement: party (the provider or the recipient)
// proposes a, with sig its signature over a.SigningMessage().
func Propose(a Agreement, party string, sig []byte, at time.Time) (SignedAgreement, error) {
	s := SignedAgreement{Agreement: a, ProposedBy: party, ProposedAt: at}
	s.Revoked = false
	switch party {
	case a.Provider:
		s.ProviderSig = sig
	case a.Recipient:
		s.RecipientSig = sig
	default:
		return SignedAgreement{}, fmt.Errorf("agreement %s: proposed_by: %q is neither provider nor recipient", a.ID, party)
	}
	if len(sig) == 0 {
		return SignedAgreement{}, fmt.Errorf("agreement %s: signature of %s: required", a.ID, party)
	}
	if at.IsZero() {
		return SignedAgreement{}, fmt.Errorf("agreement %s: proposed_at: required", a.ID)
	}
	return s, nil
}

// Accept records the other side's signature. Only the side that did not
// propose may accept, only a proposal, and only before it expires.
func (s *SignedAgreement) Accept(party string, sig []byte, at time.Time) error {
	if st := s.State(at); st != StateProposed {
		return fmt.Errorf("agreement %s: accept: agreement is %s", s.ID, st)
	}
	if party == s.ProposedBy {
		return fmt.Errorf("agreement %s: accept: %s proposed it; the other side accepts", s.ID, party)
	}
	if len(sig) == 0 {
		return fmt.Errorf("agreement %s: signature of %s: required", s.ID, party)
	}
	if at.Before(s.ProposedAt) {
		return fmt.Errorf("agreement %s: accepted_at: before proposed_at", s.ID)
	}
	switch party {
	case s.Provider:
		s.ProviderSig = sig
	case s.Recipient:
		s.RecipientSig = sig
	default:
		return fmt.Errorf("agreement %s: accept: %q is neither provider nor recipient", s.ID, party)
	}
	s.AcceptedAt = at
	return nil
}

// Revoke records that party (provider or recipient) revoked the agreement,
// proposed or active, at at. Revoking twice is an error.
func (s *SignedAgreement) Revoke(party string, at time.Time) error {
	if party != s.Provider && party != s.Recipient {
		return fmt.Errorf("agreement %s: revoke: %q is neither provider nor recipient", s.ID, party)
	}
	if !s.RevokedAt.IsZero() || s.Revoked {
		return fmt.Errorf("agreement %s: revoke: already revoked", s.ID)
	}
	if at.Before(s.ProposedAt) {
		return fmt.Errorf("agreement %s: revoked_at: before proposed_at", s.ID)
	}
	s.RevokedBy, s.RevokedAt = party, at
	return nil
}

// State returns where the agreement stands at now: revoked once either
// side revoked it, expired from valid_until on, active once both signed,
// proposed before.
func (s *SignedAgreement) State(now time.Time) AgreementState {
	switch {
	case s.Revoked || (!s.RevokedAt.IsZero() && !now.Before(s.RevokedAt)):
		return StateRevoked
	case !now.Before(s.ValidUntil):
		return StateExpired
	case len(s.ProviderSig) > 0 && len(s.RecipientSig) > 0 && !s.AcceptedAt.IsZero() && !now.Before(s.AcceptedAt):
		return StateActive
	}
	return StateProposed
}

// Effective returns the agreement as Decide must see it at now: nil while
// it is only proposed (no agreement yet: no_agreement), a copy with
// Revoked set once revoked (agreement_revoked), else a copy.
func (s *SignedAgreement) Effective(now time.Time) *Agreement {
	a := s.Agreement
	switch s.State(now) {
	case StateProposed:
		return nil
	case StateRevoked:
		a.Revoked = true
	}
	return &a
}

// Validate checks the signed agreement's structure (not its signatures:
// the node verifies those): the parties, who proposed, accepted and
// revoked it and when. The agreement itself is checked with
// Agreement.Validate.
func (s *SignedAgreement) Validate() error {
	party := func(p string) bool { return p == s.Provider || p == s.Recipient }
	switch {
	case !party(s.ProposedBy):
		return fmt.Errorf("agreement %s: proposed_by: %q is neither provider nor recipient", s.ID, s.ProposedBy)
	case s.ProposedAt.IsZero():
		return fmt.Errorf("agreement %s: proposed_at: required", s.ID)
	case s.ProposedBy == s.Provider && len(s.ProviderSig) == 0:
		return fmt.Errorf("agreement %s: provider_sig: required from the proposer", s.ID)
	case s.ProposedBy == s.Recipient && len(s.RecipientSig) == 0:
		return fmt.Errorf("agreement %s: recipient_sig: required from the proposer", s.ID)
	case !s.AcceptedAt.IsZero() && (len(s.ProviderSig) == 0 || len(s.RecipientSig) == 0):
		return fmt.Errorf("agreement %s: accepted_at: set but a signature is missing", s.ID)
	case s.AcceptedAt.IsZero() && len(s.ProviderSig) > 0 && len(s.RecipientSig) > 0:
		return fmt.Errorf("agreement %s: accepted_at: required once both sides signed", s.ID)
	case !s.AcceptedAt.IsZero() && s.AcceptedAt.Before(s.ProposedAt):
		return fmt.Errorf("agreement %s: accepted_at: before proposed_at", s.ID)
	case s.RevokedAt.IsZero() != (s.RevokedBy == ""):
		return fmt.Errorf("agreement %s: revoked_by and revoked_at: both or neither", s.ID)
	case s.RevokedBy != "" && !party(s.RevokedBy):
		return fmt.Errorf("agreement %s: revoked_by: %q is neither provider nor recipient", s.ID, s.RevokedBy)
	case !s.RevokedAt.IsZero() && s.RevokedAt.Before(s.ProposedAt):
		return fmt.Errorf("agreement %s: revoked_at: before proposed_at", s.ID)
	}
	return nil
}
