package policy

import (
	"slices"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// Consent is what the consent ledger holds for one subject, purpose and
// recipient at the time of the decision. ConsentState computes it from the
// ledger's records.
type Consent struct {
	// Granted is a valid (granted, unexpired, unwithdrawn) separate consent
	// for the purpose and recipient that covers the categories asked for.
	Granted bool
	// Guardian is true when guardian consents alone cover them (GRADING.md
	// §4 C3: subjects under 14).
	Guardian bool
	// Scope is the union of the categories the valid consents cover; nil
	// means every category. Decide refuses (consent_scope) a record that
	// would carry a field of a category outside it. Tokenised fields do not
	// count: what leaves of them is a per-recipient pseudonym.
	Scope []schema.Category
	// Records names the consent records relied upon, for the evidence log.
	Records []string
}

// Input is everything a decision depends on.
type Input struct {
	Provider, Recipient string
	// RecipientRole is the role in the recipient's verified, unexpired,
	// unrevoked credential ("university", "center", "auditor",
	// "ai_service"). Empty means
	// the recipient is not an admitted member of the space: it may receive
	// L1 only.
	RecipientRole string
	Labels        schema.Labels
	// Agreement is the agreement the share request names; nil when none,
	// and nil while it is only proposed (SignedAgreement.Effective).
	Agreement *Agreement
	Consent   Consent
	// VolumeSoFar counts the distinct subjects, other than this record's,
	// whose records at L3 or above this recipient has already received this
	// calendar year (V1, and V2 at L3). Decide adds this record's subject.
	VolumeSoFar int
	// SensitiveSoFar counts, likewise, those received at L4 (V2 at L4).
	SensitiveSoFar int
	// SubjectsSoFar counts, likewise, those received at any level (V3).
	SubjectsSoFar int
	// ImportantApproved is true when the evidence log records an approval
	// for raw egress of important data (IMP, or V2 volume) to this
	// recipient under this agreement.
	ImportantApproved bool
	Now               time.Time
	// Previous is optional: the caller's last permit for a record of the
	// same type, decided under the same rulebook and agreement. When this
	// record has the same fields and its labels come from the standard
	// (ClassifyRow), the fields' actions are Previous.Actions again, and
	// Decide returns that slice rather than working them out anew: a
	// decision's Actions are shared, not to be modified.
	Previous *Decision
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

func deny(rule string, reason Reason) Decision {
	return Decision{Rule: rule, Reason: reason}
}

// FlagAgeUnknown flags the labels of a record whose type carries a
// person's id but cannot show their age (a course grade), when the node
// holds no record of the person that could (no student record): the
// person is unknown to it. Decide treats the subject as a minor, the
// strictest case of the rules that need the age, and says so with
// ReasonPersonUnknown.
const FlagAgeUnknown = "age_unknown"

// Decide returns the decision for one record and one recipient. Deny is the
// default: a record leaves only when an agreement covers it and every rule of
// the rulebook holds for what is left of it after the agreement's
// transformations. The rules are tried in the order of Rules(); the first
// that denies decides. Decide performs no I/O and does not read the clock.
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
	if !purposes[a.Purpose] {
		return deny(RuleAgreementPurpose, ReasonPurposeNotDeclared)
	}
	if !bases[a.LegalBasis] {
		return deny(RuleAgreementBasis, ReasonBasisNotDeclared)
	}
	if _, ok := a.RecordTypes[l.Type]; !ok {
		return deny(RuleAgreementType, ReasonTypeNotAgreed)
	}
	if l.Level >= schema.CORE {
		return deny(RuleRulebookCore, ReasonCoreNeverLeaves)
	}
	if in.RecipientRole != "" && !rb.roleReceives(in.RecipientRole) {
		return deny(RuleRulebookRole, ReasonRecipientRole)
	}
	if ai := in.RecipientRole == "ai_service"; ai != a.Purpose.AI() {
		if ai {
			return deny(RuleRulebookAIService, ReasonAIServicePurpose)
		}
		return deny(RuleRulebookAIService, ReasonAIPurposeRecipient)
	}
	if !rb.microdataTo(in.RecipientRole, a) {
		return deny(RuleRulebookCenter, ReasonCenterAggregatesOnly)
	}
	if !rb.retentionAllowed(a) {
		return deny(RuleRulebookRetention, ReasonRetentionTooLong)
	}

	actions, level := actionsFor(&rb, a, l, in.Previous)
	if level == schema.LevelUnknown {
		return deny(RuleAgreementFields, ReasonNoAgreedFields)
	}
	if level >= rb.MembersOnlyFrom && in.RecipientRole == "" {
		return deny(RuleRulebookMembers, ReasonRecipientNotMember)
	}
	c := in.Consent
	covered := c.Granted && scopeCovers(c.Scope, l, actions)
	// A subject whose age the node cannot know (FlagAgeUnknown) is decided
	// as a minor, with a reason that says why.
	minor := slices.Contains(l.Flags, "minor")
	minorReason, trainingMinorReason := ReasonMinorNeedsGuardian, ReasonTrainingMinor
	if !minor && slices.Contains(l.Flags, FlagAgeUnknown) {
		minor, minorReason, trainingMinorReason = true, ReasonPersonUnknown, ReasonPersonUnknown
	}
	if a.Purpose == PurposeModelTraining {
		// Stricter than the general rules below: no legal basis and no
		// approval stands in for the guardian's consent, the subject's
		// standing consent, or the absence of sensitive fields.
		if minor && !(covered && c.Guardian) {
			if c.Granted && c.Guardian {
				return deny(RuleRulebookTrainingMinor, ReasonConsentScope)
			}
			return deny(RuleRulebookTrainingMinor, trainingMinorReason)
		}
		if level >= rb.SensitiveLevel {
			return deny(RuleRulebookTrainingL4, ReasonTrainingSensitive)
		}
		if l.SubjectKey != "" && !covered {
			if c.Granted {
				return deny(RuleRulebookTrainingConsent, ReasonConsentScope)
			}
			return deny(RuleRulebookTrainingConsent, ReasonTrainingNeedsConsent)
		}
	}
	if level >= rb.AggregateOnlyFrom && !in.ImportantApproved {
		return deny(RuleRulebookAggregateOnly, ReasonImportantAggregate)
	}
	statutory := a.LegalBasis == BasisStatutoryDuty
	if minor && !statutory && !(covered && c.Guardian) {
		if c.Granted && c.Guardian {
			return deny(RuleRulebookMinor, ReasonConsentScope)
		}
		return deny(RuleRulebookMinor, minorReason)
	}
	if level > a.MaxLevel {
		return deny(RuleAgreementLevel, ReasonLevelAboveAgreement)
	}
	if level >= rb.SensitiveLevel {
		if !a.AllowRawL4 {
			return deny(RuleRulebookSensitive, ReasonSensitiveNotRaw)
		}
		if !statutory && !covered {
			if c.Granted {
				return deny(RuleRulebookSensitive, ReasonConsentScope)
			}
			return deny(RuleRulebookSensitive, ReasonSensitiveNeedsBasis)
		}
	}
	if a.LegalBasis == BasisConsent && !covered {
		if c.Granted {
			return deny(RuleAgreementConsent, ReasonConsentScope)
		}
		return deny(RuleAgreementConsent, ReasonConsentMissing)
	}
	if l.SubjectKey != "" {
		if v := rb.Volume.AggregateOnly; v > 0 && in.SubjectsSoFar+1 >= v {
			return deny(RuleVolumeAggregate, ReasonVolumeAggregateOnly)
		}
		important := (level >= schema.L4 && in.SensitiveSoFar+1 >= rb.Volume.ImportantL4) ||
			(level >= schema.L3 && in.VolumeSoFar+1 >= rb.Volume.ImportantL3)
		if important && !in.ImportantApproved {
			return deny(RuleVolumeImportant, ReasonVolumeImportant)
		}
		bulk := rb.Volume.BulkL3 > 0 && level >= schema.L3 && in.VolumeSoFar+1 >= rb.Volume.BulkL3
		if bulk && !a.BulkApproved && !in.ImportantApproved {
			return deny(RuleVolumeBulk, ReasonVolumeBulk)
		}
	}
	return Decision{Permit: true, Rule: RuleAgreementPermit, Reason: ReasonPermit, Level: level, Actions: actions}
}

// actionsFor returns what happens to every field of the record under the
// agreement, in field-name order, and the highest level of what is kept
// (LevelUnknown when nothing is).
func actionsFor(rb *Rulebook, a *Agreement, l schema.Labels, prev *Decision) ([]FieldAction, schema.Level) {
	if actions, level, ok := sameActions(l, prev); ok {
		return actions, level
	}
	w := actionWalk{
		identity: rb.identity(a.Purpose), mayClear: rb.mayClear(a.Purpose), agreed: a.RecordTypes[l.Type], a: a, subjectKey: l.SubjectKey,
		actions: make([]FieldAction, 0, l.NumFields()), level: schema.LevelUnknown,
	}
	// The record's fields come sorted; when the agreement lists its fields
	// sorted too (a node sorts a copy for a run of decisions), one walk
	// over both finds the agreed ones.
	w.merge = slices.IsSorted(w.agreed)
	if t, fls, has, ok := l.Positions(); ok {
		// Labels from ClassifyRow: by position, without a call per field.
		for _, i := range t.SortedIndex() {
			if has[i] {
				w.field(t.FieldName(i), &fls[i])
			}
		}
	} else {
		for name, fl := range l.Sorted() {
			w.field(name, &fl)
		}
	}
	return w.actions, w.level
}

// sameActions returns prev's actions, and the highest level of what they
// keep of l, when l labels a record with the fields prev decided on. A
// field's action depends on its name, the agreement, the rulebook, the
// type's subject key and whether the field is a direct identifier; the
// caller vouches for all but the last two being the same (Input.Previous),
// and for labels from the standard those follow from the type.
func sameActions(l schema.Labels, prev *Decision) ([]FieldAction, schema.Level, bool) {
	if prev == nil || !prev.Permit {
		return nil, schema.LevelUnknown, false
	}
	t, fls, has, ok := l.Positions()
	if !ok {
		return nil, schema.LevelUnknown, false
	}
	level, k := schema.LevelUnknown, 0
	for _, i := range t.SortedIndex() {
		if !has[i] {
			continue
		}
		if k >= len(prev.Actions) || prev.Actions[k].Field != t.FieldName(i) {
			return nil, schema.LevelUnknown, false
		}
		if prev.Actions[k].Transform != TransformDrop {
			level = max(level, fls[i].Level)
		}
		k++
	}
	if k != len(prev.Actions) {
		return nil, schema.LevelUnknown, false
	}
	return prev.Actions, level, true
}

// actionWalk is actionsFor's walk over a record's fields in name order.
type actionWalk struct {
	identity   bool // direct identifiers leave in clear unless the agreement says otherwise
	mayClear   bool // the agreement may ask for them in clear
	agreed     []string
	merge      bool // agreed is sorted: walk it in step
	next       int  // agreed[next:] are the agreed fields not yet passed
	a          *Agreement
	subjectKey string
	actions    []FieldAction
	level      schema.Level
}

// field decides what happens to the next field, name, labelled fl.
func (w *actionWalk) field(name string, fl *schema.FieldLabel) {
	var isAgreed bool
	if w.merge {
		for w.next < len(w.agreed) && w.agreed[w.next] < name {
			w.next++
		}
		isAgreed = w.next < len(w.agreed) && w.agreed[w.next] == name
	} else {
		isAgreed = slices.Contains(w.agreed, name)
	}
	t := TransformDrop
	if isAgreed {
		var o Transform
		var ok bool
		if len(w.a.Transforms) > 0 {
			o, ok = w.a.Transforms[name]
		}
		if fl.DirectID || name == w.subjectKey {
			t = directTransform(w.identity, w.mayClear, o, ok)
		} else if t = TransformKeep; ok {
			t = o
		}
	}
	w.actions = append(w.actions, FieldAction{Field: name, Transform: t})
	if t != TransformDrop {
		w.level = max(w.level, fl.Level)
	}
}

// LeavingCategories returns the categories of the fields of a record that
// would leave under the agreement other than as tokens, sorted, each once:
// what a consent must cover. The node passes them to ConsentState.
func LeavingCategories(rb Rulebook, a *Agreement, l schema.Labels) []schema.Category {
	if a == nil {
		return nil
	}
	actions, _ := actionsFor(&rb, a, l, nil)
	var cats []schema.Category
	for _, act := range actions {
		if act.Transform == TransformDrop || act.Transform == TransformTokenise {
			continue
		}
		fl, _ := l.Field(act.Field)
		if c := fl.Category; !slices.Contains(cats, c) {
			cats = append(cats, c)
		}
	}
	slices.Sort(cats)
	return cats
}

// scopeCovers reports whether every field that leaves other than as a token
// has a category within scope (nil scope: every category). A field with no
// category (free text) is covered only by an unscoped consent.
func scopeCovers(scope []schema.Category, l schema.Labels, actions []FieldAction) bool {
	if scope == nil {
		return true
	}
	for _, act := range actions {
		if act.Transform == TransformDrop || act.Transform == TransformTokenise {
			continue
		}
		fl, _ := l.Field(act.Field)
		if c := fl.Category; c == schema.CategoryNone || !slices.Contains(scope, c) {
			return false
		}
	}
	return true
}

// directTransform is what becomes of a direct identifier (or the subject
// key) an agreement lists: under an identity purpose it leaves in clear
// unless the agreement says otherwise (override, when has); under any
// other it is tokenised per recipient. An agreement may narrow that to
// dropping, and ask for it in clear ("keep") only under a purpose the
// rulebook lets ask (mayClear: clear_identity_purposes).
func directTransform(identity, mayClear bool, override Transform, has bool) Transform {
	t := TransformTokenise
	if identity {
		t = TransformKeep
	}
	if has {
		t = override
	}
	if t != TransformDrop && !(identity || mayClear && t == TransformKeep) {
		t = TransformTokenise
	}
	return t
}
