package schema

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

//go:embed standards/edu-cn-default-v1.json
var defaultStandardJSON []byte

var defaultStandard = sync.OnceValue(func() *Standard {
	s, err := ParseStandard(defaultStandardJSON)
	if err != nil {
		panic("schema: embedded standard EDU-CN-DEFAULT v1: " + err.Error())
	}
	return s
})

// Default returns the built-in standard EDU-CN-DEFAULT v1, parsed once from
// the embedded file standards/edu-cn-default-v1.json.
func Default() *Standard { return defaultStandard() }

// DefaultJSON returns a copy of the embedded file of the default standard,
// the starting point for a custom standard.
func DefaultJSON() []byte { return bytes.Clone(defaultStandardJSON) }

// Kind is the kind of value a field holds.
type Kind string

// The value kinds. Dates are YYYY-MM-DD strings; amounts are non-negative
// numbers; an enum is a string from the field's Values; a resident_id field
// holds an 18-character resident identity number (checked while the
// record's id type field is absent, empty or "resident_id"). A flag says
// that something applies to the subject (misconduct, a disability, a
// special status): true or false, or a string saying what, which is
// classified as a string field's value is (value rules, detectors).
const (
	KindString     Kind = "string"
	KindFlag       Kind = "flag"
	KindDate       Kind = "date"
	KindInteger    Kind = "integer"
	KindNumber     Kind = "number"
	KindAmount     Kind = "amount"
	KindBool       Kind = "bool"
	KindEnum       Kind = "enum"
	KindResidentID Kind = "resident_id"
)

func (k Kind) valid() bool {
	switch k {
	case KindString, KindFlag, KindDate, KindInteger, KindNumber, KindAmount, KindBool, KindEnum, KindResidentID:
		return true
	}
	return false
}

// stringKind reports whether values of kind k are JSON strings.
func (k Kind) stringKind() bool {
	switch k {
	case KindString, KindDate, KindEnum, KindResidentID:
		return true
	}
	return false
}

// ValueRule is a value-dependent rule (C2): a field holding the value takes
// this category and at least this level.
type ValueRule struct {
	Category Category
	Level    Level
}

// FieldSpec is one field of a record type as the standard declares it.
// Values and Rules are shared with the standard and must not be modified.
type FieldSpec struct {
	Name     string
	Category Category
	Level    Level
	Direct   bool // a direct identifier, tokenised on egress
	Text     bool // free text, scanned by every detector
	Required bool
	Kind     Kind
	Values   []string             // the allowed values of an enum
	Rules    map[string]ValueRule // value-dependent rules, by value
	// IDTypeField names, for a resident_id field, the field whose value
	// "resident_id" (or absence) makes the check digit mandatory.
	IDTypeField string
}

// RecordType is one record type of a standard.
type RecordType struct {
	name        string
	subjectKey  string // person subject key; "" for a type with no person subject
	key         string // subject key, or the record key of a non-person type
	keyIndex    int
	birthIndex  int  // index of the birth-date field, or -1
	showsAge    bool // ShowsAge, worked out once at parse
	fields      []FieldSpec
	idTypeIndex []int // per field: index of its IDTypeField, or -1
	index       map[string]int
	sorted      []string // field names in byte order
	sortedIndex []int    // field indexes in byte order of their names
	quoted      []string // field names as JSON strings, by index
}

// Name returns the type's name, e.g. "student".
func (t *RecordType) Name() string { return t.name }

// SubjectKey returns the field naming the person a record is about
// ("student_id", "staff_id", "guardian_id"), or "" for a type such as
// course that concerns no person.
func (t *RecordType) SubjectKey() string { return t.subjectKey }

// Key returns the field that identifies a record: the subject key, or for
// a type with no person subject its record key (course_code).
func (t *RecordType) Key() string { return t.key }

// Fields returns the type's fields in declared order.
func (t *RecordType) Fields() []FieldSpec { return slices.Clone(t.fields) }

// Field returns the named field's spec.
func (t *RecordType) Field(name string) (FieldSpec, bool) {
	i, ok := t.index[name]
	if !ok {
		return FieldSpec{}, false
	}
	return t.fields[i], true
}

// DirectIdentifiers returns the names of the type's direct identifier
// fields in declared order.
func (t *RecordType) DirectIdentifiers() []string {
	var names []string
	for _, f := range t.fields {
		if f.Direct {
			names = append(names, f.Name)
		}
	}
	return names
}

// VolumeRule is a dataset volume rule (GRADING.md §5): when records at
// MinLevel or above cover at least Subjects distinct subjects, the rule
// fires and the dataset level becomes at least Result (LevelUnknown: the
// level stays and the rule is only reported).
type VolumeRule struct {
	Rule     string
	MinLevel Level
	Subjects int
	Result   Level
}

