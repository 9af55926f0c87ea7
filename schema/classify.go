package schema

import (
	"encoding/json"
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"time"
	"unsafe"
)

// Record is one input record. Field values are string, json.Number, bool
// or nil (as from encoding/json with UseNumber); float64 and Go integer
// types are accepted as numbers too.
type Record struct {
	Type   string
	Fields map[string]any
}

// FieldLabel is the classification of one field of a record.
type FieldLabel struct {
	Category  Category
	Level     Level
	DirectID  bool
	Text      bool
	Detectors []string // detectors that hit, in output order; shared, do not modify
}

// Labels is the classification of one record.
type Labels struct {
	Type       string
	Subject    string // value of the subject key; empty for a type with no person subject
	SubjectKey string // "student_id", "staff_id", "guardian_id"; empty for course
	ID         string // value of the record's key: the subject, or course_code
	Level      Level  // record level after C1..C6
	Flags      []string
	Rules      []string // rules that applied: "C1" always, "C2","C3","C5","C6" when they changed something
	// Fields holds the field labels by name. It is nil in labels from
	// ClassifyRow, which keeps them by position: Field, Sorted and
	// NumFields read both forms.
	Fields    map[string]FieldLabel
	BirthDate time.Time // zero if unknown (from birth_date or a valid resident ID)

	typ   *RecordType  // for field order in output
	dense []FieldLabel // ClassifyRow: labels by field index; valid where has
	has   []bool
}

// Field returns the label of the named field and whether the record has
// that field.
func (l Labels) Field(name string) (FieldLabel, bool) {
	if l.dense == nil {
		fl, ok := l.Fields[name]
		return fl, ok
	}
	i, ok := l.typ.index[name]
	if !ok || !l.has[i] {
		return FieldLabel{}, false
	}
	return l.dense[i], true
}

// NumFields returns how many fields the record has.
func (l Labels) NumFields() int {
	if l.dense == nil {
		return len(l.Fields)
	}
	n := 0
	for _, h := range l.has {
		if h {
			n++
		}
	}
	return n
}

// Sorted yields the record's fields with their labels in byte order of
// their names. For labels from Classify it yields the names of the type
// only, as SortedNames lists them; for labels built by hand (no type), the
// names of Fields, sorted.
func (l Labels) Sorted() iter.Seq2[string, FieldLabel] {
	return func(yield func(string, FieldLabel) bool) {
		switch {
		case l.dense != nil:
			for _, i := range l.typ.sortedIndex {
				if l.has[i] && !yield(l.typ.fields[i].Name, l.dense[i]) {
					return
				}
			}
		case l.typ != nil:
			for _, name := range l.typ.sorted {
				if fl, ok := l.Fields[name]; ok && !yield(name, fl) {
					return
				}
			}
		default:
			for _, name := range slices.Sorted(maps.Keys(l.Fields)) {
				if !yield(name, l.Fields[name]) {
					return
				}
			}
		}
	}
}

// SortedNames returns the names of the labelled fields in byte order, or
// nil when the labels did not come from Classify (then sort the keys of
// Fields). It may list names of the type that the record does not have:
// look each up in Fields. The slice is shared; do not modify it.
func (l Labels) SortedNames() []string {
	if l.typ == nil {
		return nil
	}
	return l.typ.sorted
}

// Validation reason codes (ValidationError.Reason).
const (
	ReasonUnknownField = "unknown_field"
	ReasonRequired     = "required"
	ReasonType         = "type"
	ReasonDate         = "date"
	ReasonNegative     = "negative"
	ReasonEnum         = "enum"
	ReasonChecksum     = "checksum"
	ReasonUnknownType  = "unknown_type"
	ReasonSyntax       = "syntax"
)

// ValidationError reports a record that fails validation: the field and a
// short stable reason code, never the value. Field is "type" for an
// unknown or malformed record type and empty for a line that is not a
// JSON object.
type ValidationError struct {
	Field, Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid record: " + e.Reason
	}
	return "invalid record: field " + string(AppendJSONString(nil, e.Field)) + ": " + e.Reason
}

// The rules a record can report, as bits.
const (
	ruleC2 uint8 = 1 << iota
	ruleC3
	ruleC5
	ruleC6
)

