package schema

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/eduspace/eduspace/schema/synth"
)

// sameAsMapPath checks that ParseRow and ClassifyRow give what Parse and
// ClassifyInto give for line: the same error, or the same labels.
func sameAsMapPath(t *testing.T, std *Standard, p *LineParser, row *Row, line []byte, asOf time.Time) {
	t.Helper()
	var want Labels
	rec, werr := NewLineParser(p.defaultType).Parse(line, nil)
	var wantErr error
	if werr != nil {
		wantErr = werr
	} else {
		want, wantErr = std.Classify(rec, asOf)
	}
	var got Labels
	var gotErr error
	if verr := p.ParseRow(line, std, row); verr != nil {
		gotErr = verr
	} else {
		got, gotErr = std.ClassifyRow(row, asOf)
	}
	if !reflect.DeepEqual(gotErr, wantErr) {
		t.Fatalf("%q: row path error %v, map path %v", line, gotErr, wantErr)
	}
	if wantErr != nil {
		return
	}
	if got.Fields != nil {
		t.Fatalf("%q: row labels have a Fields map", line)
	}
	// What ingest stores: the same bytes as encoding/json's of the map.
	if wantJSON, err := json.Marshal(rec.Fields); err != nil || !bytes.Equal(row.AppendMapJSON(nil), wantJSON) {
		t.Fatalf("%q: AppendMapJSON %s, encoding/json %s (%v)", line, row.AppendMapJSON(nil), wantJSON, err)
	}
	if got.Type != want.Type || got.Subject != want.Subject || got.SubjectKey != want.SubjectKey || got.ID != want.ID ||
		got.Level != want.Level || !reflect.DeepEqual(got.Flags, want.Flags) || !reflect.DeepEqual(got.Rules, want.Rules) ||
		!got.BirthDate.Equal(want.BirthDate) {
		t.Fatalf("%q: row labels %+v, map labels %+v", line, got, want)
	}
	if got.NumFields() != len(want.Fields) {
		t.Fatalf("%q: %d fields, want %d", line, got.NumFields(), len(want.Fields))
	}
	var gotNames, wantNames []string
	for name, fl := range got.Sorted() {
		gotNames = append(gotNames, name)
		if w := want.Fields[name]; !reflect.DeepEqual(fl, w) {
			t.Fatalf("%q: field %s: row label %+v, map label %+v", line, name, fl, w)
		}
		if f, ok := got.Field(name); !ok || !reflect.DeepEqual(f, fl) {
			t.Fatalf("%q: Field(%s) = %+v, %v; Sorted gave %+v", line, name, f, ok, fl)
		}
	}
	for name := range want.Sorted() {
		wantNames = append(wantNames, name)
	}
	if !reflect.DeepEqual(gotNames, wantNames) {
		t.Fatalf("%q: row fields %v, map fields %v", line, gotNames, wantNames)
	}
	if _, ok := got.Field("no_such_field"); ok {
		t.Fatalf("%q: Field finds a field the type does not have", line)
	}
	// Every value is where the type's index of its name says.
	rt := row.RecordType()
	for i, f := range rt.fields {
		v, has := rec.Fields[f.Name]
		if has != row.Has[i] || !reflect.DeepEqual(v, row.Value(i)) {
			t.Fatalf("%q: field %s: row has %v %#v, record %v %#v", line, f.Name, row.Has[i], row.Value(i), has, v)
		}
		if s, ok := row.String(i); ok != (reflect.TypeOf(v) == reflect.TypeOf("")) || (ok && s != v) {
			t.Fatalf("%q: field %s: String gives %q, %v for %#v", line, f.Name, s, ok, v)
		}
	}
}

// rowEdgeLines are lines off the common path: each must go the row path
// exactly as the map path.
var rowEdgeLines = []string{
	`{"type":"course","course_code":"MATH101","course_name":"Calculus"}`,
	`{"type":"nosuchtype","x":1}`,
	`{"type":7,"student_id":"1"}`,
	`{"student_id":"20240000001","name":"张三","zzz":1,"aaa":2,"type":"student"}`,
	`{"type":"student","student_id":"20240000001","name":"a\"b"}`,
	`{"type":"student","student_id":"20240000001","name":null}`,
	`{"type":"student","student_id":null}`,
	`{"type":"student","student_id":"1","student_id":"2"}`,
	`{"type":"student","type":"course","course_code":"C1"}`,
	`{"type":"student","student_id":"1","birth_date":"2013-02-30"}`,
	`{"type":"student","student_id":"1","birth_date":"2015-06-01","gender":"女"}`,
	`{"type":"student","student_id":"1","gender":true}`,
	`{"type":"student","student_id":"1","name":"<a>&b","address":"x\u2028y\u0007","email":"\u003c"}`,
	`{"type":"course_grade","student_id":"1","course_code":"C1","score":90.50,"credits":1e2}`,
	`{"type":"student","student_id":"1","name":"\ud800"}`,
	`not json`, `{}`, `{"student_id":"1"}`, `[1]`, `{"type":"student","student_id":"1"} x`,
}