// Standard is a data-grading standard: record types, detectors, the minor
// age and the volume rules. It is immutable and safe for concurrent use.
type Standard struct {
	name, version  string
	ref            string // name/version
	minorAge       int
	detLevel       [numDetectors]Level
	textMask       detectorMask // detectors run on text fields
	everywhereMask detectorMask // detectors run on every other string field
	terms          *termMatcher
	volume         []VolumeRule
	types          map[string]*RecordType
	typeNames      []string
	dims           map[string]*Dimension // by name
}

// Name returns the standard's name and version, e.g. "EDU-CN-DEFAULT v1".
func (s *Standard) Name() string { return s.name + " v" + s.version }

// Version returns the standard's version, e.g. "1".
func (s *Standard) Version() string { return s.version }

// Ref returns the standard's name and version as one token, NAME/VERSION,
// e.g. "EDU-CN-DEFAULT/1": how envelope headers and evidence entries name
// the standard records were classified with. ParseStandard keeps it at
// most MaxRefLen bytes, with no "/" in the name or the version and no
// control character.
func (s *Standard) Ref() string { return s.ref }

// MaxRefLen is the longest Ref a standard may have: the length of the
// envelope header's standard field (crypto/ENVELOPE.md §1).
const MaxRefLen = 64

// MinorAge returns the age under which a subject is a minor (C3).
func (s *Standard) MinorAge() int { return s.minorAge }

// Types returns the names of the record types, sorted.
func (s *Standard) Types() []string { return slices.Clone(s.typeNames) }

// Type returns the named record type.
func (s *Standard) Type(name string) (*RecordType, bool) {
	t, ok := s.types[name]
	return t, ok
}

// VolumeRules returns the dataset volume rules in the standard's order.
func (s *Standard) VolumeRules() []VolumeRule { return slices.Clone(s.volume) }

// DetectorLevel returns the level a hit of the named detector raises a
// field to; false if the standard does not enable the detector.
func (s *Standard) DetectorLevel(name string) (Level, bool) {
	for d, n := range detectorNames {
		if n == name && s.detLevel[d] != LevelUnknown {
			return s.detLevel[d], true
		}
	}
	return LevelUnknown, false
}

// The file format of a standard; see standards/edu-cn-default-v1.json.
type rawStandard struct {
	Name      string                 `json:"name"`
	Version   string                 `json:"version"`
	MinorAge  *int                   `json:"minor_age"`
	Detectors map[string]rawDetector `json:"detectors"`
	Volume    []rawVolume            `json:"volume"`
	Types     map[string]rawType     `json:"types"`
	// Dimensions: the dimensions aggregates may group by (STANDARD.md §2).
	Dimensions map[string]rawDimension `json:"dimensions"`
}

type rawDetector struct {
	Level           string   `json:"level"`
	AllStringFields bool     `json:"all_string_fields"`
	Terms           []string `json:"terms"`
}

type rawVolume struct {
	Rule     string `json:"rule"`
	MinLevel string `json:"min_level"`
	Subjects int    `json:"subjects"`
	Result   string `json:"result"`
}

type rawType struct {
	Subject   string     `json:"subject"`
	Key       string     `json:"key"`
	BirthDate string     `json:"birth_date"`
	Fields    []rawField `json:"fields"`
}

type rawField struct {
	Name        string             `json:"name"`
	Category    *string            `json:"category"`
	Level       string             `json:"level"`
	Direct      bool               `json:"direct"`
	Text        bool               `json:"text"`
	Required    bool               `json:"required"`
	Kind        string             `json:"kind"`
	Values      []string           `json:"values"`
	Rules       map[string]rawRule `json:"rules"`
	IDTypeField string             `json:"id_type_field"`
}

type rawRule struct {
	Category string `json:"category"`
	Level    string `json:"level"`
}

// locErr is an error located in a standard file.
func locErr(path, format string, args ...any) error {
	return fmt.Errorf("parse standard: %s: %s", path, fmt.Sprintf(format, args...))
}

