package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/eduspace/eduspace/schema"
)

// Rulebook is the space-wide handling per level (GRADING.md §7) and the
// volume rules of GRADING.md §5 as the node applies them per recipient and
// calendar year. Agreements can only narrow it. A space may configure its
// own rulebook (ParseRulebook); it may be stricter than the standard, never
// looser where the standard is the law's (levels, V2, V3), and only the
// product defaults (V1) may be switched off.
type Rulebook struct {
	// AggregateOnlyFrom is the lowest level whose raw records leave only
	// with an approval recorded in the evidence log (default IMP).
	AggregateOnlyFrom schema.Level `json:"aggregate_only_from"`
	// SensitiveLevel is the level whose raw egress needs the agreement's
	// explicit allowance and separate consent or a statutory duty (L4).
	SensitiveLevel schema.Level `json:"sensitive_level"`
	// MembersOnlyFrom is the lowest level that goes only to admitted
	// members of the space (L2; L1 is public and may go to anyone an
	// agreement names).
	MembersOnlyFrom schema.Level `json:"members_only_from"`
	// IdentityPurposes are the purposes for which direct identifiers may
	// leave in clear (identity verification); for every other purpose they
	// are tokenised per recipient.
	IdentityPurposes []Purpose `json:"identity_purposes"`
	// ClearIdentityPurposes are the purposes under which an agreement may
	// ask for a direct identifier in clear (transform "keep"): where the
	// recipient must know whose record it is (recognising credits). Under
	// any other purpose such a field is tokenised per recipient whatever
	// the agreement asks. The identity purposes are among them.
	ClearIdentityPurposes []Purpose `json:"clear_identity_purposes"`
	// RecipientRoles are the member roles that may receive records at all.
	// The default leaves out "auditor": auditors read checkpoints and
	// metrics, never envelopes (DESIGN.md §3). It names "ai_service",
	// which receives records only under the AI purposes
	// (rulebook.ai_service); a space that names its own list without it
	// sends AI services nothing.
	RecipientRoles []string `json:"recipient_roles"`
	// MicrodataToCenter lets an agreement with a center allow records
	// (Agreement.AllowMicrodata). Off by default: the center receives
	// aggregates (DESIGN.md §8), whatever its agreements say.
	MicrodataToCenter bool `json:"microdata_to_center"`
	// UnknownPersonStrict decides a record whose person the node holds no
	// record of (no student record of its subject) as a minor's, with
	// reason person_unknown: a guardian's consent is required unless the
	// basis is statutory duty (FlagAgeUnknown). On by default, also on a
	// node that keeps no person record of the kind at all (a feed of
	// grades only), which cannot tell a known person from an unknown one.
	// A rulebook that sets it false explicitly lets such a node decide the
	// record by what it shows: a minor's grade then leaves under the
	// rules of an adult's whenever the node holds no record showing the
	// age, so a space sets it false only where every provider's feed is
	// known to hold adults alone. A node that holds student records
	// decides its unknown persons strictly either way.
	UnknownPersonStrict bool `json:"unknown_person_strict"`
	// MaxRetentionDays caps, per purpose, the retention an agreement may
	// set (PIPL art. 19: no longer than the purpose needs); records under
	// an agreement that asks for longer do not leave. A purpose not named
	// has no cap beyond the agreement's own.
	MaxRetentionDays map[Purpose]int `json:"max_retention_days,omitempty"`
	// Volume holds the thresholds of GRADING.md §5.
	Volume VolumeRules `json:"volume"`
}

// VolumeRules are the thresholds of GRADING.md §5, counted in distinct
// subjects per recipient per calendar year.
type VolumeRules struct {
	// BulkL3 (V1, product default): records at L3 or above reaching this
	// many subjects need bulk approval on the agreement. 0 switches V1 off.
	BulkL3 int `json:"bulk_l3"`
	// ImportantL4 and ImportantL3 (V2): records at L4 reaching ImportantL4
	// subjects, or at L3 or above reaching ImportantL3, are important data:
	// raw egress needs an approval recorded in the evidence log.
	ImportantL4 int `json:"important_l4"`
	ImportantL3 int `json:"important_l3"`
	// AggregateOnly (V3): personal data of any level reaching this many
	// subjects leaves only as aggregates; no approval lifts it.
	AggregateOnly int `json:"aggregate_only"`
}

// The standard's volume thresholds (GRADING.md §5).
const (
	defaultBulkL3        = 1_000
	defaultImportantL4   = 10_000
	defaultImportantL3   = 100_000
	defaultAggregateOnly = 1_000_000
)

// The member roles of the space (crypto.Role values).
var roles = map[string]bool{"university": true, "center": true, "auditor": true, "ai_service": true}

// DefaultRulebook is GRADING.md §5 and §7 as written.
func DefaultRulebook() Rulebook {
	return Rulebook{
		AggregateOnlyFrom:     schema.IMP,
		SensitiveLevel:        schema.L4,
		MembersOnlyFrom:       schema.L2,
		IdentityPurposes:      []Purpose{PurposeEnrollmentVerification},
		ClearIdentityPurposes: []Purpose{PurposeEnrollmentVerification, PurposeCreditTransfer},
		RecipientRoles:        []string{"university", "center", "ai_service"},
		UnknownPersonStrict:   true,
		Volume: VolumeRules{
			BulkL3:        defaultBulkL3,
			ImportantL4:   defaultImportantL4,
			ImportantL3:   defaultImportantL3,
			AggregateOnly: defaultAggregateOnly,
		},
	}
}

