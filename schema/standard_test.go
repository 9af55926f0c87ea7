package schema

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestDefaultStandard(t *testing.T) {
	std := Default()
	if got, want := std.Name(), "EDU-CN-DEFAULT v1"; got != want {
		t.Errorf("Name: got %q, want %q", got, want)
	}
	if got, want := std.Ref(), "EDU-CN-DEFAULT/1"; got != want {
		t.Errorf("Ref: got %q, want %q", got, want)
	}
	want := []string{"course", "course_grade", "digital_competency", "discipline", "employment", "enrollment", "financial_aid",
		"guardian", "health_record", "health_test", "program_participation", "staff", "student", "teacher_training", "xapi_statement"}
	if got := std.Types(); !slices.Equal(got, want) {
		t.Errorf("Types: got %q, want %q", got, want)
	}
	if std.MinorAge() != 14 {
		t.Errorf("MinorAge: got %d, want 14", std.MinorAge())
	}
	subjects := map[string]string{"student": "student_id", "guardian": "guardian_id", "staff": "staff_id", "course": "", "discipline": "student_id",
		"digital_competency": "student_id", "teacher_training": "staff_id", "xapi_statement": "actor_id"}
	for typ, want := range subjects {
		rt, ok := std.Type(typ)
		if !ok {
			t.Fatalf("Type(%s) missing", typ)
		}
		if got := rt.SubjectKey(); got != want {
			t.Errorf("%s subject key: got %q, want %q", typ, got, want)
		}
	}
	rt, _ := std.Type("course")
	if rt.Key() != "course_code" {
		t.Errorf("course key: got %q, want course_code", rt.Key())
	}
	st, _ := std.Type("student")
	if got, want := st.DirectIdentifiers(), []string{"student_id", "name", "id_number", "exam_number"}; !slices.Equal(got, want) {
		t.Errorf("student direct identifiers: got %q, want %q", got, want)
	}
	if got := len(st.Fields()); got != 26 {
		t.Errorf("student fields: got %d, want 26", got)
	}
	f, ok := st.Field("notes")
	if !ok || !f.Text || f.Category != CategoryNone || f.Level != L3 {
		t.Errorf("student.notes: got %+v", f)
	}
	for name, want := range map[string]Level{"cn_resident_id": L3, "cn_mobile": L3, "bank_card": L4, "email": L3, "cn_passport": L3, "health_terms": L4} {
		if got, ok := std.DetectorLevel(name); !ok || got != want {
			t.Errorf("detector %s: got %v %v, want %v", name, got, ok, want)
		}
	}
	vr := std.VolumeRules()
	if len(vr) != 4 || vr[0] != (VolumeRule{"V1", L3, 1000, LevelUnknown}) || vr[1] != (VolumeRule{"V2", L4, 10000, IMP}) ||
		vr[2] != (VolumeRule{"V2", L3, 100000, IMP}) || vr[3] != (VolumeRule{"V3", L1, 1000000, IMP}) {
		t.Errorf("volume rules: got %+v", vr)
	}
	// Every field of GRADING.md §3 that is L4 in the text is L4 here.
	for _, c := range []struct{ typ, field string }{
		{"student", "religion"}, {"student", "health_status"}, {"course_grade", "misconduct"},
		{"financial_aid", "bank_card_no"}, {"financial_aid", "family_income_cny"}, {"employment", "classified_employer"},
		{"discipline", "action_length_days"}, {"staff", "social_security_no"}, {"health_test", "bmi"},
		{"health_record", "description"},
	} {
		rt, _ := std.Type(c.typ)
		if f, ok := rt.Field(c.field); !ok || f.Level != L4 {
			t.Errorf("%s.%s: got %+v, want L4", c.typ, c.field, f)
		}
	}
}

func TestLevel(t *testing.T) {
	for l := L1; l <= CORE; l++ {
		b, err := l.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Level
		if err := back.UnmarshalText(b); err != nil || back != l || string(b) != l.String() {
			t.Errorf("round trip %v: got %v %v", l, back, err)
		}
	}
	if _, err := LevelUnknown.MarshalText(); err == nil {
		t.Error("MarshalText(LevelUnknown): got nil error")
	}
	for _, s := range []string{"", "l1", "L5", "imp", "L0"} {
		if _, err := ParseLevel(s); err == nil {
			t.Errorf("ParseLevel(%q): got nil error", s)
		}
	}
	if !(LevelUnknown < L1 && L1 < L2 && L2 < L3 && L3 < L4 && L4 < IMP && IMP < CORE) {
		t.Error("levels out of order")
	}
	b, _ := json.Marshal(Summary{Level: IMP, Rules: []string{"V2"}})
	if got, want := string(b), `{"records":0,"invalid":0,"subjects":0,"level":"IMP","rules":["V2"]}`; got != want {
		t.Errorf("Summary JSON: got %s, want %s", got, want)
	}
}

