package policy

import (
	"time"

	"github.com/eduspace/eduspace/schema"
)

// Rulebook is the space-wide handling per level (GRADING.md §7). Agreements
// can only narrow it.
type Rulebook struct {
	// AggregateOnlyFrom is the lowest level whose raw records never leave
	// (default IMP: important data leaves only as aggregates).
	AggregateOnlyFrom schema.Level
	// SensitiveLevel is the level whose raw egress needs the agreement's
	// explicit allowance and separate consent or a statutory duty (L4).
	SensitiveLevel schema.Level
	// IdentityPurposes are the purposes for which direct identifiers may
	// leave in clear (identity verification); for every other purpose they
	// are tokenised per recipient.
	IdentityPurposes []Purpose
}

// DefaultRulebook is GRADING.md §7 as written.
func DefaultRulebook() Rulebook {
	return Rulebook{
		AggregateOnlyFrom: schema.IMP,
		SensitiveLevel:    schema.L4,
		IdentityPurposes:  []Purpose{PurposeEnrollmentVerification},
	}
}

// Consent is what the consent ledger holds for one subject, purpose and
// recipient at the time of the decision.
type Consent struct {
	// Granted is a valid, unexpired, unwithdrawn separate consent.
	Granted bool
	// Guardian is true when the consent was given by a guardian.
	Guardian bool
}

// Input is everything a decision depends on.
type Input struct {
	Provider, Recipient string
	Labels              schema.Labels
	// Agreement is the agreement the share request names; nil when none.
	Agreement *Agreement
	Consent   Consent
	Now       time.Time
}

// FieldAction is what happens to one field of a permitted record.
type FieldAction struct {
	Field     string
	Transform Transform
}

// Decision is the outcome for one record and one recipient.
type Decision struct {
	Permit bool
	// Rule names the rule that decided, for the evidence log.
	Rule   string
	Reason Reason
	// Level is the highest level of what leaves (permit only).
	Level schema.Level
	// Actions lists, for a permitted record, every field present in the
	// record with what happens to it; dropped fields included.
	Actions []FieldAction
}

// The rule identifiers a decision names. Like reason codes they are stable.
const (
	RuleDefaultDeny           = "default-deny"
	RuleAgreementParty        = "agreement.party"
	RuleAgreementRevoked      = "agreement.revoked"
	RuleAgreementValidity     = "agreement.validity"
	RuleAgreementType         = "agreement.record_types"
	RuleAgreementFields       = "agreement.fields"
	RuleAgreementLevel        = "agreement.max_level"
	RuleAgreementConsent      = "agreement.consent"
	RuleAgreementPermit       = "agreement.permit"
	RuleRulebookCore          = "rulebook.core"
	RuleRulebookAggregateOnly = "rulebook.aggregate_only"
	RuleRulebookSensitive     = "rulebook.sensitive"
	RuleRulebookMinor         = "rulebook.minor"
)

func deny(rule string, reason Reason) Decision {
	return Decision{Rule: rule, Reason: reason}
}

// Decide returns the decision for one record and one recipient. Deny is the
// default: a record leaves only when an agreement covers it and every rule of
// the rulebook holds for what is left of it after the agreement's
// transformations. Decide performs no I/O and does not read the clock.
func Decide(rb Rulebook, in Input) Decision {
	l := in.Labels
	a := in.Agreement
	if a == nil {
		return deny(RuleDefaultDeny, ReasonNoAgreement)
	}
	if a.Provider != in.Provider || a.Recipient != in.Recipient {
		return deny(RuleAgreementParty, ReasonWrongParty)
	}
	if a.Revoked {
		return deny(RuleAgreementRevoked, ReasonAgreementRevoked)
	}
	if !a.ValidAt(in.Now) {
		return deny(RuleAgreementValidity, ReasonAgreementNotValid)
	}
	if _, ok := a.RecordTypes[l.Type]; !ok {
		return deny(RuleAgreementType, ReasonTypeNotAgreed)
	}
	if l.Level >= schema.CORE {
		return deny(RuleRulebookCore, ReasonCoreNeverLeaves)
	}

	identity := false
	for _, p := range rb.IdentityPurposes {
		identity = identity || p == a.Purpose
	}
	actions := make([]FieldAction, 0, len(l.Fields))
	level := schema.LevelUnknown
	kept := 0
	for _, name := range sortedKeys(l.Fields) {
		fl := l.Fields[name]
		t := TransformDrop
		if a.Allows(l.Type, name) {
			t = TransformKeep
			if (fl.DirectID || name == l.SubjectKey) && !identity {
				t = TransformTokenise
			}
			if o, ok := a.Transforms[name]; ok {
				t = o
			}
		}
		actions = append(actions, FieldAction{Field: name, Transform: t})
		if t == TransformDrop {
			continue
		}
		kept++
		level = max(level, fl.Level)
	}
	if kept == 0 {
		return deny(RuleAgreementFields, ReasonNoAgreedFields)
	}
	if level >= rb.AggregateOnlyFrom {
		return deny(RuleRulebookAggregateOnly, ReasonImportantAggregate)
	}
	statutory := a.LegalBasis == BasisStatutoryDuty
	if hasFlag(l.Flags, "minor") && !statutory && !(in.Consent.Granted && in.Consent.Guardian) {
		return deny(RuleRulebookMinor, ReasonMinorNeedsGuardian)
	}
	if level > a.MaxLevel {
		return deny(RuleAgreementLevel, ReasonLevelAboveAgreement)
	}
	if level >= rb.SensitiveLevel {
		if !a.AllowRawL4 {
			return deny(RuleRulebookSensitive, ReasonSensitiveNotRaw)
		}
		if !statutory && !in.Consent.Granted {
			return deny(RuleRulebookSensitive, ReasonSensitiveNeedsBasis)
		}
	}
	if a.LegalBasis == BasisConsent && !in.Consent.Granted {
		return deny(RuleAgreementConsent, ReasonConsentMissing)
	}
	return Decision{Permit: true, Rule: RuleAgreementPermit, Reason: ReasonPermit, Level: level, Actions: actions}
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}
