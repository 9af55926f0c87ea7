package schema

import (
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
)

// TestClassifyLearningTypes classifies records of digital_competency,
// teacher_training and xapi_statement: every field's category and level,
// the value rules (C2), free text (C5) and detectors elsewhere (C6).
func TestClassifyLearningTypes(t *testing.T) {
	asOf := date("2026-11-23")
	tests := []struct {
		name   string
		rec    Record
		level  Level
		rules  []string
		fields map[string]string
	}{
		{
			name: "digital competency, every field",
			rec: Record{Type: "digital_competency", Fields: map[string]any{
				"student_id": "2023010001", "assessment_name": "中小学生数字素养测评", "framework": "DigComp 2.2",
				"domain": "information_literacy", "term": "2026-1", "assessment_date": "2026-06-10",
				"score": json.Number("82.5"), "max_score": json.Number("100"), "proficiency_level": "intermediate",
				"passed": true, "accommodation_category": "none", "comment": "独立完成",
			}},
			level: L3, rules: []string{"C1"},
			fields: map[string]string{
				"student_id": "ID L2", "assessment_name": "AC L1", "framework": "AC L1", "domain": "AC L1", "term": "AC L1",
				"assessment_date": "AC L2", "score": "AC L3", "max_score": "AC L1", "proficiency_level": "AC L3",
				"passed": "AC L3", "accommodation_category": "AC L3", "comment": " L3",
			},
		},
		{
			name: "digital competency, catalogue fields only",
			rec: Record{Type: "digital_competency", Fields: map[string]any{
				"student_id": "S1", "framework": "DigComp 2.2", "domain": "safety",
			}},
			level: L2, rules: []string{"C1"},
			fields: map[string]string{"student_id": "ID L2", "framework": "AC L1", "domain": "AC L1"},
		},
		{
			name: "digital competency, accommodation for a disability",
			rec: Record{Type: "digital_competency", Fields: map[string]any{
				"student_id": "S2", "accommodation_category": "disability",
			}},
			level: L4, rules: []string{"C1", "C2"},
			fields: map[string]string{"accommodation_category": "HL L4"},
		},
		{
			name: "digital competency, health term in the comment",
			rec: Record{Type: "digital_competency", Fields: map[string]any{
				"student_id": "S3", "comment": "因抑郁缺考后补测",
			}},
			level: L4, rules: []string{"C1", "C5"},
			fields: map[string]string{"comment": " L4 health_terms"},
		},
		{
			name: "teacher training, every field",
			rec: Record{Type: "teacher_training", Fields: map[string]any{
				"staff_id": "T2019001", "program_name": "国培计划", "provider": "北京师范大学", "training_level": "national",
				"training_mode": "online", "topic": "信息技术应用能力提升", "start_date": "2026-07-01", "end_date": "2026-07-20",
				"hours": json.Number("50"), "credits": json.Number("5"), "completed": true, "score": json.Number("91"),
				"result": "优秀", "certificate_no": "GP2026-0012", "comment": "小组长",
			}},
			level: L3, rules: []string{"C1"},
			fields: map[string]string{
				"staff_id": "ID L2", "program_name": "HR L1", "provider": "HR L1", "training_level": "HR L1",
				"training_mode": "HR L1", "topic": "HR L1", "start_date": "HR L2", "end_date": "HR L2", "hours": "HR L2",
				"credits": "HR L2", "completed": "HR L2", "score": "HR L3", "result": "HR L3", "certificate_no": "HR L3",
				"comment": " L3",
			},
		},
		{
			name: "teacher training, attendance only",
			rec: Record{Type: "teacher_training", Fields: map[string]any{
				"staff_id": "T1", "program_name": "校本研修", "hours": json.Number("12.5"), "completed": false,
			}},
			level: L2, rules: []string{"C1"},
			fields: map[string]string{"staff_id": "ID L2", "hours": "HR L2", "completed": "HR L2"},
		},
		{
			name: "teacher training, mobile number in the comment",
			rec: Record{Type: "teacher_training", Fields: map[string]any{
				"staff_id": "T2", "comment": "联系 13812345678",
			}},
			level: L3, rules: []string{"C1"}, // a hit at the declared level raises nothing
			fields: map[string]string{"comment": " L3 cn_mobile"},
		},
		{
			name: "xapi statement, experienced",
			rec: Record{Type: "xapi_statement", Fields: map[string]any{
				"actor_id": "mailto:xavier@example.com", "actor_ifi": "mbox", "actor_name": "Xavier",
				"statement_id": "fd41c918-b88b-4b20-a0a5-a4c32391aaa0", "timestamp": "2026-03-01T10:00:00Z",
				"verb_id": "http://adlnet.gov/expapi/verbs/experienced", "verb_display": "experienced",
				"object_type": "Activity", "object_id": "http://example.com/activities/solo-hang-gliding",
				"object_name": "Solo Hang Gliding", "object_activity_type": "http://adlnet.gov/expapi/activities/lesson",
				"result_completion": true, "result_duration": "PT1H0M0S",
				"context_registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7", "context_platform": "Example LMS",
				"context_language": "en-US", "context_parent": "http://example.com/activities/hang-gliding-class-a",
			}},
			level: L3, rules: []string{"C1"},
			fields: map[string]string{
				"actor_id": "ID L3 direct", "actor_ifi": "ID L2", "actor_name": "ID L2 direct", "statement_id": "LB L2",
				"timestamp": "LB L2", "verb_id": "LB L2", "verb_display": "LB L2", "object_type": "LB L1",
				"object_id": "LB L1", "object_name": "LB L1", "object_activity_type": "LB L1",
				"result_completion": "LB L2", "result_duration": "LB L2", "context_registration": "LB L2",
				"context_platform": "LB L1", "context_language": "LB L1", "context_parent": "LB L1",
			},
		},
		{
			name: "xapi statement, failed with a score",
			rec: Record{Type: "xapi_statement", Fields: map[string]any{
				"actor_id": "account:http://www.example.com|13936749", "actor_ifi": "account",
				"verb_id": "http://adlnet.gov/expapi/verbs/failed", "verb_display": "failed",
				"object_type": "Activity", "object_id": "http://example.com/quiz/1",
				"result_score_scaled": json.Number("0.35"), "result_score_raw": json.Number("35"),
				"result_score_min": json.Number("0"), "result_score_max": json.Number("100"), "result_success": false,
				"result_response": "我的答案", "extensions": `{"context":{"http://example.com/ext/school":"10001"}}`,
			}},
			level: L3, rules: []string{"C1", "C2"},
			fields: map[string]string{
				"actor_id": "ID L3 direct", "verb_id": "AC L3", "verb_display": "AC L3", "result_score_scaled": "AC L3",
				"result_score_raw": "AC L3", "result_score_min": "AC L1", "result_score_max": "AC L1",
				"result_success": "AC L3", "result_response": " L3", "extensions": " L3",
			},
		},
		{
			name: "xapi statement, bank card in an extension",
			rec: Record{Type: "xapi_statement", Fields: map[string]any{
				"actor_id":   "sha1:ebd31e95054c018b10727ccffd2ef2ec3a016ee9",
				"verb_id":    "http://adlnet.gov/expapi/verbs/attempted",
				"extensions": `{"result":{"http://example.com/ext/card":"6222021234567890128"}}`,
			}},
			level: L4, rules: []string{"C1", "C5"},
			fields: map[string]string{"verb_id": "LB L2", "extensions": " L4 bank_card"},
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
			if !slices.Equal(l.Rules, tt.rules) {
				t.Errorf("rules: got %q, want %q", l.Rules, tt.rules)
			}
			if len(l.Flags) != 0 {
				t.Errorf("flags: got %q, want none", l.Flags)
			}
			checkFieldLabels(t, l, len(tt.rec.Fields), tt.fields)
		})
	}
}

