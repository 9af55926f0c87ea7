package schema

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// item is what one call of Reader.Next gave.
type item struct {
	idx int
	rec Record
	err string // ValidationError "field/reason", or ""
}

// drain reads r to the end; a non-validation error ends it and is
// returned.
func drain(t testing.TB, r Reader) ([]item, error) {
	t.Helper()
	var out []item
	for {
		rec, idx, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		var ve *ValidationError
		switch {
		case errors.As(err, &ve):
			out = append(out, item{idx: idx, err: ve.Field + "/" + ve.Reason})
		case err != nil:
			return out, err
		default:
			out = append(out, item{idx: idx, rec: rec})
		}
		if len(out) > 1<<20 {
			t.Fatal("reader does not end")
		}
	}
}

func newCSV(t testing.TB, input, typ string) *CSVReader {
	t.Helper()
	r, err := NewCSVReader(Default(), strings.NewReader(input), typ)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCSVReader(t *testing.T) {
	input := "\xef\xbb\xbf" + "student_id, score ,retake,rank,credits,term,comment\r\n" +
		"S1,91.5,true,3,2,2025 秋,\"好, 很好\"\r\n" + // 0: all kinds
		"S2,,,,,,\n" + // 1: empty cells are absent
		"\n" + // blank lines are skipped
		"S3,1e2,0,-4,0.5,,\"multi\nline\"\n" + // 2
		"S4,9x,1,1,1,,\n" + // 3: score does not convert
		"S5,1,maybe,1,1,,\n" + // 4: retake does not convert
		"S6,1,TRUE,1.5,1,,\n" + // 5: rank converts (a number); Classify rejects it
		"S7,1\n" + // 6: too few cells
		"S8,1,1,1,1,,,extra\n" + // 7: too many cells
		"S9,\"bad\"quote,1,1,1,,\n" + // 8: quoting error
		"S10, 7 ,False,2,1,,\n" // 9: spaces around numbers and bools
	got, err := drain(t, newCSV(t, input, "course_grade"))
	if err != nil {
		t.Fatal(err)
	}
	rec := func(f map[string]any) Record { return Record{Type: "course_grade", Fields: f} }
	want := []item{
		{0, rec(map[string]any{"student_id": "S1", "score": json.Number("91.5"), "retake": true, "rank": json.Number("3"), "credits": json.Number("2"), "term": "2025 秋", "comment": "好, 很好"}), ""},
		{1, rec(map[string]any{"student_id": "S2"}), ""},
		{2, rec(map[string]any{"student_id": "S3", "score": json.Number("1e2"), "retake": false, "rank": json.Number("-4"), "credits": json.Number("0.5"), "comment": "multi\nline"}), ""},
		{idx: 3, err: "score/type"},
		{idx: 4, err: "retake/type"},
		{5, rec(map[string]any{"student_id": "S6", "score": json.Number("1"), "retake": true, "rank": json.Number("1.5"), "credits": json.Number("1")}), ""},
		{idx: 6, err: "/syntax"},
		{idx: 7, err: "/syntax"},
		{idx: 8, err: "/syntax"},
		{9, rec(map[string]any{"student_id": "S10", "score": json.Number("7"), "retake": false, "rank": json.Number("2"), "credits": json.Number("1")}), ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d items %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d:\n got %#v\nwant %#v", i, got[i], want[i])
		}
	}
	// The converted records classify as NDJSON records would.
	std := Default()
	if l, err := std.Classify(got[0].rec, date("2026-11-23")); err != nil || l.Level != L3 {
		t.Errorf("row 0: Classify gave %v, %v; want L3", l.Level, err)
	}
	var ve *ValidationError
	if _, err := std.Classify(got[5].rec, date("2026-11-23")); !errors.As(err, &ve) || ve.Field != "rank" || ve.Reason != ReasonType {
		t.Errorf("row 5: Classify gave %v, want rank/type", err)
	}
}

func TestCSVUnknownColumn(t *testing.T) {
	got, err := drain(t, newCSV(t, "student_id,shoe_size\nS1,\nS2,42\n", "student"))
	if err != nil {
		t.Fatal(err)
	}
	// An empty cell of an unknown column is absent; a value stays a
	// string, for Classify to report.
	if len(got) != 2 || len(got[0].rec.Fields) != 1 || got[1].rec.Fields["shoe_size"] != "42" {
		t.Fatalf("got %+v", got)
	}
	var ve *ValidationError
	if _, err := Default().Classify(got[1].rec, date("2026-11-23")); !errors.As(err, &ve) || ve.Field != "shoe_size" || ve.Reason != ReasonUnknownField {
		t.Errorf("Classify: got %v, want shoe_size/unknown_field", err)
	}
}

func TestCSVFatal(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"empty name", "student_id,,name\nS1,,x\n", "column 2: empty field name"},
		{"repeated name", "student_id,name,name\n", "column 3: repeated field name"},
		{"header quote", "\"student_id\n", "csv header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newCSV(t, tt.input, "student")
			_, _, err := r.Next()
			if err == nil || err == io.EOF || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if _, _, err2 := r.Next(); err2 != err {
				t.Errorf("error not sticky: %v then %v", err, err2)
			}
		})
	}
	// No header at all: no records.
	if got, err := drain(t, newCSV(t, "", "student")); err != nil || len(got) != 0 {
		t.Errorf("empty input: got %v, %v", got, err)
	}
	if _, err := NewCSVReader(Default(), strings.NewReader(""), ""); err == nil {
		t.Error("csv without a record type: no error")
	}
	if _, err := NewCSVReader(Default(), strings.NewReader(""), "pupil"); err == nil {
		t.Error("csv with an unknown record type: no error")
	}
}

