package envelope

import (
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// TestCheckRecords checks the receiver's content check, above all that the
// member names it remembers by position from one line never let a foreign
// name through on the next.
func TestCheckRecords(t *testing.T) {
	codec := &Codec{Std: schema.Default()}
	ok := `{"type":"student","student_id":"s1","name":"tk_a","gender":"女"}`
	for _, c := range []struct {
		name  string
		lines []string
		want  string // "" accepts; else a part of the error
	}{
		{"alike lines", []string{ok, ok, ok}, ""},
		{"another order", []string{ok, `{"gender":"男","type":"student","name":"tk_b","student_id":"s2"}`}, ""},
		{"a foreign name where the last line had a known one", []string{ok,
			`{"type":"student","student_id":"s1","salary":"1","gender":"女"}`}, "field not in type"},
		{"a foreign name in the first line", []string{`{"type":"student","nickname":"x"}`}, "field not in type"},
		{"a foreign name in a line off the fast path", []string{ok,
			`{"type":"student","student_id":"s\"1","nickname":"x"}`}, "field not in type"},
		{"escapes, known names", []string{ok, `{"type":"student","student_id":"s\"1","name":"tk_a"}`, ok}, ""},
		{"another type", []string{ok, `{"type":"course","course_code":"C1"}`}, "type differs"},
		{"not JSON", []string{ok, `{"type":`}, "not a record"},
		// What a reader of the stored records would read otherwise, or not
		// at all: refused.
		{"a second type member", []string{ok, `{"type":"student","student_id":"s2","type":"discipline"}`}, "given twice"},
		{"a second type member that is no string", []string{ok, `{"type":"student","student_id":"s2","type":7}`}, "given twice"},
		{"a type that is no string", []string{`{"type":7,"student_id":"s2"}`}, "not a record"},
		{"a field given twice, new shape", []string{ok, `{"type":"student","student_id":"s2","student_id":"s3"}`}, "given twice"},
		{"a field given twice, first line", []string{`{"type":"student","name":"a","name":"b"}`}, "given twice"},
		{"a field given twice off the fast path", []string{`{"type":"student","name":"a\"","name":"b"}`}, "given twice"},
		{"invalid UTF-8 off the fast path", []string{ok, "{\"type\":\"student\",\"name\":\"a\\\"\xff\"}"}, "not valid UTF-8"},
		{"invalid UTF-8 on the fast path", []string{ok, "{\"type\":\"student\",\"name\":\"a\xff\"}"}, "not valid UTF-8"},
		{"a line longer than a reader takes", []string{ok, `{"type":"student","name":"` + strings.Repeat("x", schema.MaxLineBytes) + `"}`},
			"longer than"},
	} {
		plain := strings.Join(c.lines, "\n") + "\n"
		_, err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "student", Level: "L3", Count: uint32(len(c.lines))}, nil, time.Now())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// TestCheckRecordsAgainstAgreement: under an agreement, a record may hold
// only the fields it lists, at levels the standard puts no higher than its
// maximum; the level returned is the highest the standard gives the
// fields that arrived, whatever the header claims.
func TestCheckRecordsAgainstAgreement(t *testing.T) {
	codec := &Codec{Std: schema.Default()}
	a := &policy.Agreement{ID: "ag", RecordTypes: map[string][]string{"student": {"student_id", "name", "religion"}},
		MaxLevel: schema.L3}
	for _, c := range []struct {
		name  string
		lines []string
		want  string // "" accepts; else a part of the error
		level schema.Level
	}{
		{"listed fields", []string{`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","name":"tk_BBBBBBBBBBBBBBBBBBBBBB"}`}, "", schema.L2},
		{"a field the type has and the agreement does not list", []string{`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","gender":"女"}`},
			"does not list", 0},
		{"the same, after a line of listed fields", []string{`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","name":"tk_BBBBBBBBBBBBBBBBBBBBBB"}`,
			`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","name":"tk_BBBBBBBBBBBBBBBBBBBBBB","gender":"女"}`}, "does not list", 0},
		{"a listed field above the agreement's level", []string{`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","religion":"x"}`},
			"above agreement", 0},
		{"the same, off the fast path", []string{`{"type":"student","student_id":"tk_\"a","religion":"x"}`},
			"above agreement", 0},
		{"a student id in clear", []string{`{"type":"student","student_id":"20240001","name":"tk_BBBBBBBBBBBBBBBBBBBBBB"}`},
			"in clear", 0},
		{"a name in clear, off the fast path", []string{`{"type":"student","student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA","name":"Li \"Si\""}`},
			"in clear", 0},
		{"a student id that is a number", []string{`{"type":"student","student_id":20240001}`}, "in clear", 0},
	} {
		plain := strings.Join(c.lines, "\n") + "\n"
		level, err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "student", Level: "L1", Count: uint32(len(c.lines))}, a, time.Now())
		switch {
		case c.want == "" && (err != nil || level != c.level):
			t.Errorf("%s: level %v, %v; want %v accepted", c.name, level, err, c.level)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// TestCheckRecordsValues: the receiver classifies the values that arrive,
// as the standard does at ingest: a value rule or a detector that raises a
// field above the agreement's level refuses the envelope, whether the line
// takes the fast path or not, and whatever shapes came before it.
func TestCheckRecordsValues(t *testing.T) {
	codec := &Codec{Std: schema.Default()}
	a := &policy.Agreement{ID: "ag", RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "course_name",
		"credits", "term", "score", "comment", "deferral_reason_category"}}, MaxLevel: schema.L3}
	const tk = `"student_id":"tk_AAAAAAAAAAAAAAAAAAAAAA"`
	for _, c := range []struct {
		name  string
		lines []string
		want  string // "" accepts; else a part of the error
		level schema.Level
	}{
		{"a plain comment", []string{`{"type":"course_grade",` + tk + `,"comment":"good work"}`}, "", schema.L3},
		{"a comment naming a diagnosis (health_terms, L4)", []string{`{"type":"course_grade",` + tk + `,"comment":"diagnosis: depression"}`},
			"above agreement", 0},
		{"the same, after a line of its shape", []string{`{"type":"course_grade",` + tk + `,"comment":"good work"}`,
			`{"type":"course_grade",` + tk + `,"comment":"病史: 抑郁"}`}, "above agreement", 0},
		{"the same, off the fast path", []string{`{"type":"course_grade",` + tk + `,"comment":"\"diagnosis\": depression"}`},
			"above agreement", 0},
		{"a deferral for a personal reason", []string{`{"type":"course_grade",` + tk + `,"deferral_reason_category":"personal"}`}, "", schema.L3},
		{"a deferral for a medical reason (a value rule, L4)", []string{`{"type":"course_grade",` + tk + `,"deferral_reason_category":"personal"}`,
			`{"type":"course_grade",` + tk + `,"deferral_reason_category":"medical"}`}, "above agreement", 0},
		// Shapes that grow, shrink and grow again: what the checker
		// remembers of each position must be the last shape's.
		{"a student id in clear where a shorter shape had another field", []string{
			`{"type":"course_grade","course_code":"A","course_name":"B","credits":1,"term":"T","score":1}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","credits":1,"score":1}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","credits":1,"score":1,` + tk + `}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","credits":1,"score":1,"student_id":"20240001"}`},
			"in clear", 0},
		{"a comment where a shorter shape had a field of lower level", []string{
			`{"type":"course_grade","course_code":"A","course_name":"B","credits":1,"term":"T"}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","score":1}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","score":1,"comment":"good"}`,
			`{"type":"course_grade","course_code":"A","course_name":"B","score":1,"comment":"depression"}`},
			"above agreement", 0},
	} {
		plain := strings.Join(c.lines, "\n") + "\n"
		level, err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "course_grade", Level: "L1", Count: uint32(len(c.lines))}, a, time.Now())
		switch {
		case c.want == "" && (err != nil || level != c.level):
			t.Errorf("%s: level %v, %v; want %v accepted", c.name, level, err, c.level)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// TestCheckRecordsMinor: a birth date or a resident ID that shows the
// subject under 14 on the as-of date raises the record to L4 (C3), above
// an L3 agreement, whether the line takes the fast path or not; a
// subject who turns 14 that day, an adult, or a number that fails its
// check digit does not.
func TestCheckRecordsMinor(t *testing.T) {
	codec := &Codec{Std: schema.Default(), IdentityPurposes: []policy.Purpose{policy.PurposeCreditTransfer}}
	asOf := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	a := &policy.Agreement{ID: "ag", Purpose: policy.PurposeCreditTransfer,
		RecordTypes: map[string][]string{"student": {"student_id", "birth_date", "id_number"}}, MaxLevel: schema.L3}
	line := func(field, v string) string {
		return `{"type":"student","student_id":"s1","` + field + `":"` + v + `"}`
	}
	adult := line("birth_date", "2000-06-01")
	for _, c := range []struct {
		name  string
		lines []string
		minor bool
	}{
		{"an adult's birth date", []string{adult}, false},
		{"a child's birth date", []string{line("birth_date", "2015-06-01")}, true},
		{"a child's birth date after an adult's", []string{adult, line("birth_date", "2015-06-01")}, true},
		{"a child's birth date off the fast path", []string{adult,
			`{"type":"student","student_id":"s\"1","birth_date":"2015-06-01"}`}, true},
		{"14 years old today", []string{line("birth_date", "2012-12-04")}, false},
		{"14 years old tomorrow", []string{line("birth_date", "2012-12-05")}, true},
		{"an adult's resident ID", []string{line("id_number", "110105200006011237")}, false},
		{"a child's resident ID", []string{adult, line("id_number", "110105201506011238")}, true},
		{"14 years old tomorrow, by resident ID", []string{line("id_number", "110105201212051234")}, true},
		{"a child's number with a wrong check digit", []string{line("id_number", "110105201506011230")}, false},
		{"no date", []string{line("birth_date", "June 2015")}, false},
	} {
		plain := strings.Join(c.lines, "\n") + "\n"
		level, err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "student", Level: "L3", Count: uint32(len(c.lines))}, a, asOf)
		switch {
		case c.minor && (err == nil || !strings.Contains(err.Error(), "fields at L4, above agreement")):
			t.Errorf("%s: level %v, %v; want refused at L4", c.name, level, err)
		case !c.minor && (err != nil || level != schema.L3):
			t.Errorf("%s: level %v, %v; want accepted at L3", c.name, level, err)
		}
	}
	// Without an agreement (an aggregate's records, say) nothing is
	// refused, and the level returned is the minor's.
	plain := adult + "\n" + line("birth_date", "2015-06-01") + "\n"
	if level, err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "student", Level: "L3", Count: 2}, nil, asOf); err != nil || level != schema.L4 {
		t.Errorf("no agreement: level %v, %v; want L4", level, err)
	}
}