// TestLearningTypesValidation checks the new types refuse what the
// standard forbids: a missing subject key, an unknown enum value, a
// negative amount, a field of another type.
func TestLearningTypesValidation(t *testing.T) {
	asOf := date("2026-11-23")
	tests := []struct {
		rec           Record
		field, reason string
	}{
		{Record{Type: "digital_competency", Fields: map[string]any{"score": json.Number("1")}}, "student_id", ReasonRequired},
		{Record{Type: "digital_competency", Fields: map[string]any{"student_id": "S", "accommodation_category": "medical"}}, "accommodation_category", ReasonEnum},
		{Record{Type: "digital_competency", Fields: map[string]any{"student_id": "S", "assessment_date": "2026-13-01"}}, "assessment_date", ReasonDate},
		{Record{Type: "teacher_training", Fields: map[string]any{"student_id": "S", "staff_id": "T"}}, "student_id", ReasonUnknownField},
		{Record{Type: "teacher_training", Fields: map[string]any{"staff_id": "T", "hours": json.Number("-2")}}, "hours", ReasonNegative},
		{Record{Type: "xapi_statement", Fields: map[string]any{"verb_id": "http://adlnet.gov/expapi/verbs/attempted"}}, "actor_id", ReasonRequired},
		{Record{Type: "xapi_statement", Fields: map[string]any{"actor_id": "mailto:a@example.com", "object_type": "Agent"}}, "object_type", ReasonEnum},
	}
	for _, tt := range tests {
		_, err := Default().Classify(tt.rec, asOf)
		ve, ok := err.(*ValidationError)
		if !ok || ve.Field != tt.field || ve.Reason != tt.reason {
			t.Errorf("%s %v: got %v, want field %q reason %q", tt.rec.Type, tt.rec.Fields, err, tt.field, tt.reason)
		}
	}
}

