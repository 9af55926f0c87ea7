package schema

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Dimension is a dimension aggregates may group by, as the standard
// declares it (STANDARD.md §2): the field it reads, that field's level,
// the groupings a query may use and the minimum cell size of any table
// grouped by it. Values and Classes are shared with the standard and must
// not be modified.
type Dimension struct {
	Name  string // how a query names it, e.g. "gender"
	Type  string // the record type, e.g. "student"
	Field string // the field of the record type it reads
	Kind  Kind   // the field's kind
	// Level is the field's level: the highest of its declared level and
	// its value rules' levels. The file must state it.
	Level Level
	// MinCellSize is the smallest cell a release grouped by the dimension
	// may show: cells below the larger of it and the query's k are
	// suppressed.
	MinCellSize int64
	// At most one of Values, Classes and Prefix is set; none means any
	// value of the field is a grouping.
	Values  []string            // the values a query may group by
	Classes map[string][]string // named classes of values, by class
	Prefix  int                 // the grouping is the first Prefix characters of the value
}

// Allows reports whether a query may use g as one of the dimension's
// groupings.
func (d *Dimension) Allows(g string) bool {
	switch {
	case d.Values != nil:
		return slices.Contains(d.Values, g)
	case d.Classes != nil:
		_, ok := d.Classes[g]
		return ok
	case d.Prefix > 0:
		return utf8Len(g) == d.Prefix
	}
	return g != ""
}

// Grouping returns the grouping a record's value v (its text form: a
// string, a number's digits, "true" or "false") falls in, or "" if none.
// A flag that is set (true, or a string saying what) groups as "true".
func (d *Dimension) Grouping(v string) string {
	if d.Kind == KindFlag && v != "" && v != "false" {
		v = "true"
	}
	switch {
	case v == "":
		return ""
	case d.Classes != nil:
		for c, vs := range d.Classes {
			if slices.Contains(vs, v) {
				return c
			}
		}
		return ""
	case d.Prefix > 0:
		if utf8Len(v) < d.Prefix {
			return ""
		}
		return firstChars(v, d.Prefix)
	case d.Values != nil && !slices.Contains(d.Values, v):
		return ""
	}
	return v
}

