package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// xapiVector is one file of testdata/xapi: header lines saying what must
// happen, then "---" and the input.
//
//	format F                 DetectFormat names F
//	record N ok {…}          statement N gives a record with exactly these fields
//	record N invalid F R     statement N is refused: field F (may be empty), reason R
//	level N L / rules N C,…  the record of statement N classifies so
//	end                      the input ends after the records listed (io.EOF)
//	stop N                   reading ends with an *XAPIError at statement N
type xapiVector struct {
	name    string
	format  string
	records map[int]xapiWant
	count   int // statements listed
	stop    int // -1: ends with io.EOF
	input   []byte
}

type xapiWant struct {
	fields        map[string]any // nil: refused
	field, reason string
	level         string
	rules         string
}

func loadXAPIVectors(t testing.TB) []xapiVector {
	files, err := filepath.Glob("testdata/xapi/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no xAPI vectors: %v", err)
	}
	var vs []xapiVector
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		head, input, ok := bytes.Cut(data, []byte("\n---\n"))
		if !ok {
			t.Fatalf("%s: no ---", file)
		}
		v := xapiVector{name: filepath.Base(file), records: map[int]xapiWant{}, stop: -2, input: input}
		for _, line := range strings.Split(string(head), "\n") {
			if line == "" || line[0] == '#' {
				continue
			}
			word := strings.Fields(line)
			n := -1
			if len(word) > 1 {
				n, _ = strconv.Atoi(word[1])
			}
			w := v.records[n]
			switch word[0] {
			case "format":
				v.format = word[1]
			case "record":
				if word[2] == "ok" {
					d := json.NewDecoder(strings.NewReader(strings.SplitN(line, " ", 4)[3]))
					d.UseNumber()
					if err := d.Decode(&w.fields); err != nil {
						t.Fatalf("%s: %q: %v", file, line, err)
					}
				} else {
					// "record N invalid FIELD REASON", FIELD possibly empty.
					rest := strings.SplitN(line, " ", 5)
					w.field, w.reason = rest[3], rest[4]
					if w.field == "" {
						w.reason = strings.TrimSpace(rest[4])
					}
				}
				v.count = max(v.count, n+1)
			case "level":
				w.level = word[2]
			case "rules":
				w.rules = word[2]
			case "end":
				v.stop = -1
			case "stop":
				v.stop = n
			default:
				t.Fatalf("%s: unknown header line %q", file, line)
			}
			if n >= 0 {
				v.records[n] = w
			}
		}
		if v.stop == -2 {
			t.Fatalf("%s: neither end nor stop", file)
		}
		vs = append(vs, v)
	}
	return vs
}

// TestXAPIVectors runs every vector through every entry point: the
// reader, NewReader with format xapi (with and without the type), and
// DetectFormat; records are classified by the default standard.
func TestXAPIVectors(t *testing.T) {
	asOf := date("2026-11-23")
	for _, v := range loadXAPIVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			if got := DetectFormat(v.input); got != v.format {
				t.Errorf("DetectFormat: got %q, want %q", got, v.format)
			}
			for _, typ := range []string{"", XAPIType} {
				r, err := NewReader(FormatXAPI, bytes.NewReader(v.input), typ)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; ; i++ {
					rec, idx, err := r.Next()
					var xe *XAPIError
					var ve *ValidationError
					switch {
					case err == io.EOF:
						if v.stop != -1 || i != v.count {
							t.Fatalf("io.EOF after %d statements, want %d, stop %d", i, v.count, v.stop)
						}
					case errors.As(err, &xe):
						if v.stop != i || xe.Statement != i || idx != i {
							t.Fatalf("XAPIError %v at %d (index %d), want stop %d", err, i, idx, v.stop)
						}
						if bytes.Contains([]byte(err.Error()), []byte("secret")) {
							t.Fatalf("error shows input: %v", err)
						}
						if _, _, err2 := r.Next(); err2 != err {
							t.Fatalf("error not sticky: %v then %v", err, err2)
						}
					case errors.As(err, &ve):
						w := v.records[i]
						if idx != i || w.fields != nil || ve.Field != w.field || ve.Reason != w.reason {
							t.Fatalf("statement %d (index %d): got field %q reason %q, want %q %q", i, idx, ve.Field, ve.Reason, w.field, w.reason)
						}
						continue
					case err != nil:
						t.Fatalf("statement %d: %v", i, err)
					default:
						w := v.records[i]
						if idx != i || w.fields == nil {
							t.Fatalf("statement %d (index %d): got a record, want %+v", i, idx, w)
						}
						if rec.Type != XAPIType {
							t.Errorf("type %q", rec.Type)
						}
						got, _ := json.Marshal(rec.Fields)
						want, _ := json.Marshal(w.fields)
						if !bytes.Equal(got, want) {
							t.Errorf("statement %d:\n got %s\nwant %s", i, got, want)
						}
						l, err := Default().Classify(rec, asOf)
						if err != nil {
							t.Fatalf("statement %d: Classify: %v", i, err)
						}
						if w.level != "" && l.Level.String() != w.level {
							t.Errorf("statement %d: level %v, want %s", i, l.Level, w.level)
						}
						if w.rules != "" && strings.Join(l.Rules, ",") != w.rules {
							t.Errorf("statement %d: rules %q, want %s", i, l.Rules, w.rules)
						}
						continue
					}
					break
				}
			}
		})
	}
}