var ruleLists = func() (lists [16][]string) {
	for m := range lists {
		names := []string{"C1"}
		for i, n := range []string{"C2", "C3", "C5", "C6"} {
			if m&(1<<i) != 0 {
				names = append(names, n)
			}
		}
		lists[m] = names[:len(names):len(names)]
	}
	return lists
}()

var (
	flagsNone  = []string{}
	flagsMinor = []string{"minor"}
)

// maxStackFields is the size of the per-call arrays kept on the stack.
const maxStackFields = 32

// Classify validates and labels one record by the rules of GRADING.md §3–4.
// asOf decides who is a minor (C3); a zero asOf applies no minor rule.
// An invalid record gives (Labels{}, *ValidationError).
func (s *Standard) Classify(r Record, asOf time.Time) (Labels, error) {
	return s.ClassifyInto(r, asOf, nil)
}

// ClassifyInto is Classify with the map for Labels.Fields supplied: fields,
// emptied first, becomes it (a new map when fields is nil). A caller done
// with the previous record's labels passes their map again and saves the
// largest allocation of a classification.
func (s *Standard) ClassifyInto(r Record, asOf time.Time, fields map[string]FieldLabel) (Labels, error) {
	t := s.types[r.Type]
	if t == nil {
		return Labels{}, &ValidationError{Field: "type", Reason: ReasonUnknownType}
	}
	nf := len(t.fields)
	var (
		valsBuf [maxStackFields]value
		hasBuf  [maxStackFields]bool
		labBuf  [maxStackFields]FieldLabel
		vals    []value
		has     []bool
		lab     []FieldLabel
	)
	if nf <= maxStackFields {
		vals, has, lab = valsBuf[:nf], hasBuf[:nf], labBuf[:nf]
	} else {
		vals, has, lab = make([]value, nf), make([]bool, nf), make([]FieldLabel, nf)
	}

	// Look up the type's fields; more fields in the record than found
	// means an unknown field.
	found := 0
	for i := range t.fields {
		if v, ok := r.Fields[t.fields[i].Name]; ok {
			vals[i], has[i] = valueOf(v), true
			found++
		}
	}
	if found < len(r.Fields) {
		first, seen := "", false // "" is a name too
		for name := range r.Fields {
			if _, ok := t.index[name]; !ok && (!seen || name < first) {
				first, seen = name, true
			}
		}
		return Labels{}, &ValidationError{Field: first, Reason: ReasonUnknownField}
	}
	l, err := s.classify(t, vals, has, asOf, lab)
	if err != nil {
		return Labels{}, err
	}

	// C1.
	if fields != nil {
		clear(fields)
		l.Fields = fields
	} else {
		l.Fields = make(map[string]FieldLabel, found)
	}
	for i := range t.fields {
		if has[i] {
			l.Fields[t.fields[i].Name] = lab[i]
		}
	}
	return l, nil
}

