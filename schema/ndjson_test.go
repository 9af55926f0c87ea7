package schema

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

type readResult struct {
	idx    int
	typ    string
	fields int
	err    string // ValidationError "field/reason", or ""
}

func readAll(t *testing.T, r *NDJSONReader) ([]readResult, error) {
	t.Helper()
	var out []readResult
	for {
		rec, idx, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		var ve *ValidationError
		switch {
		case errors.As(err, &ve):
			out = append(out, readResult{idx: idx, err: ve.Field + "/" + ve.Reason})
		case err != nil:
			return out, err
		default:
			out = append(out, readResult{idx: idx, typ: rec.Type, fields: len(rec.Fields)})
		}
	}
}

func TestNDJSONReader(t *testing.T) {
	input := "\xef\xbb\xbf" + `{"type":"student","student_id":"S1","name":"张三"}` + "\r\n" +
		"\n   \n" +
		`{"student_id":"S2","score":91.5}` + "\n" +
		`not json` + "\n" +
		`[1,2]` + "\n" +
		`null` + "\n" +
		`{"a":1} {"b":2}` + "\n" +
		`{"type":7,"student_id":"S3"}` + "\n" +
		`{"type":"course","course_code":"C1"}` // no final newline
	r := NewNDJSONReader(strings.NewReader(input), "course_grade")
	got, err := readAll(t, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []readResult{
		{0, "student", 2, ""},
		{1, "course_grade", 2, ""},
		{idx: 2, err: "/syntax"},
		{idx: 3, err: "/syntax"},
		{idx: 4, err: "/syntax"},
		{idx: 5, err: "/syntax"},
		{idx: 6, err: "type/type"},
		{7, "course", 1, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d %+v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// EOF is sticky.
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("after end: got %v, want io.EOF", err)
	}
}

func TestNDJSONNumbers(t *testing.T) {
	r := NewNDJSONReader(strings.NewReader(`{"student_id":"S","score":91.50,"retake":true,"comment":null}`), "course_grade")
	rec, _, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := rec.Fields["score"].(json.Number); !ok || got != "91.50" {
		t.Errorf("score: got %#v, want json.Number(\"91.50\")", rec.Fields["score"])
	}
	if _, err := Default().Classify(rec, date("2026-01-01")); err != nil {
		t.Errorf("Classify: %v", err)
	}
}

func TestNDJSONLongLine(t *testing.T) {
	long := `{"student_id":"S","notes":"` + strings.Repeat("a", MaxLineBytes) + `"}`
	mid := `{"student_id":"S","notes":"` + strings.Repeat("b", 200<<10) + `"}` // longer than the read buffer
	input := long + "\n" + mid + "\n" + `{"student_id":"T"}` + "\n"
	got, err := readAll(t, NewNDJSONReader(strings.NewReader(input), "student"))
	if err != nil {
		t.Fatal(err)
	}
	want := []readResult{{idx: 0, err: "/syntax"}, {1, "student", 2, ""}, {2, "student", 1, ""}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestNDJSONReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewNDJSONReader(io.MultiReader(strings.NewReader(`{"student_id":"S"}`+"\n"), iotest.ErrReader(boom)), "student")
	if _, _, err := r.Next(); err != nil {
		t.Fatalf("first record: %v", err)
	}
	if _, _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
}

// FuzzNDJSON runs arbitrary input through the reader, Classify and the
// output writers: no panics, every output line valid JSON.
func FuzzNDJSON(f *testing.F) {
	f.Add(`{"type":"student","student_id":"S1","birth_date":"2015-01-01","notes":"抑郁 13812345678"}`)
	f.Add(`{"student_id":"S","score":-1e3,"rank":2,"retake":false}` + "\n\n" + `{"x":`)
	f.Add(`{"type":"financial_aid","student_id":"S","amount_cny":-0.0,"bank_card_no":"6222021234567890128"}`)
	f.Add(`{"type":"student","student_id":"S","id_number":"11010519491231002X","id_type":"resident_id"}`)
	for _, v := range loadDetectorVectors(f) {
		b, _ := json.Marshal(map[string]string{"student_id": "S", "notes": v.input, "address": v.input})
		f.Add(string(b))
	}
	std := Default()
	asOf := date("2026-01-01")
	f.Fuzz(func(t *testing.T, input string) {
		r := NewNDJSONReader(strings.NewReader(input), "course_grade")
		d := NewDataset(std)
		for {
			rec, idx, err := r.Next()
			if err == io.EOF {
				break
			}
			var line []byte
			var ve *ValidationError
			if errors.As(err, &ve) {
				line = ve.AppendJSON(nil, idx)
				d.AddInvalid()
			} else if err != nil {
				t.Fatal(err)
			} else if l, err := std.Classify(rec, asOf); err != nil {
				if !errors.As(err, &ve) {
					t.Fatalf("Classify: %v", err)
				}
				line = ve.AppendJSON(nil, idx)
				d.AddInvalid()
			} else {
				if l.Level < L1 || len(l.Fields) != len(rec.Fields) {
					t.Fatalf("bad labels %+v", l)
				}
				d.Add(l)
				line = l.AppendJSON(nil, idx, l.ID)
			}
			if !json.Valid(line) {
				t.Fatalf("invalid JSON output %q", line)
			}
		}
		if line := d.Summary().AppendJSON(nil); !json.Valid(line) {
			t.Fatalf("invalid summary %q", line)
		}
	})
}

// TestFlatObjectUTF8 checks that strings are checked for UTF-8 wherever
// the bad byte falls: in a name or a value, in the eight-byte scan or the
// tail, or cut off by the closing quote.
func TestFlatObjectUTF8(t *testing.T) {
	for _, s := range []string{
		`{"a":"` + "\xff" + `"}`,
		`{"` + "\xff" + `":"a"}`,
		`{"a":"0123456789abcdef` + "\xc3" + `0123456789"}`,
		`{"a":"0123456789abcdef` + "\xe5\xad" + `"}`,
		`{"a":"` + "\xed\xa0\x80" + `"}`,     // a surrogate
		`{"a":"` + "\xc0\xaf" + `xxxxxxxx"}`, // overlong
		`{"a":1` + "\xc3" + `}`,
	} {
		if _, ok := new(LineParser).parseFlatObject([]byte(s), map[string]any{}, nil); ok {
			t.Errorf("accepted %q", s)
		}
		if _, ok := new(LineParser).Members([]byte(s), func(string, []byte) {}); ok {
			t.Errorf("Members accepted %q", s)
		}
	}
	for _, s := range []string{`{"名":"四川省成都市武侯区人民南路3段97号26栋5单元"}`, `{"a":"0123456789abcdé"}`} {
		if _, ok := new(LineParser).parseFlatObject([]byte(s), map[string]any{}, nil); !ok {
			t.Errorf("refused %q", s)
		}
	}
}

// FuzzFlatObject checks the fast path against encoding/json: where it
// accepts a line, both give the same fields.
func FuzzFlatObject(f *testing.F) {
	for _, s := range []string{
		`{"a":"b","n":-1.5e3,"t":true,"f":false,"z":null}`, ` { } `, `{"a":"\u00e9"}`, `{"a":1,"a":2}`,
		`{"a":01}`, `{"a":1.}`, `{"a":"x"}x`, `{"a":[1]}`, `{"a":"` + "\xff" + `"}`, `{"k":"张三"}`,
		`{"a":truex}`, `{"a":-}`, `{"a":1e+5,"b":-0}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := map[string]any{}
		_, ok := new(LineParser).parseFlatObject([]byte(s), got, nil)
		if !ok {
			return
		}
		if !utf8.ValidString(s) {
			t.Fatalf("fast path accepted %q, which is not valid UTF-8", s)
		}
		var want map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json: %v", s, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("fast path accepted %q with trailing data", s)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast path %#v, encoding/json %#v", s, got, want)
		}
		// Members sees the same names and type.
		names := map[string]any{}
		typ, ok := new(LineParser).Members([]byte(s), func(name string, _ []byte) { names[name] = want[name] })
		if !ok {
			t.Fatalf("%q: Parse's fast path accepts it, Members does not", s)
		}
		wantType, _ := want["type"].(string)
		if typ != wantType {
			t.Fatalf("%q: Members type %q, want %q", s, typ, wantType)
		}
		if _, has := want["type"]; has {
			names["type"] = want["type"]
		}
		if !reflect.DeepEqual(names, want) {
			t.Fatalf("%q: Members names %v, encoding/json %v", s, names, want)
		}
	})
}