// FuzzCheckRecords: whatever line the receiver's check accepts, the reader
// of stored records reads as one record of the header's type holding only
// fields of that type: nothing is stored that could not be read back,
// exported or erased.
func FuzzCheckRecords(f *testing.F) {
	for _, s := range []string{
		`{"type":"student","student_id":"s1","name":"tk_a","gender":"女"}`,
		`{"type":"student","student_id":"s\"1","name":"tk_a"}`,
		`{"type":"student","student_id":"s2","type":"discipline"}`,
		`{"type":"student","name":"a","name":"b"}`,
		"{\"type\":\"student\",\"name\":\"a\\\"\xff\"}",
		`{"type":7,"student_id":"s2"}`,
	} {
		f.Add(s)
	}
	std := schema.Default()
	codec := &Codec{Std: std}
	rt, _ := std.Type("student")
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n") || line == "" {
			return
		}
		if _, err := codec.CheckRecords([]byte(line+"\n"), crypto.Header{RecordType: "student", Level: "L3", Count: 1}, nil, time.Now()); err != nil {
			return
		}
		rd := schema.NewNDJSONReader(strings.NewReader(line+"\n"), "")
		rec, _, err := rd.Next()
		if err != nil {
			t.Fatalf("accepted %q, the reader refuses it: %v", line, err)
		}
		if rec.Type != "student" {
			t.Fatalf("accepted %q as a student, the reader reads type %q", line, rec.Type)
		}
		for name := range rec.Fields {
			if _, ok := rt.FieldIndex(name); !ok {
				t.Fatalf("accepted %q, the reader finds field %q the type does not have", line, name)
			}
		}
	})
}
