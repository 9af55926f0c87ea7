package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkFieldLabels checks that l labels n fields, and each named in want
// as want says (fieldString).
func checkFieldLabels(t *testing.T, l Labels, n int, want map[string]string) {
	t.Helper()
	if len(l.Fields) != n {
		t.Errorf("fields: got %d labels, want %d", len(l.Fields), n)
	}
	for name, w := range want {
		fl, ok := l.Fields[name]
		if !ok {
			t.Errorf("field %s: missing", name)
			continue
		}
		if got := fieldString(fl); got != w {
			t.Errorf("field %s: got %q, want %q", name, got, w)
		}
	}
}

// fieldWant is a compact expected field label: "CAT LEVEL [direct] [det,det]".
func fieldString(fl FieldLabel) string {
	s := fmt.Sprintf("%s %s", fl.Category, fl.Level)
	if fl.DirectID {
		s += " direct"
	}
	if len(fl.Detectors) > 0 {
		s += " " + strings.Join(fl.Detectors, ",")
	}
	return s
}

func TestClassify(t *testing.T) {
	asOf := date("2026-11-23")
	adultID := residentID(t, "11010520000101123")
	minorID := residentID(t, "11010520150601123")
	tests := []struct {
		name      string
		rec       Record
		level     Level
		flags     []string
		rules     []string
		fields    map[string]string // subset of fields to check
		birthDate string
	}{
		{
			name: "adult student",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "2023010001", "name": "张三", "birth_date": "2000-01-01", "id_number": adultID, "gender": "男",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{
				"student_id": "ID L2 direct", "name": "ID L2 direct", "gender": "DM L2",
				"birth_date": "DM L3", "id_number": "ID L3 direct cn_resident_id",
			},
			birthDate: "2000-01-01",
		},
		{
			name: "minor by birth_date, one day before the 14th birthday",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S2", "name": "李四", "birth_date": "2012-11-24", "gender": "女",
			}},
			level: L4, flags: []string{"minor"}, rules: []string{"C1", "C3"},
			fields:    map[string]string{"student_id": "ID L4 direct", "gender": "DM L4", "birth_date": "DM L4"},
			birthDate: "2012-11-24",
		},
		{
			name: "14 on the birthday",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S3", "birth_date": "2012-11-23", "gender": "女",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields:    map[string]string{"student_id": "ID L2 direct", "gender": "DM L2"},
			birthDate: "2012-11-23",
		},
		{
			name: "minor by id_number",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S4", "id_type": "resident_id", "id_number": minorID, "nationality": "中国",
			}},
			level: L4, flags: []string{"minor"}, rules: []string{"C1", "C3"},
			fields:    map[string]string{"id_type": "ID L4", "id_number": "ID L4 direct cn_resident_id", "nationality": "DM L4"},
			birthDate: "2015-06-01",
		},
		{
			name: "passport id_number is not checked",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S5", "id_type": "passport", "id_number": "E12345678",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"id_number": "ID L3 direct"},
		},
		{
			name: "notes with a mobile number stay L3",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S6", "notes": "家长电话 13812345678",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"notes": " L3 cn_mobile"},
		},
		{
			name: "notes with a health term rise to L4 (C5)",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S7", "notes": "有抑郁病史，电话 13812345678",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C5"},
			fields: map[string]string{"notes": " L4 cn_mobile,health_terms"},
		},
		{
			name: "resident ID in a non-text field (C6); e-mail there is ignored",
			rec: Record{Type: "student", Fields: map[string]any{
				"student_id": "S8", "native_place": "北京 " + adultID, "nationality": "x@example.cn", "dormitory": "6222 0212 3456 7890 128",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C6"},
			fields: map[string]string{
				"native_place": "DM L3 cn_resident_id", "nationality": "DM L2", "dormitory": "CT L4 bank_card",
			},
		},
		{
			name: "staff work e-mail stays L1",
			rec: Record{Type: "staff", Fields: map[string]any{
				"staff_id": "T1", "name": "王老师", "work_email": "wang@example.edu.cn", "department": "数学系",
			}},
			level: L2, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"work_email": "CT L1", "name": "ID L1", "staff_id": "ID L2 direct"},
		},
		{
			name: "course_grade plain",
			rec: Record{Type: "course_grade", Fields: map[string]any{
				"student_id": "S9", "course_code": "MATH101", "course_name": "心理健康教育", "credits": json.Number("2"),
				"term": "2025-2026-1", "score": json.Number("91.5"), "rank": json.Number("3"), "retake": false,
				"deferral_reason_category": "none",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{
				"course_code": "AC L1", "course_name": "AC L1", "score": "AC L3", "retake": "AC L3",
				"deferral_reason_category": "AC L3", "student_id": "ID L2",
			},
		},
		{
			name: "course_grade medical deferral (C2)",
			rec: Record{Type: "course_grade", Fields: map[string]any{
				"student_id": "S10", "course_code": "MATH101", "deferral_reason_category": "medical",
				"comment": "缓考，附医院证明",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C2"},
			fields: map[string]string{"deferral_reason_category": "HL L4", "comment": " L3"},
		},
		{
			name: "course_grade comment with diagnosis (C5)",
			rec: Record{Type: "course_grade", Fields: map[string]any{
				"student_id": "S11", "comment": "Absent after surgery",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C5"},
			fields: map[string]string{"comment": " L4 health_terms"},
		},
		{
			name: "enrollment change for health",
			rec: Record{Type: "enrollment", Fields: map[string]any{
				"student_id": "S12", "institution_code": "10001", "change_reason_category": "health",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C2"},
			fields: map[string]string{"change_reason_category": "HL L4", "institution_code": "OR L1"},
		},
		{
			name: "enrollment change for discipline",
			rec: Record{Type: "enrollment", Fields: map[string]any{
				"student_id": "S13", "change_reason_category": "discipline",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C2"},
			fields: map[string]string{"change_reason_category": "DS L4"},
		},
		{
			name: "enrollment change for academic reasons",
			rec: Record{Type: "enrollment", Fields: map[string]any{
				"student_id": "S14", "change_reason_category": "academic",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"change_reason_category": "AC L3"},
		},
		{
			name: "program participation, migrant",
			rec: Record{Type: "program_participation", Fields: map[string]any{
				"student_id": "S15", "program_type": "migrant",
			}},
			level: L4, flags: []string{}, rules: []string{"C1", "C2"},
			fields: map[string]string{"program_type": "AC L4"},
		},
		{
			name: "program participation, other type",
			rec: Record{Type: "program_participation", Fields: map[string]any{
				"student_id": "S16", "program_type": "exchange",
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"program_type": "AC L3"},
		},
		{
			name: "course catalogue entry",
			rec: Record{Type: "course", Fields: map[string]any{
				"course_code": "PSY100", "course_name": "心理健康教育", "credits": json.Number("1"),
				"description": "Introduction to mental health and wellbeing",
			}},
			level: L1, flags: []string{}, rules: []string{"C1"},
			fields: map[string]string{"course_code": "AC L1", "course_name": "AC L1", "description": "AC L1"},
		},
		{
			name: "guardian",
			rec: Record{Type: "guardian", Fields: map[string]any{
				"guardian_id": "G1", "student_id": "S1", "relation": "母亲", "id_number": adultID, "lives_with_student": true,
			}},
			level: L3, flags: []string{}, rules: []string{"C1"},
			fields:    map[string]string{"guardian_id": "ID L2 direct", "student_id": "ID L2", "lives_with_student": "FM L2"},
			birthDate: "2000-01-01",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Default().Classify(tt.rec, asOf)
			if err != nil {
				t.Fatalf("Classify: %v", err)
			}
			if l.Level != tt.level {
				t.Errorf("level: got %v, want %v", l.Level, tt.level)
			}
			if !slices.Equal(l.Flags, tt.flags) || l.Flags == nil {
				t.Errorf("flags: got %q, want %q", l.Flags, tt.flags)
			}
			if !slices.Equal(l.Rules, tt.rules) {
				t.Errorf("rules: got %q, want %q", l.Rules, tt.rules)
			}
			checkFieldLabels(t, l, len(tt.rec.Fields), tt.fields)
			var gotBirth string
			if !l.BirthDate.IsZero() {
				gotBirth = l.BirthDate.Format(time.DateOnly)
			}
			if gotBirth != tt.birthDate {
				t.Errorf("birth date: got %q, want %q", gotBirth, tt.birthDate)
			}
		})
	}
}

func TestClassifySubjectAndID(t *testing.T) {
	std := Default()
	l, err := std.Classify(Record{Type: "course", Fields: map[string]any{"course_code": "C1"}}, date("2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subject != "" || l.SubjectKey != "" || l.ID != "C1" {
		t.Errorf("course: got subject %q key %q id %q, want \"\" \"\" C1", l.Subject, l.SubjectKey, l.ID)
	}
	l, err = std.Classify(Record{Type: "enrollment", Fields: map[string]any{"student_id": "S1"}}, date("2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subject != "S1" || l.SubjectKey != "student_id" || l.ID != "S1" {
		t.Errorf("enrollment: got subject %q key %q id %q, want S1 student_id S1", l.Subject, l.SubjectKey, l.ID)
	}
}

func TestUnder14(t *testing.T) {
	std := Default()
	tests := []struct {
		birth, asOf string
		want        bool
	}{
		{"2012-11-24", "2026-11-23", true},
		{"2012-11-23", "2026-11-23", false},
		{"2012-11-23", "2026-11-22", true},
		{"2012-02-29", "2026-02-28", true},  // 14th birthday falls on 1 March 2026
		{"2012-02-29", "2026-03-01", false}, //
		{"2012-02-29", "2024-02-29", true},
		{"2000-01-01", "2026-11-23", false},
		{"2030-01-01", "2026-11-23", true}, // born after asOf: protective
	}
	for _, tt := range tests {
		y, m, d, _ := parseDate(tt.birth)
		if got := std.under(y, m, d, date(tt.asOf)); got != tt.want {
			t.Errorf("under(%s, %s) = %v, want %v", tt.birth, tt.asOf, got, tt.want)
		}
	}
	if got := std.under(2020, 1, 1, time.Time{}); got {
		t.Errorf("under with zero asOf = true, want false")
	}
}

func TestValidation(t *testing.T) {
	asOf := date("2026-01-01")
	tests := []struct {
		name   string
		rec    Record
		field  string
		reason string
	}{
		{"unknown type", Record{Type: "alien", Fields: map[string]any{"x": "1"}}, "type", ReasonUnknownType},
		{"unknown field", Record{Type: "student", Fields: map[string]any{"student_id": "S", "nickname": "x", "zz": "y"}}, "nickname", ReasonUnknownField},
		{"missing subject key", Record{Type: "student", Fields: map[string]any{"name": "x"}}, "student_id", ReasonRequired},
		{"empty subject key", Record{Type: "student", Fields: map[string]any{"student_id": ""}}, "student_id", ReasonRequired},
		{"null subject key", Record{Type: "course_grade", Fields: map[string]any{"student_id": nil}}, "student_id", ReasonRequired},
		{"missing course_code", Record{Type: "course", Fields: map[string]any{"course_name": "x"}}, "course_code", ReasonRequired},
		{"number for string", Record{Type: "student", Fields: map[string]any{"student_id": json.Number("2023")}}, "student_id", ReasonType},
		{"string for bool", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "retake": "yes"}}, "retake", ReasonType},
		{"fraction for integer", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "rank": json.Number("1.5")}}, "rank", ReasonType},
		{"string for number", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "score": "90"}}, "score", ReasonType},
		{"object for string", Record{Type: "student", Fields: map[string]any{"student_id": "S", "name": map[string]any{}}}, "name", ReasonType},
		{"impossible date", Record{Type: "student", Fields: map[string]any{"student_id": "S", "birth_date": "2023-02-30"}}, "birth_date", ReasonDate},
		{"date format", Record{Type: "student", Fields: map[string]any{"student_id": "S", "birth_date": "2023/01/01"}}, "birth_date", ReasonDate},
		{"negative amount", Record{Type: "financial_aid", Fields: map[string]any{"student_id": "S", "amount_cny": json.Number("-5")}}, "amount_cny", ReasonNegative},
		{"negative float amount", Record{Type: "financial_aid", Fields: map[string]any{"student_id": "S", "loan_amount_cny": -0.5}}, "loan_amount_cny", ReasonNegative},
		{"enum", Record{Type: "student", Fields: map[string]any{"student_id": "S", "id_type": "driver_license"}}, "id_type", ReasonEnum},
		{"enum health_record kind", Record{Type: "health_record", Fields: map[string]any{"student_id": "S", "kind": "surgery"}}, "kind", ReasonEnum},
		{"checksum", Record{Type: "student", Fields: map[string]any{"student_id": "S", "id_number": badResidentID(t, "11010520000101123")}}, "id_number", ReasonChecksum},
		{"checksum with id_type resident_id", Record{Type: "student", Fields: map[string]any{"student_id": "S", "id_type": "resident_id", "id_number": badResidentID(t, "11010520000101123")}}, "id_number", ReasonChecksum},
		{"impossible date in id", Record{Type: "student", Fields: map[string]any{"student_id": "S", "id_number": residentID(t, "11010520230230123")}}, "id_number", ReasonChecksum},
		{"short id", Record{Type: "student", Fields: map[string]any{"student_id": "S", "id_number": "110105200001"}}, "id_number", ReasonChecksum},
		{"guardian checksum", Record{Type: "guardian", Fields: map[string]any{"guardian_id": "G", "id_number": badResidentID(t, "11010519800101123")}}, "id_number", ReasonChecksum},
		{"staff checksum", Record{Type: "staff", Fields: map[string]any{"staff_id": "T", "id_number": badResidentID(t, "11010519800101123")}}, "id_number", ReasonChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Default().Classify(tt.rec, asOf)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got error %v, want *ValidationError", err)
			}
			if ve.Field != tt.field || ve.Reason != tt.reason {
				t.Errorf("got {%s %s}, want {%s %s}", ve.Field, ve.Reason, tt.field, tt.reason)
			}
			if l.Fields != nil || l.Level != LevelUnknown {
				t.Errorf("got labels %+v, want zero", l)
			}
			// The message names the field and the reason, never a value.
			for _, v := range tt.rec.Fields {
				if s, ok := v.(string); ok && len(s) > 1 && strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains a value", err)
				}
			}
		})
	}
}

func TestAppendJSON(t *testing.T) {
	id := residentID(t, "11010520000101123")
	rec := Record{Type: "student", Fields: map[string]any{
		"student_id": "2023010001", "id_number": id, "birth_date": "2000-01-01",
	}}
	l, err := Default().Classify(rec, date("2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(l.AppendJSON(nil, 0, l.ID))
	want := `{"index":0,"id":"2023010001","type":"student","level":"L3","flags":[],"rules":["C1"],` +
		`"fields":{"student_id":{"category":"ID","level":"L2","direct_id":true},` +
		`"birth_date":{"category":"DM","level":"L3"},` +
		`"id_number":{"category":"ID","level":"L3","direct_id":true,"detectors":["cn_resident_id"]}}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// Escaping, and labels whose fields are not the type's.
	l2 := Labels{Type: "x\"y", Level: L2, Fields: map[string]FieldLabel{"b\n": {Category: "ID", Level: L2}, "a": {Level: L3, Text: true}}, typ: l.typ}
	got = string(l2.AppendJSON([]byte("prefix "), 7, "id\x01\xff\u2028"))
	want = `prefix {"index":7,"id":"id\u0001\ufffd\u2028","type":"x\"y","level":"L2","flags":[],"rules":[],` +
		`"fields":{"a":{"category":"","level":"L3"},"b\n":{"category":"ID","level":"L2"}}}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(strings.TrimPrefix(got, "prefix "))) {
		t.Errorf("not valid JSON: %s", got)
	}

	ve := &ValidationError{Field: "id_number", Reason: ReasonChecksum}
	if got, want := string(ve.AppendJSON(nil, 3)), `{"index":3,"error":{"field":"id_number","reason":"checksum"}}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got, want := ve.Error(), `invalid record: field "id_number": checksum`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// customStandard returns the default standard's file with edits applied.
func customStandard(t *testing.T, edits ...string) []byte {
	t.Helper()
	s := string(DefaultJSON())
	for i := 0; i < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("edit %q not found", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	return []byte(s)
}

func TestMinorExemptions(t *testing.T) {
	// A custom standard adds an institution field and a catalogue field to
	// student; C3 leaves both alone.
	data := customStandard(t,
		`{"name": "notes", "category": "", "level": "L3", "text": true, "kind": "string"}`,
		`{"name": "notes", "category": "", "level": "L3", "text": true, "kind": "string"},
        {"name": "school_code", "category": "OR", "level": "L1", "kind": "string"},
        {"name": "major_code", "category": "AC", "level": "L1", "kind": "string"},
        {"name": "enrolled", "category": "AC", "level": "L2", "kind": "bool"}`)
	std, err := ParseStandard(data)
	if err != nil {
		t.Fatal(err)
	}
	l, err := std.Classify(Record{Type: "student", Fields: map[string]any{
		"student_id": "S", "birth_date": "2015-01-01", "school_code": "10001", "major_code": "080901", "enrolled": true,
	}}, date("2026-01-01"))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"school_code": "OR L1", "major_code": "AC L1", "enrolled": "AC L4", "student_id": "ID L4 direct"} {
		if got := fieldString(l.Fields[name]); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if !slices.Equal(l.Flags, []string{"minor"}) {
		t.Errorf("flags: got %q, want [minor]", l.Flags)
	}
}

// TestFlags: a flag field (misconduct, disability, a special status)
// takes true, false or a string saying what; each is classified at the
// field's declared level, a string raised further by what it holds; any
// other value is a type error. CSV cells become booleans where they say
// true or false.
func TestFlags(t *testing.T) {
	asOf := date("2026-01-01")
	for _, c := range []struct {
		name  string
		rec   Record
		field string
		level Level
		err   string
	}{
		{"misconduct true", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "misconduct": true}}, "misconduct", L4, ""},
		{"misconduct false", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "misconduct": false}}, "misconduct", L4, ""},
		{"misconduct said", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "misconduct": "cheating"}}, "misconduct", L4, ""},
		{"disability true", Record{Type: "student", Fields: map[string]any{"student_id": "S", "disability": true}}, "disability", L4, ""},
		{"special status true", Record{Type: "financial_aid", Fields: map[string]any{"student_id": "S", "special_status": true}}, "special_status", L4, ""},
		{"misconduct a number", Record{Type: "course_grade", Fields: map[string]any{"student_id": "S", "misconduct": json.Number("1")}}, "misconduct", 0, ReasonType},
	} {
		l, err := Default().Classify(c.rec, asOf)
		if c.err != "" {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != c.field || ve.Reason != c.err {
				t.Errorf("%s: %v; want %s/%s", c.name, err, c.field, c.err)
			}
			continue
		}
		if err != nil || l.Fields[c.field].Level != c.level {
			t.Errorf("%s: %v, %+v; want %s at %s", c.name, err, l.Fields[c.field], c.field, c.level)
		}
	}
	r, err := NewCSVReader(Default(), strings.NewReader("student_id,misconduct\nS1,true\nS2,0\nS3,plagiarism\n"), "course_grade")
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(t, r)
	if err != nil || len(got) != 3 {
		t.Fatalf("csv: %+v, %v", got, err)
	}
	for i, want := range []any{true, false, "plagiarism"} {
		if v := got[i].rec.Fields["misconduct"]; v != want {
			t.Errorf("csv row %d: misconduct %#v, want %#v", i+1, v, want)
		}
	}
}