// ParseRulebook decodes a space's rulebook from JSON. Members left out keep
// the values of DefaultRulebook, so a file names only what the space
// changes. Unknown members and trailing data are errors, and so is any
// setting Validate refuses.
func ParseRulebook(data []byte) (Rulebook, error) {
	rb := DefaultRulebook()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rb); err != nil {
		return Rulebook{}, fmt.Errorf("parse rulebook: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Rulebook{}, fmt.Errorf("parse rulebook: trailing data after the object")
	}
	if err := rb.Validate(); err != nil {
		return Rulebook{}, err
	}
	return rb, nil
}

// Validate checks the rulebook; its errors name the field that is wrong.
func (rb *Rulebook) Validate() error {
	switch {
	case rb.AggregateOnlyFrom < schema.L2 || rb.AggregateOnlyFrom > schema.IMP:
		return fmt.Errorf("rulebook: aggregate_only_from: must be L2 to IMP")
	case rb.SensitiveLevel < schema.L2 || rb.SensitiveLevel > schema.L4:
		return fmt.Errorf("rulebook: sensitive_level: must be L2 to L4")
	case rb.SensitiveLevel > rb.AggregateOnlyFrom:
		return fmt.Errorf("rulebook: sensitive_level: must not be above aggregate_only_from")
	case rb.MembersOnlyFrom < schema.L1 || rb.MembersOnlyFrom > schema.L2:
		return fmt.Errorf("rulebook: members_only_from: must be L1 or L2")
	case len(rb.RecipientRoles) == 0:
		return fmt.Errorf("rulebook: recipient_roles: at least one role required")
	case rb.Volume.BulkL3 < 0:
		return fmt.Errorf("rulebook: volume.bulk_l3: must be 0 (off) or positive")
	case rb.Volume.ImportantL4 < 1 || rb.Volume.ImportantL4 > defaultImportantL4:
		return fmt.Errorf("rulebook: volume.important_l4: must be 1 to %d", defaultImportantL4)
	case rb.Volume.ImportantL3 < 1 || rb.Volume.ImportantL3 > defaultImportantL3:
		return fmt.Errorf("rulebook: volume.important_l3: must be 1 to %d", defaultImportantL3)
	case rb.Volume.AggregateOnly < 1 || rb.Volume.AggregateOnly > defaultAggregateOnly:
		return fmt.Errorf("rulebook: volume.aggregate_only: must be 1 to %d", defaultAggregateOnly)
	}
	for _, list := range []struct {
		name string
		ps   []Purpose
	}{{"identity_purposes", rb.IdentityPurposes}, {"clear_identity_purposes", rb.ClearIdentityPurposes}} {
		seen := map[Purpose]bool{}
		for i, p := range list.ps {
			if !purposes[p] {
				return fmt.Errorf("rulebook: %s[%d]: %q is not in the vocabulary", list.name, i, p)
			}
			if seen[p] {
				return fmt.Errorf("rulebook: %s[%d]: %q named twice", list.name, i, p)
			}
			seen[p] = true
		}
	}
	for p, d := range rb.MaxRetentionDays {
		if !purposes[p] {
			return fmt.Errorf("rulebook: max_retention_days: %q is not in the vocabulary", p)
		}
		if d < 1 {
			return fmt.Errorf("rulebook: max_retention_days[%s]: %d: must be 1 or more", p, d)
		}
	}
	seenRole := map[string]bool{}
	for i, r := range rb.RecipientRoles {
		if !roles[r] {
			return fmt.Errorf("rulebook: recipient_roles[%d]: %q is not one of university, center, auditor, ai_service", i, r)
		}
		if seenRole[r] {
			return fmt.Errorf("rulebook: recipient_roles[%d]: %q named twice", i, r)
		}
		seenRole[r] = true
	}
	return nil
}

func (rb *Rulebook) identity(p Purpose) bool {
	return slices.Contains(rb.IdentityPurposes, p)
}

// mayClear reports whether an agreement for purpose p may ask for direct
// identifiers in clear.
func (rb *Rulebook) mayClear(p Purpose) bool {
	return rb.identity(p) || slices.Contains(rb.ClearIdentityPurposes, p)
}

// microdataTo reports whether records may leave to a recipient of role
// under agreement a: to a center only when both the agreement and the
// rulebook allow it.
func (rb *Rulebook) microdataTo(role string, a *Agreement) bool {
	return role != "center" || a.AllowMicrodata && rb.MicrodataToCenter
}

func (rb *Rulebook) roleReceives(role string) bool {
	for _, r := range rb.RecipientRoles {
		if r == role {
			return true
		}
	}
	return false
}

// retentionAllowed reports whether an agreement's retention is within
// the rulebook's cap for its purpose.
func (rb *Rulebook) retentionAllowed(a *Agreement) bool {
	max, ok := rb.MaxRetentionDays[a.Purpose]
	return !ok || a.RetentionDays <= max
}

// IdentifierInClear reports whether the direct identifier field leaves in
// clear under agreement a: under an identity purpose, or where the
// agreement keeps it under a purpose that may ask (as Decide does).
func (rb *Rulebook) IdentifierInClear(a *Agreement, field string) bool {
	o, ok := a.Transforms[field]
	return directTransform(rb.identity(a.Purpose), rb.mayClear(a.Purpose), o, ok) == TransformKeep
}
