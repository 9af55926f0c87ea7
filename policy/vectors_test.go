package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// vectorFile is the format of testdata/decisions/*.json (see its comment).
type vectorFile struct {
	Comment []string `json:"comment"`
	Base    struct {
		Now           time.Time       `json:"now"`
		Provider      string          `json:"provider"`
		Recipient     string          `json:"recipient"`
		RecipientRole string          `json:"recipient_role"`
		Agreement     json.RawMessage `json:"agreement"`
	} `json:"base"`
	FieldSets map[string]map[string]vectorField `json:"field_sets"`
	Vectors   []vector                          `json:"vectors"`
}

type vectorField struct {
	Category schema.Category `json:"category"`
	Level    schema.Level    `json:"level"`
	Direct   bool            `json:"direct"`
}

type vector struct {
	Name   string `json:"name"`
	Labels struct {
		Type       *string                `json:"type"`
		Subject    *string                `json:"subject"`
		SubjectKey *string                `json:"subject_key"`
		Level      schema.Level           `json:"level"`
		Flags      []string               `json:"flags"`
		FieldsSet  string                 `json:"fields_set"`
		Fields     map[string]vectorField `json:"fields"`
	} `json:"labels"`
	NoAgreement   bool                       `json:"no_agreement"`
	Agreement     map[string]json.RawMessage `json:"agreement"`
	Rulebook      json.RawMessage            `json:"rulebook"`
	Provider      *string                    `json:"provider"`
	Recipient     *string                    `json:"recipient"`
	RecipientRole *string                    `json:"recipient_role"`
	Consent       *struct {
		Granted  bool              `json:"granted"`
		Guardian bool              `json:"guardian"`
		Scope    []schema.Category `json:"scope"`
	} `json:"consent"`
	ConsentRecords    []json.RawMessage `json:"consent_records"`
	VolumeSoFar       int               `json:"volume_so_far"`
	SensitiveSoFar    int               `json:"sensitive_so_far"`
	SubjectsSoFar     int               `json:"subjects_so_far"`
	ImportantApproved bool              `json:"important_approved"`
	Now               *time.Time        `json:"now"`
	Want              struct {
		Permit  bool                 `json:"permit"`
		Reason  Reason               `json:"reason"`
		Rule    string               `json:"rule"`
		Level   schema.Level         `json:"level"`
		Actions map[string]Transform `json:"actions"`
	} `json:"want"`
}

func loadVectors(t testing.TB) (files []string, vfs []vectorFile) {
	t.Helper()
	files, err := filepath.Glob("testdata/decisions/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no decision vectors: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var vf vectorFile
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&vf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vfs = append(vfs, vf)
	}
	return files, vfs
}

// build turns a vector into the rulebook and input it describes.
func (vf *vectorFile) build(v *vector) (Rulebook, Input, error) {
	rb := DefaultRulebook()
	if v.Rulebook != nil {
		var err error
		if rb, err = ParseRulebook(v.Rulebook); err != nil {
			return rb, Input{}, err
		}
	}
	in := Input{
		Provider: vf.Base.Provider, Recipient: vf.Base.Recipient, RecipientRole: vf.Base.RecipientRole,
		Now: vf.Base.Now, VolumeSoFar: v.VolumeSoFar, SensitiveSoFar: v.SensitiveSoFar,
		SubjectsSoFar: v.SubjectsSoFar, ImportantApproved: v.ImportantApproved,
	}
	for dst, src := range map[*string]*string{&in.Provider: v.Provider, &in.Recipient: v.Recipient, &in.RecipientRole: v.RecipientRole} {
		if src != nil {
			*dst = *src
		}
	}
	if v.Now != nil {
		in.Now = *v.Now
	}

	l := schema.Labels{Type: "student", Subject: "S1", SubjectKey: "student_id", Flags: v.Labels.Flags, Fields: map[string]schema.FieldLabel{}}
	for dst, src := range map[*string]*string{&l.Type: v.Labels.Type, &l.Subject: v.Labels.Subject, &l.SubjectKey: v.Labels.SubjectKey} {
		if src != nil {
			*dst = *src
		}
	}
	if v.Labels.FieldsSet != "" {
		set, ok := vf.FieldSets[v.Labels.FieldsSet]
		if !ok {
			return rb, in, fmt.Errorf("unknown field set %q", v.Labels.FieldsSet)
		}
		for n, f := range set {
			l.Fields[n] = schema.FieldLabel{Category: f.Category, Level: f.Level, DirectID: f.Direct}
		}
	}
	for n, f := range v.Labels.Fields {
		l.Fields[n] = schema.FieldLabel{Category: f.Category, Level: f.Level, DirectID: f.Direct}
	}
	l.Level = v.Labels.Level
	if l.Level == schema.LevelUnknown {
		for _, f := range l.Fields {
			l.Level = max(l.Level, f.Level)
		}
	}
	in.Labels = l

	if !v.NoAgreement {
		var base map[string]json.RawMessage
		if err := json.Unmarshal(vf.Base.Agreement, &base); err != nil {
			return rb, in, fmt.Errorf("base agreement: %w", err)
		}
		maps.Copy(base, v.Agreement)
		b, _ := json.Marshal(base)
		in.Agreement = new(Agreement)
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(in.Agreement); err != nil {
			return rb, in, fmt.Errorf("agreement: %w", err)
		}
	}

	switch {
	case v.Consent != nil && v.ConsentRecords != nil:
		return rb, in, fmt.Errorf("consent and consent_records are exclusive")
	case v.Consent != nil:
		in.Consent = Consent{Granted: v.Consent.Granted, Guardian: v.Consent.Guardian, Scope: v.Consent.Scope}
	case v.ConsentRecords != nil:
		var recs []ConsentRecord
		for i, raw := range v.ConsentRecords {
			c, err := ParseConsent(raw)
			if err != nil {
				return rb, in, fmt.Errorf("consent_records[%d]: %w", i, err)
			}
			recs = append(recs, c)
		}
		var purpose Purpose
		if in.Agreement != nil {
			purpose = in.Agreement.Purpose
		}
		cats := LeavingCategories(rb, in.Agreement, l)
		in.Consent = ConsentState(recs, l.Subject, purpose, in.Recipient, cats, in.Now)
	}
	return rb, in, nil
}

