package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// The decision table itself lives in testdata/decisions (vectors_test.go).

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func agreement() *Agreement {
	return &Agreement{
		ID: "ag", Provider: "uni-a", Recipient: "uni-b", Purpose: PurposeCreditTransfer, LegalBasis: BasisContract,
		RecordTypes: map[string][]string{"student": {"student_id", "name", "birth_date", "health_status"}},
		MaxLevel:    schema.L3, RetentionDays: 30,
		ValidFrom: now.Add(-24 * time.Hour), ValidUntil: now.Add(24 * time.Hour),
	}
}

var adult = map[string]schema.FieldLabel{
	"student_id": {Category: "ID", Level: schema.L2, DirectID: true},
	"name":       {Category: "ID", Level: schema.L2, DirectID: true},
	"birth_date": {Category: "DM", Level: schema.L3},
	"religion":   {Category: "DM", Level: schema.L4},
}

func TestApply(t *testing.T) {
	rec := schema.Record{Type: "student", Fields: map[string]any{
		"student_id": "S1", "name": "张三", "birth_date": "2001-05-06", "religion": "x"}}
	d := Decision{Permit: true, Actions: []FieldAction{
		{"student_id", TransformTokenise}, {"name", TransformKeep}, {"birth_date", TransformGeneraliseYear}, {"religion", TransformDrop}}}
	out := Apply(rec, d, testTokens{})
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
	// A number to tokenise is tokenised as its decimal text, as the wire
	// writes it: Apply reads back what AppendRecord writes.
	for _, v := range []any{int(20240001), float64(20240001), json.Number("20240001")} {
		rec.Fields["student_id"] = v
		if got := Apply(rec, d, testTokens{})["student_id"]; got != "tk(20240001)" {
			t.Errorf("student_id %T %v: tokenised as %v, want tk(20240001)", v, v, got)
		}
	}
}

// testTokens writes the token of v as tk(v).
type testTokens struct{}

func (testTokens) AppendToken(dst []byte, v string) []byte {
	return append(append(append(dst, "tk("...), v...), ')')
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
		{"id", func(a *Agreement) { a.ID = "" }},
		{"provider", func(a *Agreement) { a.Provider = "" }},
		{"purpose", func(a *Agreement) { a.Purpose = "marketing" }},
		{"legal_basis", func(a *Agreement) { a.LegalBasis = "whim" }},
		{"record_types.pets", func(a *Agreement) { a.RecordTypes["pets"] = []string{"x"} }},
		{"unknown field", func(a *Agreement) { a.RecordTypes["student"] = append(a.RecordTypes["student"], "shoe_size") }},
		{"named twice", func(a *Agreement) { a.RecordTypes["student"] = append(a.RecordTypes["student"], "name") }},
		{"max_level", func(a *Agreement) { a.MaxLevel = schema.CORE }},
		{"max_level", func(a *Agreement) { a.MaxLevel = schema.LevelUnknown }},
		{"retention_days", func(a *Agreement) { a.RetentionDays = 0 }},
		{"valid_until", func(a *Agreement) { a.ValidUntil = a.ValidFrom }},
		{"recipient", func(a *Agreement) { a.Recipient = a.Provider }},
		{"transforms.name", func(a *Agreement) { a.Transforms = map[string]Transform{"name": "shuffle"} }},
		{"transforms.gender: not an agreed field", func(a *Agreement) { a.Transforms = map[string]Transform{"gender": TransformDrop} }},
	} {
		a := agreement()
		tc.edit(a)
		err := a.Validate(std)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
	a := agreement()
	a.MaxLevel = schema.IMP
	if err := a.Validate(std); err != nil {
		t.Errorf("max_level IMP refused: %v", err)
	}
}

func TestLeavingCategories(t *testing.T) {
	l := schema.Labels{Type: "student", Subject: "S1", SubjectKey: "student_id", Fields: adult}
	a := agreement()
	got := LeavingCategories(DefaultRulebook(), a, l)
	if len(got) != 1 || got[0] != schema.CategoryDemographic {
		t.Errorf("credit transfer: got %v, want [DM] (identifiers tokenised, religion dropped)", got)
	}
	a.Purpose = PurposeEnrollmentVerification
	got = LeavingCategories(DefaultRulebook(), a, l)
	if len(got) != 2 || got[0] != schema.CategoryDemographic || got[1] != schema.CategoryIdentity {
		t.Errorf("identity purpose: got %v, want [DM ID]", got)
	}
	if LeavingCategories(DefaultRulebook(), nil, l) != nil {
		t.Error("no agreement: want nil")
	}
}

func BenchmarkDecide(b *testing.B) {
	rb := DefaultRulebook()
	in := Input{Provider: "uni-a", Recipient: "uni-b", RecipientRole: "university", Now: now, Agreement: agreement(),
		Labels: schema.Labels{Type: "student", Subject: "S1", SubjectKey: "student_id", Level: schema.L4, Fields: adult}}
	if d := Decide(rb, in); !d.Permit {
		b.Fatalf("benchmark input denied: %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		Decide(rb, in)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}
