package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func agreement() *Agreement {
	return &Agreement{
		ID: "ag", Provider: "uni-a", Recipient: "uni-b", Purpose: PurposeCreditTransfer, LegalBasis: BasisContract,
		RecordTypes: map[string][]string{"student": {"student_id", "name", "birth_date", "health_status"}},
		MaxLevel:    schema.L3, RetentionDays: 30,
		ValidFrom: now.Add(-24 * time.Hour), ValidUntil: now.Add(24 * time.Hour),
	}
}

func labels(level schema.Level, fields map[string]schema.FieldLabel, flags ...string) schema.Labels {
	return schema.Labels{Type: "student", Subject: "S1", SubjectKey: "student_id", Level: level, Flags: flags, Fields: fields}
}

var adult = map[string]schema.FieldLabel{
	"student_id": {Category: "ID", Level: schema.L2, DirectID: true},
	"name":       {Category: "ID", Level: schema.L2, DirectID: true},
	"birth_date": {Category: "DM", Level: schema.L3},
	"religion":   {Category: "DM", Level: schema.L4},
}

func TestDecide(t *testing.T) {
	minor := map[string]schema.FieldLabel{
		"student_id": {Category: "ID", Level: schema.L4, DirectID: true},
		"birth_date": {Category: "DM", Level: schema.L4},
	}
	health := map[string]schema.FieldLabel{
		"student_id":    {Category: "ID", Level: schema.L2, DirectID: true},
		"health_status": {Category: "HL", Level: schema.L4},
	}
	for _, tc := range []struct {
		name    string
		in      Input
		edit    func(*Agreement)
		permit  bool
		reason  Reason
		level   schema.Level
		actions map[string]Transform
	}{
		{name: "no agreement", in: Input{Labels: labels(schema.L3, adult)}, reason: ReasonNoAgreement},
		{name: "adult permitted, religion dropped, identifiers tokenised", in: Input{Labels: labels(schema.L4, adult)},
			permit: true, reason: ReasonPermit, level: schema.L3,
			actions: map[string]Transform{"student_id": TransformTokenise, "name": TransformTokenise, "birth_date": TransformKeep, "religion": TransformDrop}},
		{name: "identity purpose keeps identifiers", in: Input{Labels: labels(schema.L3, adult)},
			edit:   func(a *Agreement) { a.Purpose = PurposeEnrollmentVerification },
			permit: true, reason: ReasonPermit, level: schema.L3,
			actions: map[string]Transform{"student_id": TransformKeep, "name": TransformKeep}},
		{name: "generalise birth date", in: Input{Labels: labels(schema.L3, adult)},
			edit:   func(a *Agreement) { a.Transforms = map[string]Transform{"birth_date": TransformGeneraliseYear} },
			permit: true, reason: ReasonPermit, level: schema.L3, actions: map[string]Transform{"birth_date": TransformGeneraliseYear}},
		{name: "wrong recipient", in: Input{Labels: labels(schema.L3, adult), Recipient: "uni-c"}, reason: ReasonWrongParty},
		{name: "revoked", in: Input{Labels: labels(schema.L3, adult)}, edit: func(a *Agreement) { a.Revoked = true }, reason: ReasonAgreementRevoked},
		{name: "expired", in: Input{Labels: labels(schema.L3, adult)}, edit: func(a *Agreement) { a.ValidUntil = now }, reason: ReasonAgreementNotValid},
		{name: "not yet valid", in: Input{Labels: labels(schema.L3, adult)}, edit: func(a *Agreement) { a.ValidFrom = now.Add(time.Hour) }, reason: ReasonAgreementNotValid},
		{name: "type not agreed", in: Input{Labels: schema.Labels{Type: "course_grade", Level: schema.L1, Fields: adult}}, reason: ReasonTypeNotAgreed},
		{name: "nothing agreed present", in: Input{Labels: labels(schema.L4, map[string]schema.FieldLabel{"religion": {Level: schema.L4}})}, reason: ReasonNoAgreedFields},
		{name: "core", in: Input{Labels: labels(schema.CORE, adult)}, reason: ReasonCoreNeverLeaves},
		{name: "important", in: Input{Labels: labels(schema.IMP, map[string]schema.FieldLabel{"name": {Level: schema.IMP}})}, reason: ReasonImportantAggregate},
		{name: "minor without guardian consent", in: Input{Labels: labels(schema.L4, minor, "minor")}, reason: ReasonMinorNeedsGuardian},
		{name: "minor with own consent only", in: Input{Labels: labels(schema.L4, minor, "minor"), Consent: Consent{Granted: true}}, reason: ReasonMinorNeedsGuardian},
		{name: "minor, guardian consent, L4 over max", in: Input{Labels: labels(schema.L4, minor, "minor"), Consent: Consent{Granted: true, Guardian: true}}, reason: ReasonLevelAboveAgreement},
		{name: "minor, statutory duty, raw L4 allowed", in: Input{Labels: labels(schema.L4, minor, "minor")},
			edit:   func(a *Agreement) { a.LegalBasis, a.MaxLevel, a.AllowRawL4 = BasisStatutoryDuty, schema.L4, true },
			permit: true, reason: ReasonPermit, level: schema.L4},
		{name: "L4 above max level", in: Input{Labels: labels(schema.L4, health)}, reason: ReasonLevelAboveAgreement},
		{name: "L4 without raw allowance", in: Input{Labels: labels(schema.L4, health)}, edit: func(a *Agreement) { a.MaxLevel = schema.L4 }, reason: ReasonSensitiveNotRaw},
		{name: "L4 raw without consent or duty", in: Input{Labels: labels(schema.L4, health)},
			edit: func(a *Agreement) { a.MaxLevel, a.AllowRawL4 = schema.L4, true }, reason: ReasonSensitiveNeedsBasis},
		{name: "L4 raw with separate consent", in: Input{Labels: labels(schema.L4, health), Consent: Consent{Granted: true}},
			edit:   func(a *Agreement) { a.MaxLevel, a.AllowRawL4 = schema.L4, true },
			permit: true, reason: ReasonPermit, level: schema.L4},
		{name: "consent basis without consent", in: Input{Labels: labels(schema.L3, adult)}, edit: func(a *Agreement) { a.LegalBasis = BasisConsent }, reason: ReasonConsentMissing},
		{name: "consent basis with consent", in: Input{Labels: labels(schema.L3, adult), Consent: Consent{Granted: true}},
			edit: func(a *Agreement) { a.LegalBasis = BasisConsent }, permit: true, reason: ReasonPermit, level: schema.L3},
		{name: "max level L2 refuses birth date", in: Input{Labels: labels(schema.L3, adult)}, edit: func(a *Agreement) { a.MaxLevel = schema.L2 }, reason: ReasonLevelAboveAgreement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Provider, in.Now = "uni-a", now
			if in.Recipient == "" {
				in.Recipient = "uni-b"
			}
			if tc.reason != ReasonNoAgreement {
				in.Agreement = agreement()
				if tc.edit != nil {
					tc.edit(in.Agreement)
				}
			}
			d := Decide(DefaultRulebook(), in)
			if d.Permit != tc.permit || d.Reason != tc.reason || d.Rule == "" {
				t.Fatalf("got permit=%v reason=%s rule=%q, want permit=%v reason=%s", d.Permit, d.Reason, d.Rule, tc.permit, tc.reason)
			}
			if tc.permit && d.Level != tc.level {
				t.Errorf("level: got %s, want %s", d.Level, tc.level)
			}
			got := map[string]Transform{}
			for _, a := range d.Actions {
				got[a.Field] = a.Transform
			}
			for f, want := range tc.actions {
				if got[f] != want {
					t.Errorf("field %s: got %q, want %q", f, got[f], want)
				}
			}
		})
	}
}

