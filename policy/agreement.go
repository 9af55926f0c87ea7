package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// Purpose is why a recipient receives records, from a closed vocabulary.
type Purpose string

// The purposes an agreement may name.
const (
	PurposeEnrollmentVerification   Purpose = "enrollment_verification"
	PurposeCreditTransfer           Purpose = "credit_transfer"
	PurposeStatistics               Purpose = "statistics"
	PurposeResearch                 Purpose = "research"
	PurposeHealthMonitoring         Purpose = "health_monitoring"
	PurposeFinancialAidVerification Purpose = "financial_aid_verification"
	PurposeEmploymentStatistics     Purpose = "employment_statistics"

	// The AI purposes: records go to an ai_service member only under one of
	// them, and under them only to an ai_service member (REASONS.md).
	PurposeModelTraining     Purpose = "model_training"
	PurposeModelEvaluation   Purpose = "model_evaluation"
	PurposeLearningAnalytics Purpose = "learning_analytics"
)

var purposes = map[Purpose]bool{
	PurposeEnrollmentVerification: true, PurposeCreditTransfer: true, PurposeStatistics: true,
	PurposeResearch: true, PurposeHealthMonitoring: true, PurposeFinancialAidVerification: true,
	PurposeEmploymentStatistics: true,
	PurposeModelTraining:        true, PurposeModelEvaluation: true, PurposeLearningAnalytics: true,
}

// aiPurposes are the purposes of an AI service.
var aiPurposes = map[Purpose]bool{
	PurposeModelTraining: true, PurposeModelEvaluation: true, PurposeLearningAnalytics: true,
}

// AI reports whether p is one of the AI purposes: records under it go only
// to an ai_service member, and an ai_service member receives records only
// under one of them.
func (p Purpose) AI() bool { return aiPurposes[p] }

// Valid reports whether p is in the closed vocabulary of purposes.
func (p Purpose) Valid() bool { return purposes[p] }

// LegalBasis is the ground on which the provider discloses records.
type LegalBasis string

// The legal bases an agreement may name.
const (
	BasisConsent        LegalBasis = "consent"
	BasisStatutoryDuty  LegalBasis = "statutory_duty"
	BasisContract       LegalBasis = "contract"
	BasisPublicInterest LegalBasis = "public_interest"
)

var bases = map[LegalBasis]bool{
	BasisConsent: true, BasisStatutoryDuty: true, BasisContract: true, BasisPublicInterest: true,
}

// Clause is the ground of PIPL art. 13 para. 1 that b is, "" for a basis
// not in the list (REASONS.md, "Legal bases").
func (b LegalBasis) Clause() string { return basisClauses[b] }

var basisClauses = map[LegalBasis]string{
	BasisConsent:        "PIPL art. 13(1)",
	BasisContract:       "PIPL art. 13(2)",
	BasisStatutoryDuty:  "PIPL art. 13(3)",
	BasisPublicInterest: "PIPL art. 13(4), 13(5)",
}

// Transform is what happens to one field on its way out.
type Transform string

// The transformations an agreement may ask for. Keep is the default for an
// agreed field that is not a direct identifier; Tokenise is the default for
// a direct identifier (unless the purpose is identity verification).
const (
	TransformKeep           Transform = "keep"
	TransformDrop           Transform = "drop"
	TransformTokenise       Transform = "tokenise"
	TransformGeneraliseYear Transform = "generalise_year"
)

var transforms = map[Transform]bool{
	TransformKeep: true, TransformDrop: true, TransformTokenise: true, TransformGeneraliseYear: true,
}

