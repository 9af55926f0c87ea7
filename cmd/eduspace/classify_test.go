package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// writeFile writes content to name in a fresh temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// goldenInput and goldenOutput: classify --as-of 2026-11-23, checked by
// hand against GRADING.md.
const goldenInput = `{"type":"student","student_id":"2023010001","name":"张三","birth_date":"2005-03-01","id_number":"11010519491231002X"}
{"type":"student","student_id":"2023010002","birth_date":"2015-06-01","phone":"13812345678"}

{"type":"program_participation","student_id":"2023010001","program_name":"资助","program_type":"special_education"}
{"type":"student","student_id":"2023010003","shoe_size":42}
{"type":"course","course_code":"MATH101","course_name":"高等数学","credits":4}
{"type":"course_grade","student_id":"2023010001","course_code":"MATH101","score":91.5,"comment":"诊断 抑郁"}
not json
{"type":"student","student_id":"2023010004","id_number":"110105194912310021"}
`

// Line by line: an adult whose resident ID hits cn_resident_id (L3, C1
// only); a minor on the as-of date (every field L4, C3); special
// education (L4 by C2); an unknown field; a catalogue course (L1); a
// health term in free text (L4 by C5); a line that is not JSON; a resident
// ID with a wrong check digit. Summary: 5 valid records of 2 students.
const goldenOutput = `{"index":0,"id":"2023010001","type":"student","level":"L3","flags":[],"rules":["C1"],"fields":{"student_id":{"category":"ID","level":"L2","direct_id":true},"name":{"category":"ID","level":"L2","direct_id":true},"birth_date":{"category":"DM","level":"L3"},"id_number":{"category":"ID","level":"L3","direct_id":true,"detectors":["cn_resident_id"]}}}
{"index":1,"id":"2023010002","type":"student","level":"L4","flags":["minor"],"rules":["C1","C3"],"fields":{"student_id":{"category":"ID","level":"L4","direct_id":true},"birth_date":{"category":"DM","level":"L4"},"phone":{"category":"CT","level":"L4"}}}
{"index":2,"id":"2023010001","type":"program_participation","level":"L4","flags":[],"rules":["C1","C2"],"fields":{"student_id":{"category":"ID","level":"L2"},"program_name":{"category":"AC","level":"L2"},"program_type":{"category":"AC","level":"L4"}}}
{"index":3,"error":{"field":"shoe_size","reason":"unknown_field"}}
{"index":4,"id":"MATH101","type":"course","level":"L1","flags":[],"rules":["C1"],"fields":{"course_code":{"category":"AC","level":"L1"},"course_name":{"category":"AC","level":"L1"},"credits":{"category":"AC","level":"L1"}}}
{"index":5,"id":"2023010001","type":"course_grade","level":"L4","flags":[],"rules":["C1","C5"],"fields":{"student_id":{"category":"ID","level":"L2"},"course_code":{"category":"AC","level":"L1"},"score":{"category":"AC","level":"L3"},"comment":{"category":"","level":"L4","detectors":["health_terms"]}}}
{"index":6,"error":{"field":"","reason":"syntax"}}
{"index":7,"error":{"field":"id_number","reason":"checksum"}}
{"summary":{"records":5,"invalid":3,"subjects":2,"level":"L4","rules":["C1","C2","C3","C5"]}}
`

