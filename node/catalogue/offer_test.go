package catalogue

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// TestParseOffer: the example offer parses and labels its fields by the
// standard; each broken offer is refused with an error naming the field
// that is wrong.
func TestParseOffer(t *testing.T) {
	std := schema.Default()
	good, err := os.ReadFile("testdata/offer.json")
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOffer(good, std)
	if err != nil {
		t.Fatalf("testdata/offer.json: %v", err)
	}
	got := o.fields(std)
	want := []Field{{"course_grade", "student_id", "ID", "L2", false}, {"course_grade", "course_code", "AC", "L1", false},
		{"course_grade", "term", "AC", "L1", false}, {"course_grade", "score", "AC", "L3", false}}
	if len(got) != len(want) {
		t.Fatalf("fields %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// Without a field list, a type holds all its fields.
	o.Fields = nil
	if k := len(o.fields(std)); k < 10 {
		t.Errorf("course_grade with every field: %d fields", k)
	}

	var base map[string]any
	if err := json.Unmarshal(good, &base); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		edit  func(m map[string]any)
		field string // the error names it
	}{
		{"id upper case", func(m map[string]any) { m["id"] = "Grades" }, "id:"},
		{"id missing", func(m map[string]any) { delete(m, "id") }, "id:"},
		{"title missing", func(m map[string]any) { delete(m, "title") }, "title: required"},
		{"title control character", func(m map[string]any) { m["title"] = "a\x00b" }, "title: holds a control character"},
		{"no record types", func(m map[string]any) { m["record_types"] = []string{} }, "record_types: required"},
		{"unknown record type", func(m map[string]any) { m["record_types"] = []string{"course_grade", "spaceship"} }, "record_types[1]"},
		{"record type twice", func(m map[string]any) { m["record_types"] = []string{"course_grade", "course_grade"} }, "record_types[1]"},
		{"unknown field", func(m map[string]any) { m["fields"] = map[string][]string{"course_grade": {"score", "shoe_size"}} }, "fields.course_grade[1]"},
		{"fields of a type not offered", func(m map[string]any) { m["fields"] = map[string][]string{"student": {"name"}} }, "fields.student"},
		{"empty field list", func(m map[string]any) { m["fields"] = map[string][]string{"course_grade": {}} }, "fields.course_grade: empty"},
		{"no purposes", func(m map[string]any) { delete(m, "purposes") }, "purposes: required"},
		{"unknown purpose", func(m map[string]any) { m["purposes"] = []string{"learning_analytics", "marketing"} }, "purposes[1]"},
		{"no licence", func(m map[string]any) { m["licence"] = "" }, "licence: required"},
		{"retention zero", func(m map[string]any) { m["retention_days"] = 0 }, "retention_days"},
		{"retention too long", func(m map[string]any) { m["retention_days"] = 99999 }, "retention_days"},
		{"no contact", func(m map[string]any) { delete(m, "contact") }, "contact: required"},
		{"contact not an address", func(m map[string]any) { m["contact"] = "call Mr Li" }, "contact:"},
		{"bad language", func(m map[string]any) { m["language"] = "english!" }, "language:"},
		{"too many keywords", func(m map[string]any) { m["keywords"] = make([]string, 21) }, "keywords:"},
	} {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		c.edit(m)
		data, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseOffer(data, std)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: got error %v, want one naming %q", c.name, err, c.field)
		}
	}
	for _, c := range []struct{ name, data, want string }{
		{"unknown key", `{"id":"x","rows":5}`, `unknown field "rows"`},
		{"two objects", string(good) + "{}", "one JSON object expected"},
		{"not JSON", `id: x`, "offer:"},
	} {
		if _, err := ParseOffer([]byte(c.data), std); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
	// Contacts: an address or an http(s) URL.
	for c, ok := range map[string]bool{"a@b.example": true, "https://uni.example/data": true, "ftp://x": false, "Li <a@b.example>": false} {
		if validContact(c) != ok {
			t.Errorf("validContact(%q) = %v, want %v", c, !ok, ok)
		}
	}
}

// TestDatasetCheck: a member's dataset must be well formed whatever
// standard labelled it: a negative or un-noised count, an unknown level or
// a field outside its record types is refused.
func TestDatasetCheck(t *testing.T) {
	good := Dataset{ID: "d1", Publisher: "uni-a", Title: "t", RecordTypes: []string{"course_grade"},
		Fields: []Field{{RecordType: "course_grade", Name: "score", Category: "AC", Level: "L3"}}, Level: "L3",
		Rows:     Rows{Noised: 12, Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw},
		Purposes: []policy.Purpose{"learning_analytics"}, Licence: "CC0", RetentionDays: 30, Contact: "a@b.example"}
	if err := good.check(); err != nil {
		t.Fatalf("good dataset: %v", err)
	}
	for name, edit := range map[string]func(d *Dataset){
		"negative count":        func(d *Dataset) { d.Rows.Noised = -1 },
		"no mechanism":          func(d *Dataset) { d.Rows.Mechanism = "" },
		"unknown level":         func(d *Dataset) { d.Level = "L9" },
		"field level":           func(d *Dataset) { d.Fields[0].Level = "secret" },
		"field of another type": func(d *Dataset) { d.Fields[0].RecordType = "student" },
		"field name":            func(d *Dataset) { d.Fields[0].Name = "Score!" },
		"bad id":                func(d *Dataset) { d.ID = "../x" },
		"unknown purpose":       func(d *Dataset) { d.Purposes = []policy.Purpose{"sale"} },
	} {
		d := good
		d.Fields = append([]Field(nil), good.Fields...)
		edit(&d)
		if err := d.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
