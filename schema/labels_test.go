package schema

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"testing"

	"github.com/eduspace/eduspace/schema/synth"
)

// TestLabelsRoundTrip: labels stored with AppendLabels read back as the
// same classification (the classify output line, the subject, the birth
// date, and policy's view: Sorted), for records of every shape the tests
// hold: the classification vectors and the Ed-Fi fixtures.
func TestLabelsRoundTrip(t *testing.T) {
	std := Default()
	var all []Labels
	data, _ := synth.Students(300, 7)
	rd := NewNDJSONReader(bytes.NewReader(data), "")
	for {
		rec, _, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		// As of a date at which some of them are minors.
		l, err := std.Classify(rec, date("2008-09-01"))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, l)
	}
	t.Run("fixtures", func(t *testing.T) {
		for _, name := range []string{"Student.xml", "Contact.xml", "StudentHealth.xml", "StudentDiscipline.xml"} {
			_, labels := classifiedFixture(t, name, true)
			all = append(all, labels...)
		}
	})
	minors := 0
	for _, l := range all {
		if slices.Contains(l.Flags, "minor") {
			minors++
		}
	}
	if len(all) < 300 || minors == 0 || minors == len(all) {
		t.Fatalf("%d labels to round-trip, %d of minors: want adults and minors", len(all), minors)
	}
	for i, l := range all {
		data := std.AppendLabels(nil, l)
		got, err := std.ParseLabels(data)
		if err != nil {
			t.Fatalf("labels %d: %v", i, err)
		}
		if a, b := l.AppendJSON(nil, i, l.ID), got.AppendJSON(nil, i, got.ID); !bytes.Equal(a, b) {
			t.Fatalf("labels %d:\n got %s\nwant %s", i, b, a)
		}
		if got.Subject != l.Subject || got.SubjectKey != l.SubjectKey || !got.BirthDate.Equal(l.BirthDate) {
			t.Errorf("labels %d: subject %q/%q born %v, want %q/%q born %v", i, got.Subject, got.SubjectKey, got.BirthDate,
				l.Subject, l.SubjectKey, l.BirthDate)
		}
		type pair struct {
			name string
			fl   FieldLabel
		}
		var want, have []pair
		for name, fl := range l.Sorted() {
			want = append(want, pair{name, fl})
		}
		for name, fl := range got.Sorted() {
			have = append(have, pair{name, fl})
		}
		if len(want) != len(have) || !slices.EqualFunc(want, have, func(a, b pair) bool {
			return a.name == b.name && a.fl.Category == b.fl.Category && a.fl.Level == b.fl.Level &&
				a.fl.DirectID == b.fl.DirectID && a.fl.Text == b.fl.Text && slices.Equal(a.fl.Detectors, b.fl.Detectors)
		}) {
			t.Errorf("labels %d: fields in order %v, want %v", i, have, want)
		}
		if !reflect.DeepEqual(got.Flags, l.Flags) && !(len(got.Flags) == 0 && len(l.Flags) == 0) {
			t.Errorf("labels %d: flags %v, want %v", i, got.Flags, l.Flags)
		}
	}
}

// TestLabelsRefused: stored labels of another standard, truncated or with
// bytes after them do not parse.
func TestLabelsRefused(t *testing.T) {
	std := Default()
	l, err := std.Classify(Record{Type: "student", Fields: map[string]any{"student_id": "20240001", "name": "张三"}}, date("2026-11-23"))
	if err != nil {
		t.Fatal(err)
	}
	data := std.AppendLabels(nil, l)
	other := bytes.Replace(data, []byte(std.Name()), []byte("EDU-CN-DEFAULT v9"), 1)
	if _, err := std.ParseLabels(other); !errors.Is(err, ErrOtherStandard) {
		t.Errorf("labels of another version: %v, want ErrOtherStandard", err)
	}
	for _, bad := range [][]byte{nil, data[:len(data)-1], append(slices.Clone(data), 0), {2}} {
		if _, err := std.ParseLabels(bad); err == nil {
			t.Errorf("%d bytes of broken labels parsed", len(bad))
		}
	}
}