// validLabel: valid UTF-8 with no control character.
func validLabel(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

func utf8Len(s string) int {
	n := 0
	for range s {
		n++
	}
	return n
}

func firstChars(s string, k int) string {
	i := 0
	for j := range s {
		if i == k {
			return s[:j]
		}
		i++
	}
	return s
}

// Dimensions returns the names of the dimensions aggregates may group by,
// sorted.
func (s *Standard) Dimensions() []string {
	names := make([]string, 0, len(s.dims))
	for n := range s.dims {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Dimension returns the named dimension; false if the standard does not
// declare it.
func (s *Standard) Dimension(name string) (*Dimension, bool) {
	d, ok := s.dims[name]
	return d, ok
}

// MaxMinCellSize is the largest minimum cell size a dimension may declare.
const MaxMinCellSize = 1_000_000

type rawDimension struct {
	Type        string              `json:"type"`
	Field       string              `json:"field"`
	Level       string              `json:"level"`
	MinCellSize *int64              `json:"min_cell_size"`
	Values      []string            `json:"values"`
	Classes     map[string][]string `json:"classes"`
	Prefix      int                 `json:"prefix"`
}

var dimNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

func (s *Standard) parseDimensions(raw map[string]rawDimension) error {
	s.dims = make(map[string]*Dimension, len(raw))
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d, err := s.parseDimension(name, raw[name])
		if err != nil {
			return err
		}
		s.dims[name] = d
	}
	return nil
}

func (s *Standard) parseDimension(name string, rd rawDimension) (*Dimension, error) {
	path := "dimensions." + name
	if !dimNameRE.MatchString(name) {
		return nil, locErr(path, "a dimension name is 1..48 of a-z, 0-9, '_', starting with a letter")
	}
	t, ok := s.types[rd.Type]
	if !ok {
		return nil, locErr(path+".type", "unknown record type %q", rd.Type)
	}
	f, ok := t.Field(rd.Field)
	if !ok {
		return nil, locErr(path+".field", "unknown field %q of record type %s", rd.Field, rd.Type)
	}
	if f.Direct || f.Text || f.Name == t.key {
		return nil, locErr(path+".field", "%s.%s is a direct identifier, a key or free text: no dimension", rd.Type, rd.Field)
	}
	switch f.Kind {
	case KindString, KindEnum, KindFlag, KindBool, KindInteger:
	default:
		return nil, locErr(path+".field", "%s.%s is of kind %s: a dimension needs a string, enum, flag, bool or integer field", rd.Type, rd.Field, f.Kind)
	}
	want := f.Level
	for _, r := range f.Rules {
		want = max(want, r.Level)
	}
	lv, err := ParseLevel(rd.Level)
	if err != nil {
		return nil, locErr(path+".level", "unknown level %q", rd.Level)
	}
	if lv != want {
		return nil, locErr(path+".level", "%s: the field %s.%s is %s (its level and value rules' highest): the dimension must say so", lv, rd.Type, rd.Field, want)
	}
	if rd.MinCellSize == nil {
		return nil, locErr(path+".min_cell_size", "missing")
	}
	if *rd.MinCellSize < 1 || *rd.MinCellSize > MaxMinCellSize {
		return nil, locErr(path+".min_cell_size", "%d, want 1..%d", *rd.MinCellSize, MaxMinCellSize)
	}
	d := &Dimension{Name: name, Type: rd.Type, Field: rd.Field, Kind: f.Kind, Level: lv, MinCellSize: *rd.MinCellSize}
	set := 0
	for _, b := range []bool{rd.Values != nil, rd.Classes != nil, rd.Prefix != 0} {
		if b {
			set++
		}
	}
	if set > 1 {
		return nil, locErr(path, "at most one of values, classes and prefix")
	}
	check := func(p, v string) error {
		if v == "" || len(v) > 64 || !validLabel(v) {
			return locErr(p, "want 1..64 bytes of text")
		}
		if f.Kind == KindEnum && !slices.Contains(f.Values, v) {
			return locErr(p, "%q is not among the enum's values", v)
		}
		if (f.Kind == KindFlag || f.Kind == KindBool) && v != "true" && v != "false" {
			return locErr(p, "%q: a flag or bool groups as true or false", v)
		}
		return nil
	}
	switch {
	case rd.Values != nil:
		if len(rd.Values) == 0 {
			return nil, locErr(path+".values", "empty")
		}
		for i, v := range rd.Values {
			p := fmt.Sprintf("%s.values[%d]", path, i)
			if err := check(p, v); err != nil {
				return nil, err
			}
			if slices.Contains(rd.Values[:i], v) {
				return nil, locErr(p, "%q listed twice", v)
			}
		}
		d.Values = rd.Values
	case rd.Classes != nil:
		if len(rd.Classes) == 0 {
			return nil, locErr(path+".classes", "empty")
		}
		seen := map[string]string{}
		for _, c := range sortedKeys(rd.Classes) {
			p := path + ".classes." + c
			if c == "" || len(c) > 64 || !validLabel(c) {
				return nil, locErr(path+".classes", "a class name is 1..64 bytes of text")
			}
			if len(rd.Classes[c]) == 0 {
				return nil, locErr(p, "no values")
			}
			for i, v := range rd.Classes[c] {
				vp := fmt.Sprintf("%s[%d]", p, i)
				if err := check(vp, v); err != nil {
					return nil, err
				}
				if o, dup := seen[v]; dup {
					return nil, locErr(vp, "%q is in class %s already", v, o)
				}
				seen[v] = c
			}
		}
		d.Classes = rd.Classes
	case rd.Prefix != 0:
		if rd.Prefix < 1 || rd.Prefix > 16 {
			return nil, locErr(path+".prefix", "%d, want 1..16 characters", rd.Prefix)
		}
		if f.Kind != KindString && f.Kind != KindInteger {
			return nil, locErr(path+".prefix", "a prefix needs a string or integer field")
		}
		d.Prefix = rd.Prefix
	}
	return d, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