func TestCSVLongRow(t *testing.T) {
	input := "student_id,notes\nS1,short\nS2," + strings.Repeat("x", MaxLineBytes+2*guardSlack) + "\nS3,never\n"
	got, err := drain(t, newCSV(t, input, "student"))
	if err == nil || !strings.Contains(err.Error(), "longer than") || strings.Contains(err.Error(), "xxx") {
		t.Fatalf("got %v, want a too-long error naming no data", err)
	}
	if len(got) != 1 || got[0].rec.Fields["notes"] != "short" {
		t.Errorf("records before the long row: %+v", got)
	}
	// A long row within the limit is read.
	ok := "student_id,notes\nS1," + strings.Repeat("y", MaxLineBytes/2) + "\n"
	if got, err := drain(t, newCSV(t, ok, "student")); err != nil || len(got) != 1 {
		t.Errorf("half-limit row: %d items, %v", len(got), err)
	}
}

func TestCSVReadError(t *testing.T) {
	boom := errors.New("boom")
	r, _ := NewCSVReader(Default(), io.MultiReader(strings.NewReader("student_id\nS1\n"), iotest.ErrReader(boom)), "student")
	got, err := drain(t, r)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if len(got) != 1 {
		t.Errorf("records before the error: %+v", got)
	}
}

func TestNewReader(t *testing.T) {
	for _, tt := range []struct {
		format, typ string
		ok          bool
	}{
		{"ndjson", "", true}, {"ndjson", "student", true}, {"csv", "student", true}, {"csv", "", false},
		{"csv", "pupil", false}, {"edfi", "", true}, {"edfi", "guardian", true}, {"edfi", "staff", false},
		{"xlsx", "student", false}, {"", "", false},
	} {
		r, err := NewReader(tt.format, strings.NewReader(""), tt.typ)
		if (err == nil) != tt.ok {
			t.Errorf("NewReader(%q, %q): err %v, want ok %v", tt.format, tt.typ, err, tt.ok)
		}
		if err == nil && r == nil {
			t.Errorf("NewReader(%q, %q): nil reader", tt.format, tt.typ)
		}
	}
	var _ Reader = (*NDJSONReader)(nil)
	var _ Reader = (*CSVReader)(nil)
	var _ Reader = (*EdFiReader)(nil)
}

// checkReader runs a reader over input to its end: no panic, indices
// 0, 1, 2, … and every record classifies or fails validation.
func checkReader(t *testing.T, r Reader) {
	std := Default()
	asOf := date("2026-11-23")
	want := 0
	for {
		rec, idx, err := r.Next()
		if err == io.EOF {
			return
		}
		var ve *ValidationError
		if err != nil && !errors.As(err, &ve) {
			return // an I/O-class error ends the input
		}
		if idx != want {
			t.Fatalf("index %d, want %d", idx, want)
		}
		want++
		if err == nil {
			if _, err := std.Classify(rec, asOf); err != nil && !errors.As(err, &ve) {
				t.Fatalf("Classify: %v", err)
			}
			for name, v := range rec.Fields {
				switch v.(type) {
				case string, bool, json.Number:
				default:
					t.Fatalf("field %q: value of type %T", name, v)
				}
			}
		}
		if want > 1<<20 {
			t.Fatal("reader does not end")
		}
	}
}

func FuzzCSVReader(f *testing.F) {
	for _, s := range []string{
		"student_id,score,retake,rank\nS1,91.5,true,3\nS2,,,\n",
		"student_id, score\nS3,9x\nS4\nS5,1,2\n",
		"\xef\xbb\xbfstudent_id,comment\nS1,\"a\nb\"\nS2,\"bad\"q\n",
		"student_id,,x\n", "a,a\n", "\"", "student_id\n\n\n",
	} {
		f.Add(s, "course_grade")
	}
	f.Add("student_id,birth_date,id_number\nS1,2015-01-01,11010519491231002X\n", "student")
	f.Add("course_code,credits\nC1,-1\n", "course")
	f.Fuzz(func(t *testing.T, input, typ string) {
		if _, ok := Default().Type(typ); !ok {
			typ = "course_grade"
		}
		checkReader(t, newCSV(t, input, typ))
	})
}