// classify validates and labels the values of a record of type t, vals
// and has by the index of t's fields, into lab (one per field). It returns
// the record's labels but for the field labels themselves, which the
// caller files as a map (ClassifyInto) or keeps positional (ClassifyRow).
func (s *Standard) classify(t *RecordType, vals []value, has []bool, asOf time.Time, lab []FieldLabel) (Labels, error) {
	// Validate in declared order.
	ridIndex := -1 // the resident_id field whose value was checked
	for i := range t.fields {
		f := &t.fields[i]
		v := vals[i]
		if !has[i] || v.null() {
			if f.Required {
				return Labels{}, &ValidationError{Field: f.Name, Reason: ReasonRequired}
			}
			continue
		}
		if reason := s.check(t, i, f, v, vals, has); reason != "" {
			return Labels{}, &ValidationError{Field: f.Name, Reason: reason}
		}
		if f.Kind == KindResidentID && residentIDApplies(t, i, vals, has) {
			if v.s != "" {
				ridIndex = i
			}
		}
	}

	l := Labels{Type: t.name, SubjectKey: t.subjectKey, typ: t}
	key := vals[t.keyIndex].s
	l.ID = key
	if t.subjectKey != "" {
		l.Subject = key
	}
	var rules uint8
	for i := range t.fields {
		if !has[i] {
			continue
		}
		f := &t.fields[i]
		lv, cat := f.Level, f.Category
		var hits detectorMask
		if vals[i].str {
			var r uint8
			lv, cat, hits, r = s.stringLevel(f, vals[i].s)
			rules |= r
		}
		lab[i] = FieldLabel{Category: cat, Level: lv, DirectID: f.Direct, Text: f.Text, Detectors: hits.names()}
	}

	// Birth date and C3.
	var by, bm, bd int
	minor := false
	if t.birthIndex >= 0 && has[t.birthIndex] {
		if str := vals[t.birthIndex].s; str != "" {
			by, bm, bd, _ = parseDate(str)
			minor = s.under(by, bm, bd, asOf)
		}
	}
	if ridIndex >= 0 {
		id := vals[ridIndex].s
		y, m, d, _ := residentIDBirth(id)
		if by == 0 {
			by, bm, bd = y, m, d
		}
		minor = minor || s.under(y, m, d, asOf)
	}
	if by != 0 {
		l.BirthDate = time.Date(by, time.Month(bm), bd, 0, 0, 0, 0, time.UTC)
	}
	l.Flags = flagsNone
	if minor && t.subjectKey != "" {
		l.Flags = flagsMinor
		for i := range t.fields {
			f := &t.fields[i]
			fl := &lab[i]
			if !has[i] || fl.Category == CategoryInstitution || fl.Category == CategoryAggregate ||
				(f.Level == L1 && f.Category == CategoryAcademic) {
				continue
			}
			if fl.Level < L4 {
				fl.Level = L4
				rules |= ruleC3
			}
		}
	}
	for i := range t.fields {
		if has[i] {
			l.Level = max(l.Level, lab[i].Level)
		}
	}
	l.Rules = ruleLists[rules]
	return l, nil
}

// stringLevel is the level and category of field f holding the string
// str, as the value rules (C2) and the detectors (C5 in free text, C6
// elsewhere) make them, with the detectors that hit and the rules that
// raised the level.
func (s *Standard) stringLevel(f *FieldSpec, str string) (lv Level, cat Category, hits detectorMask, rules uint8) {
	lv, cat = f.Level, f.Category
	if f.Rules != nil {
		if vr, ok := f.Rules[str]; ok {
			cat = vr.Category
			if vr.Level > lv {
				lv = vr.Level
				rules |= ruleC2
			}
		}
	}
	if str != "" && (f.Kind == KindString || f.Kind == KindFlag || f.Kind == KindResidentID) {
		mask := s.everywhereMask
		if f.Text {
			mask = s.textMask
		}
		if mask != 0 {
			hits = s.detect(str, mask)
		}
		for d := detector(0); hits != 0 && d < numDetectors; d++ {
			if hits&(1<<d) != 0 && s.detLevel[d] > lv {
				lv = s.detLevel[d]
				if f.Text {
					rules |= ruleC5
				} else {
					rules |= ruleC6
				}
			}
		}
	}
	return lv, cat, hits, rules
}

// ValueScanned reports whether a string value of field f can raise its
// level (ValueLevel): the field has value rules, or detectors run on it.
func (s *Standard) ValueScanned(f FieldSpec) bool {
	if f.Rules != nil {
		return true
	}
	if f.Kind != KindString && f.Kind != KindFlag && f.Kind != KindResidentID {
		return false
	}
	if f.Text {
		return s.textMask != 0
	}
	return s.everywhereMask != 0
}

// ValueLevel is the level the standard gives field f holding the string
// value v (its bytes, unescaped): f's level, raised by a value rule (C2)
// or a detector that hits (C5, C6), as Classify does. The rules that need
// the whole record (C3, a minor's) are not applied. v is read during the
// call only.
func (s *Standard) ValueLevel(f *FieldSpec, v []byte) Level {
	lv, _, _, _ := s.stringLevel(f, unsafe.String(unsafe.SliceData(v), len(v)))
	return lv
}

// ShowsAge reports whether records of type t can show their subject's age
// (C3): t has a person subject and a birth date or resident ID field.
func (t *RecordType) ShowsAge() bool { return t.showsAge }