func TestClassifyGolden(t *testing.T) {
	in := writeFile(t, "records.ndjson", goldenInput)
	code, out, stderr := run(t, context.Background(), "classify", "--as-of", "2026-11-23", in)
	if code != exitFailure {
		t.Errorf("exit %d, want %d (invalid records); stderr %q", code, exitFailure, stderr)
	}
	if out != goldenOutput {
		gotLines, wantLines := strings.Split(out, "\n"), strings.Split(goldenOutput, "\n")
		for i := range max(len(gotLines), len(wantLines)) {
			var g, w string
			if i < len(gotLines) {
				g = gotLines[i]
			}
			if i < len(wantLines) {
				w = wantLines[i]
			}
			if g != w {
				t.Errorf("line %d:\n got %s\nwant %s", i, g, w)
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("not JSON: %s", line)
		}
	}
	if !strings.Contains(stderr, "3 of 8 records invalid") || strings.Contains(stderr, "2023010003") {
		t.Errorf("stderr %q: want the count of invalid records, no record data", stderr)
	}
}

func TestClassifyExitCodes(t *testing.T) {
	valid := writeFile(t, "ok.jsonl", `{"type":"course","course_code":"C1"}`+"\n")
	invalid := writeFile(t, "bad.json", `{"type":"course"}`+"\n")
	csvFile := writeFile(t, "grades.csv", "student_id,score\nS1,90\n")
	txt := writeFile(t, "records.txt", "")
	badStd := writeFile(t, "std.json", strings.Replace(string(schema.DefaultJSON()), `"level": "L3"`, `"level": "L9"`, 1))
	if !strings.Contains(string(schema.DefaultJSON()), `"level": "L3"`) {
		t.Fatal("the default standard's JSON layout changed; fix the test's edit")
	}
	tests := []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"all valid", []string{valid}, exitOK, ""},
		{"an invalid record", []string{invalid}, exitFailure, "1 of 1 records invalid"},
		{"csv with --type", []string{"--type", "course_grade", csvFile}, exitOK, ""},
		{"no file", nil, exitUsage, "no input file"},
		{"unknown flag", []string{"--colour", valid}, exitUsage, "colour"},
		{"bad --as-of", []string{"--as-of", "2026-13-01", valid}, exitUsage, "--as-of"},
		{"--as-of not a date", []string{"--as-of", "today", valid}, exitUsage, "--as-of"},
		{"csv without --type", []string{csvFile}, exitUsage, "needs --type"},
		{"unknown --format", []string{"--format", "xlsx", valid}, exitUsage, "--format"},
		{"unknown --type", []string{"--type", "pupil", valid}, exitUsage, "--type"},
		{"unknown extension", []string{txt}, exitUsage, "--format"},
		{"unreadable --standard", []string{"--standard", filepath.Join(t.TempDir(), "none.json"), valid}, exitUsage, "--standard"},
		{"wrong --standard", []string{"--standard", badStd, valid}, exitUsage, `unknown level "L9"`},
		{"missing input", []string{filepath.Join(t.TempDir(), "none.ndjson")}, exitFailure, "open input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, stderr := run(t, context.Background(), append([]string{"classify"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d, stderr containing %q", code, stderr, tt.code, tt.msg)
			}
			if code == exitUsage && out != "" {
				t.Errorf("usage error wrote output %q", out)
			}
		})
	}
	// The error names where the standard is wrong.
	_, _, stderr := run(t, context.Background(), "classify", "--standard", badStd, valid)
	if !strings.Contains(stderr, "detectors.cn_resident_id.level") {
		t.Errorf("standard error %q does not name the place", stderr)
	}
}

// summary returns the last output line's summary.
func summary(t *testing.T, out string) schema.Summary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s struct{ Summary schema.Summary }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("last line is not a summary: %v", err)
	}
	return s.Summary
}

