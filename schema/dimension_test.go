package schema

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestDefaultDimensions: the default standard declares the dimensions the
// aggregate code groups by and the equity dimensions its fields support,
// each with the field's level and a minimum cell size.
func TestDefaultDimensions(t *testing.T) {
	std := Default()
	want := []string{"disability", "education_level", "employer_region", "ethnicity", "gender", "grade_year",
		"hardship_level", "hukou_type", "major_category", "major_code", "program_category", "rating"}
	if got := std.Dimensions(); !slices.Equal(got, want) {
		t.Fatalf("Dimensions: got %q, want %q", got, want)
	}
	for _, c := range []struct {
		name, typ, field string
		level            Level
		min              int64
	}{
		{"gender", "student", "gender", L2, 10}, {"hukou_type", "student", "hukou_type", L3, 10},
		{"ethnicity", "student", "ethnicity", L3, 20}, {"disability", "student", "disability", L4, 20},
		{"grade_year", "enrollment", "grade_year", L2, 10}, {"education_level", "enrollment", "education_level", L1, 10},
		{"major_code", "enrollment", "major_code", L1, 10}, {"major_category", "enrollment", "major_code", L1, 10},
		{"rating", "health_test", "rating", L4, 20}, {"program_category", "financial_aid", "program_category", L1, 10},
		{"hardship_level", "financial_aid", "hardship_level", L4, 20}, {"employer_region", "employment", "employer_region", L2, 10},
	} {
		d, ok := std.Dimension(c.name)
		if !ok || d.Name != c.name || d.Type != c.typ || d.Field != c.field || d.Level != c.level || d.MinCellSize != c.min {
			t.Errorf("%s: got %+v, want %+v", c.name, d, c)
		}
	}
	if _, ok := std.Dimension("name"); ok {
		t.Error("a dimension on student.name")
	}

	// Groupings: listed values, classes, a prefix, any value, flags.
	for _, c := range []struct{ dim, value, group string }{
		{"gender", "女", "女"}, {"gender", "未知", ""}, {"gender", "", ""},
		{"hukou_type", "农业户口", "农村"}, {"hukou_type", "城镇", "城镇"}, {"hukou_type", "外籍", ""},
		{"ethnicity", "汉族", "汉族"}, {"ethnicity", "回族", "少数民族"}, {"ethnicity", "基诺族", "少数民族"},
		{"major_category", "080901", "08"}, {"major_category", "0", ""}, {"major_code", "080901", "080901"},
		{"disability", "true", "true"}, {"disability", "视力残疾", "true"}, {"disability", "false", "false"},
		{"disability", "", ""},
	} {
		d, _ := std.Dimension(c.dim)
		if got := d.Grouping(c.value); got != c.group {
			t.Errorf("%s: %q groups as %q, want %q", c.dim, c.value, got, c.group)
		}
	}
	for _, c := range []struct {
		dim, group string
		ok         bool
	}{
		{"gender", "男", true}, {"gender", "other", false}, {"hukou_type", "农村", true}, {"hukou_type", "农业户口", false},
		{"major_category", "08", true}, {"major_category", "080", false}, {"major_code", "anything", true},
		{"major_code", "", false}, {"disability", "true", true}, {"disability", "yes", false},
	} {
		d, _ := std.Dimension(c.dim)
		if got := d.Allows(c.group); got != c.ok {
			t.Errorf("%s allows %q: got %v, want %v", c.dim, c.group, got, c.ok)
		}
	}
}

// TestParseDimensions: a standard without dimensions parses and declares
// none; each wrong declaration is refused with its path.
func TestParseDimensions(t *testing.T) {
	edit := func(f func(dims map[string]any)) []byte {
		var doc map[string]any
		if err := json.Unmarshal(DefaultJSON(), &doc); err != nil {
			t.Fatal(err)
		}
		dims := doc["dimensions"].(map[string]any)
		f(dims)
		if len(dims) == 0 {
			delete(doc, "dimensions")
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	none, err := ParseStandard(edit(func(d map[string]any) { clear(d) }))
	if err != nil || len(none.Dimensions()) != 0 {
		t.Fatalf("no dimensions: %v %q", err, none.Dimensions())
	}
	custom, err := ParseStandard(edit(func(d map[string]any) {
		d["staff_post"] = map[string]any{"type": "staff", "field": "post_type", "level": "L2", "min_cell_size": 5}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := custom.Dimension("staff_post"); !ok || d.MinCellSize != 5 || d.Level != L2 {
		t.Errorf("custom dimension: %+v %v", d, ok)
	}

	dim := func(kv ...any) map[string]any {
		m := map[string]any{"type": "student", "field": "gender", "level": "L2", "min_cell_size": 10}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	for _, c := range []struct {
		name string
		d    map[string]any
		want string
	}{
		{"x", dim("field", "shoe_size"), `dimensions.x.field: unknown field "shoe_size" of record type student`},
		{"x", dim("type", "pupil"), `dimensions.x.type: unknown record type "pupil"`},
		{"x", dim("field", "disability", "level", "L3"), "dimensions.x.level: L3: the field student.disability is L4"},
		{"x", dim("field", "disability", "level", nil), `dimensions.x.level: unknown level ""`},
		{"x", dim("level", "L4"), "dimensions.x.level: L4: the field student.gender is L2"},
		{"x", dim("type", "program_participation", "field", "program_type", "level", "L3"),
			"dimensions.x.level: L3: the field program_participation.program_type is L4"},
		{"x", dim("min_cell_size", 0), "dimensions.x.min_cell_size: 0, want 1..1000000"},
		{"x", dim("min_cell_size", -3), "dimensions.x.min_cell_size: -3"},
		{"x", dim("min_cell_size", 1000001), "dimensions.x.min_cell_size: 1000001"},
		{"x", dim("min_cell_size", nil), "dimensions.x.min_cell_size: missing"},
		{"x", dim("min_cell_size", 2.5), "min_cell_size"},
		{"x", dim("field", "name"), "dimensions.x.field: student.name is a direct identifier"},
		{"x", dim("field", "notes", "level", "L3"), "dimensions.x.field: student.notes is a direct identifier, a key or free text"},
		{"x", dim("field", "birth_date", "level", "L3"), "dimensions.x.field: student.birth_date is of kind date"},
		{"x", dim("values", []any{}), "dimensions.x.values: empty"},
		{"x", dim("values", []any{"男", "男"}), `dimensions.x.values[1]: "男" listed twice`},
		{"x", dim("values", []any{"男"}, "prefix", 1), "dimensions.x: at most one of values, classes and prefix"},
		{"x", dim("classes", map[string]any{"a": []any{"男"}, "b": []any{"男"}}), `dimensions.x.classes.b[0]: "男" is in class a already`},
		{"x", dim("classes", map[string]any{"a": []any{}}), "dimensions.x.classes.a: no values"},
		{"x", dim("prefix", 40), "dimensions.x.prefix: 40, want 1..16"},
		{"x", dim("field", "disability", "level", "L4", "values", []any{"yes"}), `dimensions.x.values[0]: "yes": a flag or bool groups as true or false`},
		{"x", dim("field", "id_type", "values", []any{"passport", "visa"}), `dimensions.x.values[1]: "visa" is not among the enum's values`},
		{"X y", dim(), "dimensions.X y: a dimension name is"},
		{"x", dim("colour", "red"), `unknown field "colour"`},
	} {
		_, err := ParseStandard(edit(func(d map[string]any) { d[c.name] = c.d }))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.d, err, c.want)
		}
	}
}