// ParseStandard parses a standard in the JSON format of the built-in one
// (standards/edu-cn-default-v1.json): name, version, minor_age; detectors
// by name with level, all_string_fields (run on non-text string fields
// too) and, for health_terms, the dictionary; volume rules (rule,
// min_level, subjects, optional result); and types by name, each with a
// subject (person subject key) or key (record key), an optional birth_date
// field and its fields (name, category, level, direct, text, required,
// kind, values for an enum, rules by value, id_type_field for a
// resident_id); and the dimensions aggregates may group by (type, field,
// level, min_cell_size, and values, classes or prefix: STANDARD.md §2).
// Unknown members are errors.
// Errors name where the file is wrong, e.g.
// `parse standard: types.student.fields.birth_date: unknown level "L9"`.
func ParseStandard(data []byte) (*Standard, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var raw rawStandard
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse standard: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("parse standard: data after the standard object")
	}
	s := &Standard{name: raw.Name, version: raw.Version, types: map[string]*RecordType{}}
	if s.name == "" {
		return nil, locErr("name", "missing")
	}
	if s.version == "" {
		return nil, locErr("version", "missing")
	}
	for _, f := range []struct{ path, v string }{{"name", s.name}, {"version", s.version}} {
		if strings.Contains(f.v, "/") || strings.ContainsFunc(f.v, unicode.IsControl) {
			return nil, locErr(f.path, "may hold no \"/\" and no control character")
		}
	}
	s.ref = s.name + "/" + s.version
	if len(s.ref) > MaxRefLen {
		return nil, locErr("name", "name and version together longer than %d bytes", MaxRefLen-1)
	}
	if raw.MinorAge == nil {
		return nil, locErr("minor_age", "missing")
	}
	if *raw.MinorAge < 0 || *raw.MinorAge > 150 {
		return nil, locErr("minor_age", "out of range")
	}
	s.minorAge = *raw.MinorAge

	if err := s.parseDetectors(raw.Detectors); err != nil {
		return nil, err
	}
	if err := s.parseVolume(raw.Volume); err != nil {
		return nil, err
	}
	if len(raw.Types) == 0 {
		return nil, locErr("types", "no record types")
	}
	for name := range raw.Types {
		s.typeNames = append(s.typeNames, name)
	}
	sort.Strings(s.typeNames)
	for _, name := range s.typeNames {
		t, err := parseType(name, raw.Types[name])
		if err != nil {
			return nil, err
		}
		s.types[name] = t
	}
	if err := s.parseDimensions(raw.Dimensions); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Standard) parseDetectors(raw map[string]rawDetector) error {
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rd := raw[name]
		path := "detectors." + name
		d := slices.Index(detectorNames[:], name)
		if d < 0 {
			return locErr(path, "unknown detector")
		}
		lv, err := ParseLevel(rd.Level)
		if err != nil {
			return locErr(path+".level", "unknown level %q", rd.Level)
		}
		s.detLevel[d] = lv
		s.textMask |= 1 << d
		if rd.AllStringFields {
			s.everywhereMask |= 1 << d
		}
		if detector(d) == detHealthTerms {
			if len(rd.Terms) == 0 {
				return locErr(path+".terms", "missing")
			}
			for i, t := range rd.Terms {
				if len(t) < 2 || !utf8.ValidString(t) || strings.TrimSpace(t) != t {
					return locErr(fmt.Sprintf("%s.terms[%d]", path, i), "a term must be valid UTF-8, at least 2 bytes, without surrounding space")
				}
			}
			s.terms = newTermMatcher(rd.Terms)
		} else if rd.Terms != nil {
			return locErr(path+".terms", "only health_terms has terms")
		}
	}
	return nil
}

func (s *Standard) parseVolume(raw []rawVolume) error {
	for i, rv := range raw {
		path := fmt.Sprintf("volume[%d]", i)
		if rv.Rule == "" {
			return locErr(path+".rule", "missing")
		}
		min, err := ParseLevel(rv.MinLevel)
		if err != nil {
			return locErr(path+".min_level", "unknown level %q", rv.MinLevel)
		}
		if rv.Subjects <= 0 {
			return locErr(path+".subjects", "must be positive")
		}
		var res Level
		if rv.Result != "" {
			if res, err = ParseLevel(rv.Result); err != nil {
				return locErr(path+".result", "unknown level %q", rv.Result)
			}
		}
		s.volume = append(s.volume, VolumeRule{Rule: rv.Rule, MinLevel: min, Subjects: rv.Subjects, Result: res})
	}
	return nil
}