func TestApply(t *testing.T) {
	rec := schema.Record{Type: "student", Fields: map[string]any{
		"student_id": "S1", "name": "张三", "birth_date": "2001-05-06", "religion": "x"}}
	d := Decision{Permit: true, Actions: []FieldAction{
		{"student_id", TransformTokenise}, {"name", TransformKeep}, {"birth_date", TransformGeneraliseYear}, {"religion", TransformDrop}}}
	out := Apply(rec, d, func(v string) string { return "tk(" + v + ")" })
	want := map[string]any{"student_id": "tk(S1)", "name": "张三", "birth_date": "2001"}
	if len(out) != len(want) {
		t.Fatalf("got %v, want %v", out, want)
	}
	for k, v := range want {
		if out[k] != v {
			t.Errorf("%s: got %v, want %v", k, out[k], v)
		}
	}
	if rec.Fields["student_id"] != "S1" {
		t.Error("Apply modified its input")
	}
}

func TestAgreementValidation(t *testing.T) {
	std := schema.Default()
	if err := agreement().Validate(std); err != nil {
		t.Fatalf("valid agreement refused: %v", err)
	}
	for _, tc := range []struct {
		want string
		edit func(*Agreement)
	}{
		{"purpose", func(a *Agreement) { a.Purpose = "marketing" }},
		{"legal_basis", func(a *Agreement) { a.LegalBasis = "whim" }},
		{"record_types.pets", func(a *Agreement) { a.RecordTypes["pets"] = []string{"x"} }},
		{"unknown field", func(a *Agreement) { a.RecordTypes["student"] = append(a.RecordTypes["student"], "shoe_size") }},
		{"max_level", func(a *Agreement) { a.MaxLevel = schema.IMP }},
		{"valid_until", func(a *Agreement) { a.ValidUntil = a.ValidFrom }},
		{"recipient", func(a *Agreement) { a.Recipient = a.Provider }},
		{"transforms.name", func(a *Agreement) { a.Transforms = map[string]Transform{"name": "shuffle"} }},
	} {
		a := agreement()
		tc.edit(a)
		err := a.Validate(std)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