// TestXAPIRoundTrip writes the records of the vectors as NDJSON, reads them
// back with the NDJSON reader, and checks the fields and the labels are
// the same.
func TestXAPIRoundTrip(t *testing.T) {
	asOf := date("2026-11-23")
	n := 0
	for _, v := range loadXAPIVectors(t) {
		r := NewXAPIReader(bytes.NewReader(v.input))
		for {
			rec, _, err := r.Next()
			if err != nil {
				var ve *ValidationError
				if errors.As(err, &ve) {
					continue
				}
				break
			}
			n++
			line, err := json.Marshal(rec.Fields)
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := NewNDJSONReader(bytes.NewReader(line), XAPIType).Next()
			if err != nil {
				t.Fatalf("%s: read back: %v", v.name, err)
			}
			again, _ := json.Marshal(back.Fields)
			if !bytes.Equal(line, again) {
				t.Errorf("%s:\n wrote %s\n  read %s", v.name, line, again)
			}
			l1, err1 := Default().Classify(rec, asOf)
			l2, err2 := Default().Classify(back, asOf)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: Classify: %v, %v", v.name, err1, err2)
			}
			if a, b := l1.AppendJSON(nil, 0, ""), l2.AppendJSON(nil, 0, ""); !bytes.Equal(a, b) {
				t.Errorf("%s: labels differ:\n%s\n%s", v.name, a, b)
			}
		}
	}
	if n < 8 {
		t.Fatalf("only %d records round-tripped", n)
	}
}

func TestDetectFormat(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"type":"student","student_id":"S1"}`, FormatNDJSON},
		{`{"student_id":"S1","actor":{},"verb":{}}` + "\n", FormatXAPI},
		{`{"actor":{},"type":"x","verb":{}}`, FormatNDJSON},
		{`{"actor":{}}`, FormatNDJSON},
		{"\xef\xbb\xbf \n{\"more\":\"\",\"statements\":[]}", FormatXAPI},
		{" [", FormatXAPI},
		{"<?xml version=\"1.0\"?>", FormatEdFi},
		{"student_id,name\n", FormatCSV},
		{"", FormatNDJSON},
		{`{"actor":{"mbox":"mailto:a@example.com"},"verb":{"id":"ht`, FormatXAPI}, // cut off by the peek
	} {
		if got := DetectFormat([]byte(tt.in)); got != tt.want {
			t.Errorf("DetectFormat(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestXAPIReaderType(t *testing.T) {
	if _, err := NewReader(FormatXAPI, strings.NewReader("[]"), "student"); err == nil {
		t.Fatal("xapi input read as type student")
	}
}

// TestXAPITooLong: a statement longer than MaxLineBytes ends the reading
// with an XAPIError, memory staying bounded.
func TestXAPITooLong(t *testing.T) {
	big := `[{"actor":{"mbox":"mailto:a@example.com"},"verb":{"id":"http://example.com/v"},"object":{"id":"http://example.com/a"}},` +
		`{"actor":{"mbox":"mailto:a@example.com","name":"` + strings.Repeat("x", 2*MaxLineBytes) + `"}}]`
	r := NewXAPIReader(strings.NewReader(big))
	if _, _, err := r.Next(); err != nil {
		t.Fatalf("first statement: %v", err)
	}
	_, idx, err := r.Next()
	var xe *XAPIError
	if !errors.As(err, &xe) || idx != 1 || !strings.Contains(xe.Reason, "longer") {
		t.Fatalf("got %v at %d, want an XAPIError for statement 1", err, idx)
	}
}

func FuzzXAPIReader(f *testing.F) {
	for _, v := range loadXAPIVectors(f) {
		f.Add(v.input)
	}
	f.Add([]byte(`{"statements":{}}`))
	f.Add([]byte(`{"more":1}`))
	f.Add([]byte(`[1,"a",null,{}]`))
	f.Fuzz(func(t *testing.T, input []byte) {
		r := NewXAPIReader(bytes.NewReader(input))
		checkReader(t, r)
		// Whatever the input, a record holds only the type's fields.
		r = NewXAPIReader(bytes.NewReader(input))
		for i := 0; i < 1<<16; i++ {
			rec, _, err := r.Next()
			if err != nil {
				var ve *ValidationError
				if errors.As(err, &ve) {
					continue
				}
				return
			}
			if _, err := Default().Classify(rec, date("2026-11-23")); err != nil {
				t.Fatalf("a record the reader gave does not classify: %v", err)
			}
		}
	})
}

// TestXAPILanguageMapChoice: a language map gives its en-US value, else
// its en value, else the value of the first language tag in byte order,
// whatever order the map is written in.
func TestXAPILanguageMapChoice(t *testing.T) {
	for _, tc := range []struct{ display, want string }{
		{`{"zh-CN":"完成","de-DE":"abgeschlossen","fr-FR":"terminé"}`, "abgeschlossen"},
		{`{"fr-FR":"terminé","zh-CN":"完成"}`, "terminé"},
		{`{"zh-CN":"完成","en":"completed","de-DE":"abgeschlossen"}`, "completed"},
		{`{"en":"done","en-US":"completed"}`, "completed"},
	} {
		stmt := `{"actor":{"mbox":"mailto:a@example.com"},"verb":{"id":"http://adlnet.gov/expapi/verbs/completed","display":` +
			tc.display + `},"object":{"id":"http://example.com/unit/1"}}`
		rec, verr := ParseXAPIStatement([]byte(stmt))
		if verr != nil {
			t.Fatalf("%s: %v", tc.display, verr)
		}
		if got := rec.Fields["verb_display"]; got != tc.want {
			t.Errorf("display %s: verb_display %v, want %q", tc.display, got, tc.want)
		}
	}
}