// TestLearningTypesCSV reads the new types from CSV by --type, as every
// type is read: cells converted by their field's kind, and the records
// written back as NDJSON and read again give the same records and labels.
func TestLearningTypesCSV(t *testing.T) {
	asOf := date("2026-11-23")
	for _, tt := range []struct {
		typ, input string
		want       []string // the records as JSON
		levels     []Level
	}{
		{"digital_competency",
			"student_id,framework,domain,assessment_date,score,max_score,passed,accommodation_category\n" +
				"2023010001,DigComp 2.2,safety,2026-06-10,82.5,100,true,none\n" +
				"2023010002,DigComp 2.2,safety,,,,,disability\n",
			[]string{
				`{"accommodation_category":"none","assessment_date":"2026-06-10","domain":"safety","framework":"DigComp 2.2","max_score":100,"passed":true,"score":82.5,"student_id":"2023010001"}`,
				`{"accommodation_category":"disability","domain":"safety","framework":"DigComp 2.2","student_id":"2023010002"}`,
			},
			[]Level{L3, L4}},
		{"teacher_training",
			"staff_id,program_name,hours,completed,certificate_no\nT1,国培计划,50,1,\nT2,国培计划,12.5,0,GP-1\n",
			[]string{
				`{"completed":true,"hours":50,"program_name":"国培计划","staff_id":"T1"}`,
				`{"certificate_no":"GP-1","completed":false,"hours":12.5,"program_name":"国培计划","staff_id":"T2"}`,
			},
			[]Level{L2, L3}},
		{"xapi_statement",
			"actor_id,actor_ifi,verb_id,object_id,result_score_raw\nmailto:a@example.com,mbox,http://adlnet.gov/expapi/verbs/scored,http://example.com/q/1,7\n",
			[]string{`{"actor_id":"mailto:a@example.com","actor_ifi":"mbox","object_id":"http://example.com/q/1","result_score_raw":7,"verb_id":"http://adlnet.gov/expapi/verbs/scored"}`},
			[]Level{L3}},
	} {
		r := newCSV(t, tt.input, tt.typ)
		for i, want := range tt.want {
			rec, idx, err := r.Next()
			if err != nil || idx != i {
				t.Fatalf("%s row %d: %v (index %d)", tt.typ, i, err, idx)
			}
			got, _ := json.Marshal(rec.Fields)
			if string(got) != want {
				t.Errorf("%s row %d:\n got %s\nwant %s", tt.typ, i, got, want)
			}
			back, _, err := NewNDJSONReader(strings.NewReader(string(got)), tt.typ).Next()
			if err != nil {
				t.Fatalf("%s row %d: read back: %v", tt.typ, i, err)
			}
			l1, err1 := Default().Classify(rec, asOf)
			l2, err2 := Default().Classify(back, asOf)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s row %d: Classify: %v, %v", tt.typ, i, err1, err2)
			}
			if l1.Level != tt.levels[i] {
				t.Errorf("%s row %d: level %v, want %v", tt.typ, i, l1.Level, tt.levels[i])
			}
			if a, b := l1.AppendJSON(nil, i, l1.ID), l2.AppendJSON(nil, i, l2.ID); string(a) != string(b) {
				t.Errorf("%s row %d: labels differ after the round trip:\n%s\n%s", tt.typ, i, a, b)
			}
		}
		if _, _, err := r.Next(); err != io.EOF {
			t.Errorf("%s: after the rows: %v, want io.EOF", tt.typ, err)
		}
	}
}