// Under reports whether someone born on birth is under the standard's
// minor age on asOf's calendar date (C3).
func (s *Standard) Under(birth, asOf time.Time) bool {
	if birth.IsZero() {
		return false
	}
	y, m, d := birth.Date()
	return s.under(y, int(m), d, asOf)
}

// MinorField reports whether type t's field f can show the record's
// subject a minor (C3): t has a person subject, and f is its birth date
// or a resident ID field.
func (t *RecordType) MinorField(f *FieldSpec) bool {
	if t.subjectKey == "" {
		return false
	}
	if f.Kind == KindResidentID {
		return true
	}
	return t.birthIndex >= 0 && t.fields[t.birthIndex].Name == f.Name
}

// Minor reports whether the value v of a field for which t.MinorField
// holds shows someone under the standard's minor age on asOf: a date
// (YYYY-MM-DD) in a birth date field, or a valid resident ID (check digit
// included) whose birth date does. It reads values one at a time, without
// the record's id type (Classify applies a resident ID's birth date only
// where the id type is absent or resident_id): a value that is a valid
// resident ID shows a birth date whatever the record calls it. v is read
// during the call only.
func (s *Standard) Minor(f *FieldSpec, v []byte, asOf time.Time) bool {
	str := unsafe.String(unsafe.SliceData(v), len(v))
	var y, m, d int
	var ok bool
	if f.Kind == KindResidentID {
		if len(str) != 18 || !validResidentID(str) {
			return false
		}
		y, m, d, ok = residentIDBirth(str)
	} else {
		y, m, d, ok = parseDate(str)
	}
	return ok && s.under(y, m, d, asOf)
}

// residentIDApplies reports whether the resident_id field i must hold a
// resident ID: its id type field is absent, empty or "resident_id".
func residentIDApplies(t *RecordType, i int, vals []value, has []bool) bool {
	j := t.idTypeIndex[i]
	if j < 0 || !has[j] {
		return true
	}
	idType := vals[j].s
	return idType == "" || idType == "resident_id"
}

// under reports whether someone born on y-m-d is under the minor age on
// asOf's calendar date: asOf < birth date + minor age years. Someone born
// on 29 February comes of age on 1 March in a common year.
func (s *Standard) under(y, m, d int, asOf time.Time) bool {
	if asOf.IsZero() || s.minorAge == 0 || y == 0 {
		return false
	}
	ay, am, ad := asOf.Date()
	cy, cm, cd := y+s.minorAge, m, d
	if cm == 2 && cd == 29 && daysIn(cy, 2) == 28 {
		cm, cd = 3, 1
	}
	if ay != cy {
		return ay < cy
	}
	if int(am) != cm {
		return int(am) < cm
	}
	return ad < cd
}

// check validates value v of field i and returns a reason code, or "".
func (s *Standard) check(t *RecordType, i int, f *FieldSpec, v value, vals []value, has []bool) string {
	switch f.Kind {
	case KindString, KindDate, KindEnum, KindResidentID:
		if !v.str {
			return ReasonType
		}
		str := v.s
		if str == "" {
			if f.Required {
				return ReasonRequired
			}
			return ""
		}
		switch f.Kind {
		case KindDate:
			if _, _, _, ok := parseDate(str); !ok {
				return ReasonDate
			}
		case KindEnum:
			for _, e := range f.Values {
				if e == str {
					return ""
				}
			}
			return ReasonEnum
		case KindResidentID:
			if residentIDApplies(t, i, vals, has) && !validResidentID(str) {
				return ReasonChecksum
			}
		}
	case KindBool:
		if _, ok := v.v.(bool); !ok || v.str {
			return ReasonType
		}
	case KindFlag:
		if _, ok := v.v.(bool); !ok && !v.str {
			return ReasonType
		}
	case KindInteger, KindNumber, KindAmount:
		neg, integer, ok := number(v.v)
		if !ok || (f.Kind == KindInteger && !integer) {
			return ReasonType
		}
		if neg && f.Kind == KindAmount {
			return ReasonNegative
		}
	}
	return ""
}