// Agreement is what a provider and a recipient agreed: who sends what to
// whom, why, on which legal basis, in which form and for how long.
type Agreement struct {
	ID         string     `json:"id"`
	Provider   string     `json:"provider"`
	Recipient  string     `json:"recipient"`
	Purpose    Purpose    `json:"purpose"`
	LegalBasis LegalBasis `json:"legal_basis"`
	// RecordTypes maps each agreed record type to the fields that may leave
	// (minimum necessary). Every other field is dropped.
	RecordTypes map[string][]string `json:"record_types"`
	// MaxLevel is the highest level of what leaves, after dropping. IMP
	// is allowed only for important data whose raw egress is also approved
	// in the evidence log (Input.ImportantApproved).
	MaxLevel schema.Level `json:"max_level"`
	// AllowRawL4 lets L4 records leave as records (GRADING.md §7: by default
	// only aggregates of L4 data leave).
	AllowRawL4 bool `json:"allow_raw_l4,omitempty"`
	// Transforms overrides the default handling of named fields.
	Transforms map[string]Transform `json:"transforms,omitempty"`
	// BulkApproved records the parties' bulk approval (GRADING.md §5 V1):
	// records at L3 may go on leaving once this recipient has received
	// those of the bulk threshold's number of subjects this year.
	BulkApproved bool `json:"bulk_approved,omitempty"`
	// AllowMicrodata lets records leave to a recipient whose role is
	// center, which by default receives aggregates only; the space's
	// rulebook must permit it too (Rulebook.MicrodataToCenter). It means
	// nothing to any other recipient.
	AllowMicrodata bool `json:"allow_microdata,omitempty"`
	// Continuous: the provider shares records as they are ingested while
	// the agreement is in force, without a share request for each batch
	// (a share request still sends what was held before).
	Continuous bool `json:"continuous,omitempty"`
	// RetentionDays is how long the recipient keeps what it received,
	// counted from receipt; then it deletes without being asked.
	RetentionDays int       `json:"retention_days"`
	ValidFrom     time.Time `json:"valid_from"`
	ValidUntil    time.Time `json:"valid_until"`
	// Revoked is state, not content: Canonical leaves it out. The node
	// sets it from SignedAgreement (Effective).
	Revoked bool `json:"revoked,omitempty"`
}

// ParseAgreement decodes an agreement from JSON and validates it against
// the standard whose record types it names. Unknown members are errors.
func ParseAgreement(data []byte, std *schema.Standard) (*Agreement, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var a Agreement
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("parse agreement: %w", err)
	}
	if err := a.Validate(std); err != nil {
		return nil, err
	}
	return &a, nil
}

// Validate checks the agreement; its errors name the field that is wrong.
func (a *Agreement) Validate(std *schema.Standard) error {
	switch {
	case a.ID == "":
		return fmt.Errorf("agreement: id: required")
	case a.Provider == "":
		return fmt.Errorf("agreement %s: provider: required", a.ID)
	case a.Recipient == "":
		return fmt.Errorf("agreement %s: recipient: required", a.ID)
	case a.Provider == a.Recipient:
		return fmt.Errorf("agreement %s: recipient: must differ from provider", a.ID)
	case !purposes[a.Purpose]:
		return fmt.Errorf("agreement %s: purpose: %q is not in the vocabulary", a.ID, a.Purpose)
	case !bases[a.LegalBasis]:
		return fmt.Errorf("agreement %s: legal_basis: %q is not one of consent, statutory_duty, contract, public_interest", a.ID, a.LegalBasis)
	case len(a.RecordTypes) == 0:
		return fmt.Errorf("agreement %s: record_types: at least one record type required", a.ID)
	case a.MaxLevel < schema.L1 || a.MaxLevel > schema.IMP:
		return fmt.Errorf("agreement %s: max_level: must be L1 to IMP", a.ID)
	case a.RetentionDays <= 0:
		return fmt.Errorf("agreement %s: retention_days: must be positive", a.ID)
	case a.ValidFrom.IsZero() || a.ValidUntil.IsZero():
		return fmt.Errorf("agreement %s: valid_from and valid_until: required", a.ID)
	case !a.ValidUntil.After(a.ValidFrom):
		return fmt.Errorf("agreement %s: valid_until: must be after valid_from", a.ID)
	case a.ValidFrom.UTC().Year() < 1 || a.ValidUntil.UTC().Year() > 9999:
		return fmt.Errorf("agreement %s: valid_from and valid_until: years 1 to 9999 only", a.ID)
	case a.RetentionDays > 100*366:
		return fmt.Errorf("agreement %s: retention_days: at most a century", a.ID)
	}
	for _, typ := range sortedKeys(a.RecordTypes) {
		rt, ok := std.Type(typ)
		if !ok {
			return fmt.Errorf("agreement %s: record_types.%s: unknown record type", a.ID, typ)
		}
		if len(a.RecordTypes[typ]) == 0 {
			return fmt.Errorf("agreement %s: record_types.%s: at least one field required", a.ID, typ)
		}
		seen := map[string]bool{}
		for _, f := range a.RecordTypes[typ] {
			if _, ok := rt.Field(f); !ok {
				return fmt.Errorf("agreement %s: record_types.%s: unknown field %q", a.ID, typ, f)
			}
			if seen[f] {
				return fmt.Errorf("agreement %s: record_types.%s: field %q named twice", a.ID, typ, f)
			}
			seen[f] = true
		}
	}
	for _, f := range sortedKeys(a.Transforms) {
		if t := a.Transforms[f]; !transforms[t] {
			return fmt.Errorf("agreement %s: transforms.%s: unknown transform %q", a.ID, f, t)
		}
		agreed := false
		for _, fields := range a.RecordTypes {
			agreed = agreed || slices.Contains(fields, f)
		}
		if !agreed {
			return fmt.Errorf("agreement %s: transforms.%s: not an agreed field", a.ID, f)
		}
	}
	return nil
}