func TestClassifyFilesAndStdin(t *testing.T) {
	nd := writeFile(t, "a.ndjson", `{"type":"course","course_code":"C1"}`+"\n"+`{"type":"course"}`+"\n")
	csvFile := writeFile(t, "b.csv", "student_id,score,retake\nS1,90,1\nS2,x,0\n")
	xml := writeFile(t, "c.xml", `<I><Student><StudentUniqueId>S3</StudentUniqueId><BirthData><BirthDate>2015-01-01</BirthDate></BirthData></Student><Calendar/></I>`)
	classifyStdin = strings.NewReader(`{"student_id":"S4","score":1}` + "\n")
	defer func() { classifyStdin = os.Stdin }()

	// --type applies to each input: csv records, and ndjson lines without
	// a type; the Ed-Fi file decides its own (course_grade keeps none).
	code, out, stderr := run(t, context.Background(), "classify", "--as-of", "2026-11-23", "--type", "course_grade", nd, csvFile, "-")
	if code != exitFailure {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var idx []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct {
			Index *int
			Type  string
			Error *struct{ Field, Reason string }
		}
		json.Unmarshal([]byte(line), &v)
		switch {
		case v.Index == nil:
		case v.Error != nil:
			idx = append(idx, fmt.Sprintf("%d:%s/%s", *v.Index, v.Error.Field, v.Error.Reason))
		default:
			idx = append(idx, fmt.Sprintf("%d:%s", *v.Index, v.Type))
		}
	}
	want := "0:course 1:course_code/required 2:course_grade 3:score/type 4:course_grade"
	if got := strings.Join(idx, " "); got != want {
		t.Errorf("lines %s\nwant  %s", got, want)
	}
	if s := summary(t, out); s.Records != 3 || s.Invalid != 2 || s.Subjects != 2 {
		t.Errorf("summary %+v", s)
	}

	// Without --type, the Ed-Fi file gives its student, a minor.
	code, out, _ = run(t, context.Background(), "classify", "--as-of", "2026-11-23", nd, xml)
	if code != exitFailure || !strings.Contains(out, `{"index":2,"id":"S3","type":"student","level":"L4","flags":["minor"]`) {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
	// --format overrides the extension.
	code, out, stderr = run(t, context.Background(), "classify", "--format", "edfi", "--as-of", "2026-11-23", writeFile(t, "x.dat", `<I></I>`))
	if code != exitOK || out != `{"summary":{"records":0,"invalid":0,"subjects":0,"level":"L1","rules":[]}}`+"\n" {
		t.Errorf("exit %d, output %q, stderr %q", code, out, stderr)
	}
}

func TestClassifyAsOfDefaultAndStandard(t *testing.T) {
	// Born 2012-11-24: under 14 until 2026-11-24.
	in := writeFile(t, "s.ndjson", `{"type":"student","student_id":"S","birth_date":"2012-11-24"}`+"\n")
	defer func() { classifyNow = time.Now }()
	for _, tt := range []struct {
		now   time.Time
		level string
	}{
		{time.Date(2026, 11, 23, 23, 59, 0, 0, time.Local), "L4"},
		{time.Date(2026, 11, 24, 0, 1, 0, 0, time.Local), "L3"},
	} {
		classifyNow = func() time.Time { return tt.now }
		_, out, _ := run(t, context.Background(), "classify", in)
		if !strings.Contains(out, `"type":"student","level":"`+tt.level+`"`) {
			t.Errorf("today %s: output %s, want level %s", tt.now, out, tt.level)
		}
	}
	classifyNow = time.Now
	// A custom standard: minors under 18.
	std := strings.Replace(string(schema.DefaultJSON()), `"minor_age": 14`, `"minor_age": 18`, 1)
	if std == string(schema.DefaultJSON()) {
		t.Fatal("the default standard's JSON layout changed; fix the test's edit")
	}
	adult := writeFile(t, "a.ndjson", `{"type":"student","student_id":"S","birth_date":"2010-01-01"}`+"\n")
	code, out, stderr := run(t, context.Background(), "classify", "--as-of", "2026-11-23", "--standard", writeFile(t, "std.json", std), adult)
	if code != exitOK || !strings.Contains(out, `"flags":["minor"]`) {
		t.Errorf("custom standard: exit %d, stderr %q, output %s", code, stderr, out)
	}
}

func TestClassifyV2(t *testing.T) {
	// 10,000 minors: every record L4, the dataset IMP by V2 (and V1).
	var b bytes.Buffer
	for i := range 10000 {
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%05d","birth_date":"2015-03-01","name":"学生"}`+"\n", i)
	}
	in := writeFile(t, "minors.ndjson", b.String())
	code, out, stderr := run(t, context.Background(), "classify", "--as-of", "2026-11-23", in)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if n := strings.Count(out, "\n"); n != 10001 {
		t.Errorf("%d lines, want 10,001", n)
	}
	s := summary(t, out)
	if s.Level != schema.IMP || strings.Join(s.Rules, ",") != "C1,C3,V1,V2" || s.Subjects != 10000 || s.Records != 10000 {
		t.Errorf("summary %+v, want level IMP, rules C1,C3,V1,V2, 10000 subjects", s)
	}
	// One subject fewer: L4, V1 only.
	in = writeFile(t, "fewer.ndjson", b.String()[strings.IndexByte(b.String(), '\n')+1:])
	_, out, _ = run(t, context.Background(), "classify", "--as-of", "2026-11-23", in)
	if s := summary(t, out); s.Level != schema.L4 || strings.Join(s.Rules, ",") != "C1,C3,V1" {
		t.Errorf("9,999 subjects: summary %+v", s)
	}
}

// TestClassifyFixtures runs the Grand Bend Ed-Fi sample through the
// command, if it is there.
func TestClassifyFixtures(t *testing.T) {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Skip("no go.mod above the test")
		}
		dir = filepath.Dir(dir)
	}
	fx := filepath.Join(dir, "..", "shared", "fixtures", "edfi-grand-bend")
	if _, err := os.Stat(fx); err != nil {
		t.Skipf("Ed-Fi fixtures not found at %s: %v", fx, err)
	}
	args := []string{"classify", "--as-of", "2026-11-23"}
	for _, f := range []string{"Student.xml", "Contact.xml", "StudentHealth.xml", "StudentProgram.xml", "StudentDiscipline.xml", "StudentGradebook.xml"} {
		args = append(args, filepath.Join(fx, f))
	}
	code, out, stderr := run(t, context.Background(), args...)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// 960 students + 1,873 guardian records + 71 health records + 706
	// program participations + 46 discipline records + 250 grades.
	if s := summary(t, out); s.Records != 3906 || s.Invalid != 0 || s.Level != schema.L4 {
		t.Errorf("summary %+v, want 3,906 valid records at L4", s)
	}
}