func TestParseStandardErrors(t *testing.T) {
	birth := `{"name": "birth_date", "category": "DM", "level": "L3", "kind": "date"}`
	tests := []struct {
		name  string
		edits []string
		want  string
	}{
		{"unknown level", []string{birth, strings.Replace(birth, `"L3"`, `"L9"`, 1)},
			`parse standard: types.student.fields.birth_date: unknown level "L9"`},
		{"unknown category", []string{birth, strings.Replace(birth, `"DM"`, `"XX"`, 1)},
			`parse standard: types.student.fields.birth_date: unknown category "XX"`},
		{"unknown kind", []string{birth, strings.Replace(birth, `"date"`, `"datetime"`, 1)},
			`parse standard: types.student.fields.birth_date: unknown kind "datetime"`},
		{"no category on a non-text field", []string{birth, strings.Replace(birth, `"DM"`, `""`, 1)},
			`parse standard: types.student.fields.birth_date: only a text field may have no category`},
		{"duplicate field", []string{birth, birth + "," + birth},
			`parse standard: types.student.fields.birth_date: duplicate field`},
		{"rule value not in enum", []string{`"medical": {"category": "HL"`, `"surgical": {"category": "HL"`},
			`parse standard: types.course_grade.fields.deferral_reason_category.rules.surgical: value not among the enum's values`},
		{"unknown detector", []string{`"cn_mobile": {"level": "L3"}`, `"cn_landline": {"level": "L3"}`},
			`parse standard: detectors.cn_landline: unknown detector`},
		{"detector level", []string{`"cn_mobile": {"level": "L3"}`, `"cn_mobile": {"level": "high"}`},
			`parse standard: detectors.cn_mobile.level: unknown level "high"`},
		{"volume level", []string{`"min_level": "L4"`, `"min_level": "L7"`},
			`parse standard: volume[1].min_level: unknown level "L7"`},
		{"missing minor age", []string{`"minor_age": 14,`, ``},
			`parse standard: minor_age: missing`},
		{"key not required", []string{`{"name": "course_code", "category": "AC", "level": "L1", "required": true,`, `{"name": "course_code", "category": "AC", "level": "L1",`},
			`parse standard: types.course.fields.course_code: a key field must be a required string`},
		{"unknown member", []string{`"minor_age": 14,`, `"minor_age": 14, "minor_years": 14,`},
			`parse standard: json: unknown field "minor_years"`},
		{"reserved name", []string{birth, strings.Replace(birth, `"birth_date"`, `"type"`, 1)},
			`parse standard: types.student.fields.type: "type" is reserved for the record type`},
		{"slash in the name", []string{`"name": "EDU-CN-DEFAULT"`, `"name": "EDU/CN"`},
			`parse standard: name: may hold no "/" and no control character`},
		{"slash in the version", []string{`"version": "1"`, `"version": "1/2"`},
			`parse standard: version: may hold no "/" and no control character`},
		{"control character in the name", []string{`"name": "EDU-CN-DEFAULT"`, `"name": "EDU\tCN"`},
			`parse standard: name: may hold no "/" and no control character`},
		{"name and version too long", []string{`"name": "EDU-CN-DEFAULT"`, `"name": "` + strings.Repeat("N", 63) + `"`},
			`parse standard: name: name and version together longer than 63 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStandard(customStandard(t, tt.edits...))
			if err == nil {
				t.Fatalf("got nil error, want %s", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
		})
	}
	if _, err := ParseStandard([]byte("{")); err == nil {
		t.Error("truncated standard: got nil error")
	}
}

func TestCustomStandardAddsField(t *testing.T) {
	std, err := ParseStandard(customStandard(t,
		`"name": "EDU-CN-DEFAULT"`, `"name": "EDU-CN-PKU"`,
		`{"name": "dormitory", "category": "CT", "level": "L3", "kind": "string"},`,
		`{"name": "dormitory", "category": "CT", "level": "L3", "kind": "string"},
        {"name": "wechat_id", "category": "CT", "level": "L3", "kind": "string"},`))
	if err != nil {
		t.Fatal(err)
	}
	if got := std.Name(); got != "EDU-CN-PKU v1" {
		t.Errorf("Name: got %q", got)
	}
	if got := std.Ref(); got != "EDU-CN-PKU/1" {
		t.Errorf("Ref: got %q", got)
	}
	l, err := std.Classify(Record{Type: "student", Fields: map[string]any{"student_id": "S", "wechat_id": "wx"}}, date("2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fieldString(l.Fields["wechat_id"]); got != "CT L3" {
		t.Errorf("wechat_id: got %q, want CT L3", got)
	}
	if _, err := Default().Classify(Record{Type: "student", Fields: map[string]any{"student_id": "S", "wechat_id": "wx"}}, date("2026-01-01")); err == nil {
		t.Error("default standard accepted wechat_id")
	}
}