// Canonical returns the agreement as deterministic JSON, the bytes both
// parties sign: members in declaration order, field lists sorted, times in
// UTC, and the revocation state left out. Two agreements with the same
// content give the same bytes.
func (a *Agreement) Canonical() []byte {
	c := *a
	c.Revoked = false
	c.ValidFrom, c.ValidUntil = a.ValidFrom.UTC(), a.ValidUntil.UTC()
	c.RecordTypes = make(map[string][]string, len(a.RecordTypes))
	for typ, fields := range a.RecordTypes {
		c.RecordTypes[typ] = slices.Sorted(slices.Values(fields))
	}
	b, err := json.Marshal(&c)
	if err != nil {
		// Only a level outside L1..CORE or a year outside 0..9999 fails to
		// marshal; Validate refuses both.
		return nil
	}
	return b
}

// AgreementSignatureLabel separates agreement signatures from every other
// signature a node key makes.
const AgreementSignatureLabel = "eduspace agreement v1"

// SigningMessage returns what each party signs with its Ed25519 key:
// AgreementSignatureLabel, a zero byte, then Canonical(). It is nil, and
// must not be signed, for an agreement Canonical cannot encode.
func (a *Agreement) SigningMessage() []byte {
	c := a.Canonical()
	if c == nil {
		return nil
	}
	return labelled(AgreementSignatureLabel, c)
}

func labelled(label string, body []byte) []byte {
	m := make([]byte, 0, len(label)+1+len(body))
	m = append(m, label...)
	m = append(m, 0)
	return append(m, body...)
}

// RetentionDeadline is when what the recipient received at received must be
// deleted: RetentionDays calendar days later.
func (a *Agreement) RetentionDeadline(received time.Time) time.Time {
	return received.AddDate(0, 0, a.RetentionDays)
}

// RetentionExpired reports whether, at now, the recipient must already
// have deleted what it received at received.
func (a *Agreement) RetentionExpired(received, now time.Time) bool {
	return !now.Before(a.RetentionDeadline(received))
}

// ValidAt reports whether t lies within the agreement's validity period.
func (a *Agreement) ValidAt(t time.Time) bool {
	return !t.Before(a.ValidFrom) && t.Before(a.ValidUntil)
}

// Allows reports whether field of record type typ is among the agreed fields.
func (a *Agreement) Allows(typ, field string) bool {
	for _, f := range a.RecordTypes[typ] {
		if f == field {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