func TestRowMatchesMapPath(t *testing.T) {
	std := Default()
	asOf := date("2026-11-23")
	data, _ := synth.Students(2000, 3)
	p, row := NewLineParser(""), new(Row)
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		sameAsMapPath(t, std, p, row, line, asOf)
	}
	// Edge cases, between records of the common shape so that the
	// member-order cache is exercised both ways.
	for _, dflt := range []string{"", "student"} {
		p := NewLineParser(dflt)
		for _, line := range rowEdgeLines {
			sameAsMapPath(t, std, p, row, []byte(line), asOf)
			sameAsMapPath(t, std, p, row, bytes.SplitN(data, []byte("\n"), 2)[0], asOf)
		}
	}
}

// TestRowMatchesMapPathFixtures runs every Ed-Fi fixture record, as an
// NDJSON line, both ways: the other record types and their detectors.
func TestRowMatchesMapPathFixtures(t *testing.T) {
	std := Default()
	asOf := date("2026-11-23")
	p, row := NewLineParser(""), new(Row)
	n := 0
	for _, name := range []string{"Student.xml", "Contact.xml", "StudentHealth.xml", "StudentProgram.xml"} {
		recs, _ := classifiedFixture(t, name, true)
		for _, rec := range recs {
			m := map[string]any{"type": rec.Type}
			for k, v := range rec.Fields {
				m[k] = v
			}
			line, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			sameAsMapPath(t, std, p, row, line, asOf)
			n++
		}
	}
	if n == 0 {
		t.Fatal("no fixture records")
	}
}

func FuzzRow(f *testing.F) {
	data, _ := synth.Students(3, 5)
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		f.Add(string(line))
	}
	for _, line := range rowEdgeLines {
		f.Add(line)
	}
	std := Default()
	asOf := date("2026-11-23")
	p, row := NewLineParser(""), new(Row)
	f.Fuzz(func(t *testing.T, s string) {
		sameAsMapPath(t, std, p, row, []byte(s), asOf)
	})
}

// TestShareLines checks that with ShareLines string values refer to the
// line itself, and without it to a copy; the values are the same.
func TestShareLines(t *testing.T) {
	std := Default()
	line := []byte(`{"type":"student","student_id":"20240000001","name":"张三"}`)
	inLine := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		start := uintptr(unsafe.Pointer(&line[0]))
		return p >= start && p < start+uintptr(len(line))
	}
	rt, _ := std.Type("student")
	i, _ := rt.FieldIndex("name")
	for _, shared := range []bool{false, true} {
		p, row := NewLineParser(""), new(Row)
		if shared {
			p.ShareLines()
		}
		if verr := p.ParseRow(line, std, row); verr != nil {
			t.Fatal(verr)
		}
		name, ok := row.String(i)
		if !ok || name != "张三" {
			t.Fatalf("shared %v: name %q, %v", shared, name, ok)
		}
		if inLine(name) != shared {
			t.Errorf("shared %v: the value refers to the line: %v", shared, inLine(name))
		}
	}
}

// TestRowKeep: a kept row and its labels stay as they were when the row
// is parsed into and classified again.
func TestRowKeep(t *testing.T) {
	std := Default()
	asOf := date("2026-11-23")
	data, _ := synth.Students(2, 7)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	p, row := NewLineParser(""), new(Row)
	if verr := p.ParseRow(lines[0], std, row); verr != nil {
		t.Fatal(verr)
	}
	l, err := std.ClassifyRow(row, asOf)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, wantLabels := row.AppendMapJSON(nil), std.AppendLabels(nil, l)
	kept, keptLabels := row.Keep(l)
	if verr := p.ParseRow(lines[1], std, row); verr != nil {
		t.Fatal(verr)
	}
	if _, err := std.ClassifyRow(row, asOf); err != nil {
		t.Fatal(err)
	}
	if got := kept.AppendMapJSON(nil); !bytes.Equal(got, wantJSON) {
		t.Errorf("kept row %s, want %s", got, wantJSON)
	}
	if got := std.AppendLabels(nil, keptLabels); !bytes.Equal(got, wantLabels) {
		t.Errorf("kept labels %x, want %x", got, wantLabels)
	}
}
