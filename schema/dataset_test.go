package schema

import (
	"slices"
	"strconv"
	"testing"
)

func subjectLabels(id string, lv Level, rules ...string) Labels {
	return Labels{Type: "student", SubjectKey: "student_id", Subject: id, ID: id, Level: lv, Rules: append([]string{"C1"}, rules...)}
}

func TestDatasetVolume(t *testing.T) {
	tests := []struct {
		name  string
		n     int   // distinct subjects
		lv    Level // level of each subject's record
		level Level
		rules []string
	}{
		{"999 at L3", 999, L3, L3, []string{"C1"}},
		{"1000 at L3: V1", 1000, L3, L3, []string{"C1", "V1"}},
		{"1000 at L2", 1000, L2, L2, []string{"C1"}},
		{"9999 at L4: V1", 9999, L4, L4, []string{"C1", "V1"}},
		{"10000 at L4: V2", 10000, L4, IMP, []string{"C1", "V1", "V2"}},
		{"10000 at L3", 10000, L3, L3, []string{"C1", "V1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDataset(Default())
			for i := range tt.n {
				l := subjectLabels("S"+strconv.Itoa(i), tt.lv)
				d.Add(l)
				d.Add(l) // a second record of the same subject counts once
			}
			d.AddInvalid()
			s := d.Summary()
			if s.Level != tt.level || !slices.Equal(s.Rules, tt.rules) || s.Subjects != tt.n || s.Records != 2*tt.n || s.Invalid != 1 {
				t.Errorf("got %+v, want level %v rules %q subjects %d records %d invalid 1", s, tt.level, tt.rules, tt.n, 2*tt.n)
			}
		})
	}
}

func TestDatasetClassifiedL4(t *testing.T) {
	// 10,000 classified minors (L4 by C3) make the dataset IMP under V2.
	std := Default()
	d := NewDataset(std)
	asOf := date("2026-01-01")
	for i := range 10000 {
		l, err := std.Classify(Record{Type: "student", Fields: map[string]any{
			"student_id": "S" + strconv.Itoa(i), "birth_date": "2015-03-01",
		}}, asOf)
		if err != nil {
			t.Fatal(err)
		}
		d.Add(l)
	}
	s := d.Summary()
	if want := []string{"C1", "C3", "V1", "V2"}; s.Level != IMP || !slices.Equal(s.Rules, want) || s.Subjects != 10000 {
		t.Errorf("got %+v, want level IMP rules %q subjects 10000", s, want)
	}
	got := string(s.AppendJSON(nil))
	if want := `{"summary":{"records":10000,"invalid":0,"subjects":10000,"level":"IMP","rules":["C1","C3","V1","V2"]}}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestDatasetSubjectsPerKey(t *testing.T) {
	d := NewDataset(Default())
	d.Add(Labels{SubjectKey: "student_id", Subject: "1", Level: L2, Rules: []string{"C1"}})
	d.Add(Labels{SubjectKey: "staff_id", Subject: "1", Level: L2, Rules: []string{"C1"}})
	d.Add(Labels{Type: "course", ID: "C1", Level: L1, Rules: []string{"C1"}})
	if s := d.Summary(); s.Subjects != 2 || s.Records != 3 || s.Level != L2 {
		t.Errorf("got %+v, want 2 subjects, 3 records, L2", s)
	}
	// A subject whose level rises is counted at the higher level.
	d = NewDataset(Default())
	d.Add(subjectLabels("x", L2))
	d.Add(subjectLabels("x", L4, "C2"))
	if d.atLeast[L4] != 1 || d.atLeast[L2] != 1 || len(d.subjects) != 1 {
		t.Errorf("got atLeast %v, want one subject at L4", d.atLeast)
	}
	if s := NewDataset(Default()).Summary(); s.Level != L1 || s.Rules == nil || len(s.Rules) != 0 {
		t.Errorf("empty dataset: got %+v, want level L1, rules []", s)
	}
}

func TestCustomVolumeThresholds(t *testing.T) {
	std, err := ParseStandard(customStandard(t, `"min_level": "L1", "subjects": 1000000`, `"min_level": "L1", "subjects": 50`))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDataset(std)
	for i := range 50 {
		d.Add(subjectLabels(strconv.Itoa(i), L1))
	}
	if s := d.Summary(); s.Level != IMP || !slices.Equal(s.Rules, []string{"C1", "V3"}) {
		t.Errorf("got %+v, want IMP by V3", s)
	}
}