// parseDate parses YYYY-MM-DD and checks that the date exists.
func parseDate(s string) (y, m, d int, ok bool) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return 0, 0, 0, false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(s[i]) {
			return 0, 0, 0, false
		}
	}
	y = atoi4(s)
	m = int(s[5]-'0')*10 + int(s[6]-'0')
	d = int(s[8]-'0')*10 + int(s[9]-'0')
	return y, m, d, validDate(y, m, d)
}

// number reports whether v is a number, and whether it is negative and an
// integer.
func number(v any) (neg, integer, ok bool) {
	switch n := v.(type) {
	case json.Number:
		return jsonNumber(string(n))
	case float64:
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return false, false, false
		}
		return n < 0, n == math.Trunc(n), true
	case float32:
		return number(float64(n))
	case int:
		return n < 0, true, true
	case int64:
		return n < 0, true, true
	case int32:
		return n < 0, true, true
	case uint, uint64, uint32:
		return false, true, true
	}
	return false, false, false
}

// jsonNumber checks the JSON number grammar; a number is negative when it
// has a minus sign and a non-zero digit, an integer when it has neither a
// fraction nor an exponent.
func jsonNumber(s string) (neg, integer, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	minus := i == 1
	nonzero := false
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && '1' <= s[i] && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		nonzero = true
	default:
		return false, false, false
	}
	integer = true
	if i < len(s) && s[i] == '.' {
		i++
		integer = false
		j := i
		for i < len(s) && isDigit(s[i]) {
			if s[i] != '0' {
				nonzero = true
			}
			i++
		}
		if i == j {
			return false, false, false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		integer = false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == j {
			return false, false, false
		}
	}
	if i != len(s) {
		return false, false, false
	}
	return minus && nonzero, integer, true
}

// AppendJSON appends the classify output line of DESIGN.md §11 for the
// record at index with the given id (without a newline):
//
//	{"index":0,"id":"…","type":"student","level":"L3","flags":[],"rules":["C1"],"fields":{…}}
//
// Field objects have category and level, direct_id only when true and
// detectors only when non-empty; fields come in the type's declared order.
func (l Labels) AppendJSON(dst []byte, index int, id string) []byte {
	start := len(dst)
	dst = appendInt(append(dst, `{"index":`...), index)
	dst = AppendJSONString(append(dst, `,"id":`...), id)
	dst = AppendJSONString(append(dst, `,"type":`...), l.Type)
	dst = AppendJSONString(append(dst, `,"level":`...), l.Level.String())
	dst = appendStrings(append(dst, `,"flags":`...), l.Flags)
	dst = appendStrings(append(dst, `,"rules":`...), l.Rules)
	dst = append(dst, `,"fields":{`...)
	first := true
	field := func(name string, fl FieldLabel) {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = AppendJSONString(dst, name)
		dst = AppendJSONString(append(dst, `:{"category":`...), string(fl.Category))
		dst = AppendJSONString(append(dst, `,"level":`...), fl.Level.String())
		if fl.DirectID {
			dst = append(dst, `,"direct_id":true`...)
		}
		if len(fl.Detectors) > 0 {
			dst = appendStrings(append(dst, `,"detectors":`...), fl.Detectors)
		}
		dst = append(dst, '}')
	}
	if l.typ != nil {
		n := 0
		for i := range l.typ.fields {
			name := l.typ.fields[i].Name
			if fl, ok := l.Field(name); ok {
				field(name, fl)
				n++
			}
		}
		if n == l.NumFields() {
			return append(dst, "}}"...)
		}
		// Fields that are not the type's: start over in sorted order.
		l.typ = nil
		return l.AppendJSON(dst[:start], index, id)
	}
	names := make([]string, 0, len(l.Fields))
	for name := range l.Fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		field(name, l.Fields[name])
	}
	return append(dst, "}}"...)
}

// AppendJSON appends the classify output line of an invalid record:
// {"index":n,"error":{"field":"…","reason":"…"}}.
func (e *ValidationError) AppendJSON(dst []byte, index int) []byte {
	dst = appendInt(append(dst, `{"index":`...), index)
	dst = AppendJSONString(append(dst, `,"error":{"field":`...), e.Field)
	dst = AppendJSONString(append(dst, `,"reason":`...), e.Reason)
	return append(dst, "}}"...)
}