func parseType(name string, rt rawType) (*RecordType, error) {
	tpath := "types." + name
	if name == "" {
		return nil, locErr("types", "empty type name")
	}
	t := &RecordType{name: name, subjectKey: rt.Subject, key: rt.Subject, birthIndex: -1, index: map[string]int{}}
	switch {
	case rt.Subject != "" && rt.Key != "" && rt.Key != rt.Subject:
		return nil, locErr(tpath, "subject %q and key %q differ", rt.Subject, rt.Key)
	case rt.Subject == "" && rt.Key == "":
		return nil, locErr(tpath, "neither subject nor key given")
	case rt.Subject == "":
		t.key = rt.Key
	}
	if len(rt.Fields) == 0 {
		return nil, locErr(tpath+".fields", "no fields")
	}
	for i, rf := range rt.Fields {
		path := fmt.Sprintf("%s.fields[%d]", tpath, i)
		if rf.Name != "" {
			path = tpath + ".fields." + rf.Name
		}
		f, err := parseField(path, rf)
		if err != nil {
			return nil, err
		}
		if f.Name == "type" {
			return nil, locErr(path, `"type" is reserved for the record type`)
		}
		if _, dup := t.index[f.Name]; dup {
			return nil, locErr(path, "duplicate field")
		}
		t.index[f.Name] = len(t.fields)
		t.fields = append(t.fields, f)
	}
	t.idTypeIndex = make([]int, len(t.fields))
	for i, f := range t.fields {
		t.idTypeIndex[i] = -1
		if f.IDTypeField == "" {
			continue
		}
		j, ok := t.index[f.IDTypeField]
		if !ok || !t.fields[j].Kind.stringKind() || t.fields[j].Kind == KindResidentID {
			return nil, locErr(tpath+".fields."+f.Name+".id_type_field", "%q is not a string field of the type", f.IDTypeField)
		}
		t.idTypeIndex[i] = j
	}
	k, ok := t.index[t.key]
	if !ok {
		return nil, locErr(tpath, "key field %q not among the fields", t.key)
	}
	if f := t.fields[k]; !f.Required || f.Kind != KindString {
		return nil, locErr(tpath+".fields."+t.key, "a key field must be a required string")
	}
	t.keyIndex = k
	if rt.BirthDate != "" {
		b, ok := t.index[rt.BirthDate]
		if !ok || t.fields[b].Kind != KindDate {
			return nil, locErr(tpath+".birth_date", "%q is not a date field of the type", rt.BirthDate)
		}
		t.birthIndex = b
	}
	for _, f := range t.fields {
		t.sorted = append(t.sorted, f.Name)
	}
	sort.Strings(t.sorted)
	for _, name := range t.sorted {
		t.sortedIndex = append(t.sortedIndex, t.index[name])
	}
	for _, f := range t.fields {
		t.quoted = append(t.quoted, string(AppendJSONString(nil, f.Name)))
	}
	for i := range t.fields {
		t.showsAge = t.showsAge || t.MinorField(&t.fields[i])
	}
	return t, nil
}

func parseField(path string, rf rawField) (FieldSpec, error) {
	f := FieldSpec{Name: rf.Name, Direct: rf.Direct, Text: rf.Text, Required: rf.Required, Kind: Kind(rf.Kind), IDTypeField: rf.IDTypeField}
	if f.Name == "" {
		return f, locErr(path+".name", "missing")
	}
	if rf.Category == nil {
		return f, locErr(path+".category", "missing")
	}
	f.Category = Category(*rf.Category)
	if !f.Category.Valid() {
		return f, locErr(path, "unknown category %q", *rf.Category)
	}
	if f.Category == CategoryNone && !f.Text {
		return f, locErr(path, "only a text field may have no category")
	}
	lv, err := ParseLevel(rf.Level)
	if err != nil {
		return f, locErr(path, "unknown level %q", rf.Level)
	}
	f.Level = lv
	if !f.Kind.valid() {
		return f, locErr(path, "unknown kind %q", rf.Kind)
	}
	if f.Text && f.Kind != KindString {
		return f, locErr(path, "a text field must be of kind string")
	}
	if f.IDTypeField != "" && f.Kind != KindResidentID {
		return f, locErr(path, "id_type_field needs kind resident_id")
	}
	if f.Kind == KindEnum {
		if len(rf.Values) == 0 {
			return f, locErr(path+".values", "an enum needs values")
		}
		for i, v := range rf.Values {
			if v == "" || slices.Contains(rf.Values[:i], v) {
				return f, locErr(fmt.Sprintf("%s.values[%d]", path, i), "empty or duplicate value")
			}
		}
		f.Values = rf.Values
	} else if rf.Values != nil {
		return f, locErr(path+".values", "values need kind enum")
	}
	if len(rf.Rules) > 0 {
		if f.Kind != KindEnum && f.Kind != KindString && f.Kind != KindFlag {
			return f, locErr(path+".rules", "value rules need kind enum, string or flag")
		}
		f.Rules = make(map[string]ValueRule, len(rf.Rules))
		values := make([]string, 0, len(rf.Rules))
		for v := range rf.Rules {
			values = append(values, v)
		}
		sort.Strings(values)
		for _, v := range values {
			rr := rf.Rules[v]
			rpath := path + ".rules." + v
			if f.Kind == KindEnum && !slices.Contains(f.Values, v) {
				return f, locErr(rpath, "value not among the enum's values")
			}
			c := Category(rr.Category)
			if c == CategoryNone || !c.Valid() {
				return f, locErr(rpath, "unknown category %q", rr.Category)
			}
			l, err := ParseLevel(rr.Level)
			if err != nil {
				return f, locErr(rpath, "unknown level %q", rr.Level)
			}
			f.Rules[v] = ValueRule{Category: c, Level: l}
		}
	}
	return f, nil
}