func TestDecisionVectors(t *testing.T) {
	files, vfs := loadVectors(t)
	total := 0
	for i, vf := range vfs {
		var base Agreement
		if err := json.Unmarshal(vf.Base.Agreement, &base); err != nil {
			t.Fatalf("%s: base agreement: %v", files[i], err)
		}
		if err := base.Validate(schema.Default()); err != nil {
			t.Fatalf("%s: base agreement does not validate: %v", files[i], err)
		}
		names := map[string]bool{}
		for _, v := range vf.Vectors {
			total++
			if names[v.Name] {
				t.Errorf("%s: vector name %q used twice", files[i], v.Name)
			}
			names[v.Name] = true
			t.Run(v.Name, func(t *testing.T) {
				rb, in, err := vf.build(&v)
				if err != nil {
					t.Fatalf("bad vector: %v", err)
				}
				d := Decide(rb, in)
				got := fmt.Sprintf("permit=%v reason=%s rule=%s", d.Permit, d.Reason, d.Rule)
				want := fmt.Sprintf("permit=%v reason=%s rule=%s", v.Want.Permit, v.Want.Reason, v.Want.Rule)
				if d.Permit {
					got += " level=" + d.Level.String()
					want += " level=" + v.Want.Level.String()
				}
				if got != want {
					t.Fatalf("\n got: %s\nwant: %s", got, want)
				}
				if !slices.Contains(Reasons(), d.Reason) || !slices.Contains(Rules(), d.Rule) {
					t.Errorf("reason %q or rule %q missing from Reasons()/Rules()", d.Reason, d.Rule)
				}
				if !d.Permit && (d.Actions != nil || d.Level != schema.LevelUnknown) {
					t.Errorf("a denial carries actions %v or level %s", d.Actions, d.Level)
				}
				if v.Want.Actions != nil {
					gotActions := map[string]Transform{}
					for _, a := range d.Actions {
						gotActions[a.Field] = a.Transform
					}
					if !maps.Equal(gotActions, v.Want.Actions) {
						t.Errorf("actions\n got: %v\nwant: %v", gotActions, v.Want.Actions)
					}
				}
				// Decide is pure: the same input gives the same decision.
				if again := Decide(rb, in); fmt.Sprint(again) != fmt.Sprint(d) {
					t.Errorf("second call differs: %+v vs %+v", again, d)
				}
				// The agreement's field lists sorted (the walk in step with
				// the record's sorted fields) and reversed (the search of
				// an unsorted list) decide the same.
				if in.Agreement != nil {
					for _, order := range []func([]string){slices.Sort[[]string], slices.Reverse[[]string]} {
						a := *in.Agreement
						a.RecordTypes = map[string][]string{}
						for typ, fields := range in.Agreement.RecordTypes {
							a.RecordTypes[typ] = slices.Clone(fields)
							order(a.RecordTypes[typ])
						}
						in2 := in
						in2.Agreement = &a
						if again := Decide(rb, in2); fmt.Sprint(again) != fmt.Sprint(d) {
							t.Errorf("with the agreement's fields reordered: %+v vs %+v", again, d)
						}
					}
				}
			})
		}
	}
	if total < 40 {
		t.Errorf("%d decision vectors, want at least 40", total)
	}
}

// TestVectorsCoverEveryReason: every reason code and every rule id is
// exercised by at least one vector.
func TestVectorsCoverEveryReason(t *testing.T) {
	_, vfs := loadVectors(t)
	reasons, rules := map[Reason]bool{}, map[string]bool{}
	for _, vf := range vfs {
		for _, v := range vf.Vectors {
			reasons[v.Want.Reason] = true
			rules[v.Want.Rule] = true
		}
	}
	for _, r := range Reasons() {
		if !reasons[r] {
			t.Errorf("no vector expects reason %q", r)
		}
	}
	for _, r := range Rules() {
		if !rules[r] {
			t.Errorf("no vector expects rule %q", r)
		}
	}
}