func TestClassifyProgressOnlyOnTerminal(t *testing.T) {
	// Neither a buffer nor a regular file is a terminal: no progress lines.
	if progressTo(&bytes.Buffer{}) != nil {
		t.Error("progress to a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if progressTo(f) != nil {
		t.Error("progress to a regular file")
	}
}

// The record types of learning behaviour, digital competency and teacher
// training, through classify: xAPI statements from a .json file (one
// refused for an Agent object, so exit 1), and NDJSON records. The output
// lines are the same format as every other type's.
const learningXAPI = `[{"actor":{"name":"Sally Glider","mbox":"mailto:sally@example.com"},"verb":{"id":"http://adlnet.gov/expapi/verbs/failed","display":{"en-US":"failed"}},"object":{"id":"http://example.com/activities/solo-hang-gliding","definition":{"name":{"en-US":"Solo Hang Gliding"}}},"result":{"score":{"scaled":0.4},"success":false},"timestamp":"2026-03-01T10:00:00Z"},
 {"actor":{"account":{"homePage":"https://lms.example.edu.cn","name":"2023010001"}},"verb":{"id":"http://adlnet.gov/expapi/verbs/attempted"},"object":{"objectType":"Agent","mbox":"mailto:b@example.com"}},
 {"actor":{"account":{"homePage":"https://lms.example.edu.cn","name":"2023010001"}},"verb":{"id":"http://adlnet.gov/expapi/verbs/completed"},"object":{"id":"https://lms.example.edu.cn/course/MATH101/unit/3"},"result":{"completion":true,"duration":"PT25M"},"context":{"platform":"智慧教育平台","registration":"ec531277-b57b-4c15-8d91-d292c5b2b8f7"}}]
`

const learningXAPIOutput = `{"index":0,"id":"mailto:sally@example.com","type":"xapi_statement","level":"L3","flags":[],"rules":["C1","C2"],"fields":{"actor_id":{"category":"ID","level":"L3","direct_id":true},"actor_ifi":{"category":"ID","level":"L2"},"actor_name":{"category":"ID","level":"L2","direct_id":true},"timestamp":{"category":"LB","level":"L2"},"verb_id":{"category":"AC","level":"L3"},"verb_display":{"category":"AC","level":"L3"},"object_type":{"category":"LB","level":"L1"},"object_id":{"category":"LB","level":"L1"},"object_name":{"category":"LB","level":"L1"},"result_score_scaled":{"category":"AC","level":"L3"},"result_success":{"category":"AC","level":"L3"}}}
{"index":1,"error":{"field":"object.objectType","reason":"enum"}}
{"index":2,"id":"https://lms.example.edu.cn|2023010001","type":"xapi_statement","level":"L3","flags":[],"rules":["C1"],"fields":{"actor_id":{"category":"ID","level":"L3","direct_id":true},"actor_ifi":{"category":"ID","level":"L2"},"verb_id":{"category":"LB","level":"L2"},"object_type":{"category":"LB","level":"L1"},"object_id":{"category":"LB","level":"L1"},"result_completion":{"category":"LB","level":"L2"},"result_duration":{"category":"LB","level":"L2"},"context_registration":{"category":"LB","level":"L2"},"context_platform":{"category":"LB","level":"L1"}}}
{"summary":{"records":2,"invalid":1,"subjects":2,"level":"L3","rules":["C1","C2"]}}
`

const learningNDJSON = `{"type":"digital_competency","student_id":"2023010001","framework":"中小学生数字素养框架","domain":"信息意识","assessment_date":"2026-06-10","score":82.5,"proficiency_level":"良好"}
{"type":"digital_competency","student_id":"2023010002","domain":"数字安全","accommodation_category":"disability"}
{"type":"teacher_training","staff_id":"T2019001","program_name":"国培计划","start_date":"2026-07-01","hours":50,"completed":true}
{"type":"teacher_training","staff_id":"T2019002","program_name":"校本研修","result":"合格","comment":"联系 13812345678"}
`

// A digital-competency result (L3 by its score), an accommodation for a
// disability (L4 by C2), a teacher's training hours (L2), a training result
// with a mobile number in the comment (L3, cn_mobile).
const learningNDJSONOutput = `{"index":0,"id":"2023010001","type":"digital_competency","level":"L3","flags":[],"rules":["C1"],"fields":{"student_id":{"category":"ID","level":"L2"},"framework":{"category":"AC","level":"L1"},"domain":{"category":"AC","level":"L1"},"assessment_date":{"category":"AC","level":"L2"},"score":{"category":"AC","level":"L3"},"proficiency_level":{"category":"AC","level":"L3"}}}
{"index":1,"id":"2023010002","type":"digital_competency","level":"L4","flags":[],"rules":["C1","C2"],"fields":{"student_id":{"category":"ID","level":"L2"},"domain":{"category":"AC","level":"L1"},"accommodation_category":{"category":"HL","level":"L4"}}}
{"index":2,"id":"T2019001","type":"teacher_training","level":"L2","flags":[],"rules":["C1"],"fields":{"staff_id":{"category":"ID","level":"L2"},"program_name":{"category":"HR","level":"L1"},"start_date":{"category":"HR","level":"L2"},"hours":{"category":"HR","level":"L2"},"completed":{"category":"HR","level":"L2"}}}
{"index":3,"id":"T2019002","type":"teacher_training","level":"L3","flags":[],"rules":["C1"],"fields":{"staff_id":{"category":"ID","level":"L2"},"program_name":{"category":"HR","level":"L1"},"result":{"category":"HR","level":"L3"},"comment":{"category":"","level":"L3","detectors":["cn_mobile"]}}}
{"summary":{"records":4,"invalid":0,"subjects":4,"level":"L4","rules":["C1","C2"]}}
`

func TestClassifyLearningTypes(t *testing.T) {
	xapiFile := writeFile(t, "statements.json", learningXAPI)
	ndjsonFile := writeFile(t, "records.ndjson", learningNDJSON)
	for _, tt := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		want  string
	}{
		{"xapi detected in a .json file", []string{xapiFile}, "", exitFailure, learningXAPIOutput},
		{"xapi named, from stdin", []string{"--format", "xapi", "-"}, learningXAPI, exitFailure, learningXAPIOutput},
		{"xapi detected on stdin", []string{"-"}, learningXAPI, exitFailure, learningXAPIOutput},
		{"new types in NDJSON", []string{ndjsonFile}, "", exitOK, learningNDJSONOutput},
		{"new types in NDJSON on stdin", []string{"-"}, learningNDJSON, exitOK, learningNDJSONOutput},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := classifyStdin
			classifyStdin = strings.NewReader(tt.stdin)
			defer func() { classifyStdin = old }()
			code, out, stderr := run(t, context.Background(), append([]string{"classify", "--as-of", "2026-11-23"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
			if strings.Contains(stderr, "example.com") || strings.Contains(stderr, "2023010001") {
				t.Errorf("stderr shows record data: %q", stderr)
			}
		})
	}
	// A CSV of the new types goes through --type like any other.
	csvFile := writeFile(t, "training.csv", "staff_id,program_name,hours,completed\nT2019001,国培计划,50,true\n")
	code, out, stderr := run(t, context.Background(), "classify", "--as-of", "2026-11-23", "--type", "teacher_training", csvFile)
	want := `{"index":0,"id":"T2019001","type":"teacher_training","level":"L2","flags":[],"rules":["C1"],"fields":{"staff_id":{"category":"ID","level":"L2"},"program_name":{"category":"HR","level":"L1"},"hours":{"category":"HR","level":"L2"},"completed":{"category":"HR","level":"L2"}}}
{"summary":{"records":1,"invalid":0,"subjects":1,"level":"L2","rules":["C1"]}}
`
	if code != exitOK || out != want {
		t.Errorf("csv: exit %d, stderr %q, output:\n%s\nwant:\n%s", code, stderr, out, want)
	}
}
