package schema

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"time"
	"unicode/utf8"
)

// Row is a record in positional form: its values by the index of its
// type's fields, with no map. Send parses NDJSON lines into rows
// (LineParser.ParseRow) and classifies them (Standard.ClassifyRow): a map
// per record and a lookup per field and stage cost more than the rest of
// classifying it. A Row is reused from record to record; the zero Row is
// ready to use.
type Row struct {
	Type string
	// Has tells, by the index of the type's fields (RecordType.Fields
	// order), which fields the record has; Value and String give their
	// values.
	Has []bool

	vals  []value
	t     *RecordType
	lab   []FieldLabel // ClassifyRow's labels, by field index
	plain bool         // string values came from the fast path (PlainStrings)
}

// PlainStrings reports whether every string value of the row is valid
// UTF-8 without quotes, backslashes or control characters, as values read
// from a line without escapes are: AppendPlainJSONString may write them.
func (r *Row) PlainStrings() bool { return r.plain }

// Value returns the value of field i (Fields order): a string, a
// json.Number, a bool or nil (absent, or JSON null).
func (r *Row) Value(i int) any { return r.vals[i].any() }

// String returns the value of field i when it is a string, without
// putting it in an interface.
func (r *Row) String(i int) (string, bool) { return r.vals[i].s, r.vals[i].str }

// value is one field's value as classification reads it: a string as such
// (no interface, so no allocation per value), or any other JSON value.
type value struct {
	s   string
	v   any  // when not a string: json.Number, bool, nil, or a Go number
	str bool // the value is the string s
}

func valueOf(v any) value {
	if s, ok := v.(string); ok {
		return value{s: s, str: true}
	}
	return value{v: v}
}

// null reports a JSON null (or an absent value).
func (v value) null() bool { return !v.str && v.v == nil }

// any returns the value in an interface.
func (v value) any() any {
	if v.str {
		return v.s
	}
	return v.v
}

// RecordType returns the row's record type.
func (r *Row) RecordType() *RecordType { return r.t }

// SortedIndex returns the indexes of the type's fields in byte order of
// their names: the order of Labels.Sorted and of a decision's actions. The
// slice is shared; do not modify it.
func (t *RecordType) SortedIndex() []int { return t.sortedIndex }

// FieldName returns the name of the type's i-th field (Fields order).
func (t *RecordType) FieldName(i int) string { return t.fields[i].Name }

// QuotedName returns the name of the type's i-th field as a JSON string,
// quotes included.
func (t *RecordType) QuotedName(i int) string { return t.quoted[i] }

// FieldIndex returns the index of the named field in Fields order.
func (t *RecordType) FieldIndex(name string) (int, bool) {
	i, ok := t.index[name]
	return i, ok
}

// member is one member of a line, in the order it came.
type member struct {
	name string
	v    value
}

// rowMember is the field index of a line's k-th member name (-1 when the
// type has no such field), kept from one row to the next: lines of one
// feed name their members in the same order.
type rowMember struct {
	name  string
	index int
}

// ParseRow parses one line into row as Parse would into a record, and
// resolves its record type and fields in std: a line that is not a
// record, names an unknown type or has a field its type does not, gives
// the *ValidationError that Parse and then Classify would give. On error
// the row's content is undefined.
func (p *LineParser) ParseRow(line []byte, std *Standard, row *Row) *ValidationError {
	p.pairs, p.typeSet = p.pairs[:0], false
	typ, typeSet := p.defaultType, false
	var typeVal value
	row.plain = false
	if _, ok := p.parseFlatObject(line, nil, nil); ok {
		// Members other than "type" in line order; the last "type" counts,
		// as in a map.
		row.plain = true
		typeVal, typeSet = p.typeVal, p.typeSet
	} else {
		p.pairs = p.pairs[:0] // what the fast path read before it gave up
		if p.spare == nil {
			p.spare = make(map[string]any, 32)
		}
		rec, verr := p.Parse(line, p.spare)
		if verr != nil {
			return verr
		}
		typ = rec.Type
		for name, v := range rec.Fields {
			p.pairs = append(p.pairs, member{name, valueOf(v)})
		}
	}
	if typeSet {
		if !typeVal.str {
			return &ValidationError{Field: "type", Reason: ReasonType}
		}
		typ = typeVal.s
	}
	t := std.types[typ]
	if t == nil {
		return &ValidationError{Field: "type", Reason: ReasonUnknownType}
	}
	row.Type, row.t = t.name, t
	nf := len(t.fields)
	if cap(row.vals) < nf {
		row.vals, row.Has = make([]value, nf), make([]bool, nf)
	}
	row.vals, row.Has = row.vals[:nf], row.Has[:nf]
	clear(row.vals)
	clear(row.Has)
	if p.rowType != t {
		p.rowType, p.rowIdx = t, p.rowIdx[:0]
	}
	unknown, hasUnknown := "", false
	for k, m := range p.pairs {
		var i int
		if k < len(p.rowIdx) && p.rowIdx[k].name == m.name {
			i = p.rowIdx[k].index
		} else {
			j, ok := t.index[m.name]
			if !ok {
				j = -1
			}
			i = j
			switch {
			case k < len(p.rowIdx):
				p.rowIdx[k] = rowMember{m.name, i}
			case k == len(p.rowIdx) && k < maxInternedKeys:
				p.rowIdx = append(p.rowIdx, rowMember{m.name, i})
			}
		}
		if i < 0 {
			if !hasUnknown || m.name < unknown {
				unknown, hasUnknown = m.name, true
			}
			continue
		}
		row.vals[i], row.Has[i] = m.v, true
	}
	if hasUnknown {
		return &ValidationError{Field: unknown, Reason: ReasonUnknownField}
	}
	return nil
}

// Positions returns, for labels from ClassifyRow, the record's type, the
// field labels by the index of its fields and which fields the record has,
// for a caller that walks them by position (in SortedIndex order, say);
// ok is false for labels in map form. The slices are shared; do not modify
// them.
func (l Labels) Positions() (t *RecordType, labels []FieldLabel, has []bool, ok bool) {
	if l.dense == nil {
		return nil, nil, nil, false
	}
	return l.typ, l.dense, l.has, true
}

// Keep returns copies of r and of l, ClassifyRow's labels of r, that stay
// as they are when r is parsed into again: for a row decided after the
// next one is read. The copy shares r's strings, which a row never
// modifies; r must not have been parsed from lines shared with the parser
// (LineParser.ShareLines).
func (r *Row) Keep(l Labels) (*Row, Labels) {
	c := &Row{Type: r.Type, Has: slices.Clone(r.Has), vals: slices.Clone(r.vals), t: r.t, lab: slices.Clone(r.lab), plain: r.plain}
	if l.dense != nil {
		l.dense, l.has = c.lab, c.Has
	}
	return c, l
}

// ClassifyRow is Classify for a row from ParseRow. The labels keep the
// field labels by position (Labels.Fields is nil) in the row's own
// buffer: they are valid until the row is parsed into again.
func (s *Standard) ClassifyRow(r *Row, asOf time.Time) (Labels, error) {
	t := r.t
	if t == nil || s.types[t.name] != t {
		return Labels{}, &ValidationError{Field: "type", Reason: ReasonUnknownType}
	}
	nf := len(t.fields)
	if cap(r.lab) < nf {
		r.lab = make([]FieldLabel, nf)
	}
	r.lab = r.lab[:nf]
	clear(r.lab)
	l, err := s.classify(t, r.vals, r.Has, asOf, r.lab)
	if err != nil {
		return Labels{}, err
	}
	l.dense, l.has = r.lab, r.Has
	return l, nil
}

// AppendMapJSON appends the row's fields as encoding/json writes a map of
// them (Record.Fields): keys in byte order; strings HTML-escaped, as
// encoding/json escapes them; numbers as written; null, true, false. It is
// how ingest stores a record without building the map, and writes the
// same bytes, so the key of a record held is the same whichever way it
// was read.
func (r *Row) AppendMapJSON(dst []byte) []byte {
	dst = append(dst, '{')
	first := true
	for _, i := range r.t.sortedIndex {
		if !r.Has[i] {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, r.t.quoted[i]...)
		dst = append(dst, ':')
		v := r.vals[i]
		switch {
		case v.str && mapPlainJSON(v.s, r.plain):
			dst = append(dst, '"')
			dst = append(dst, v.s...)
			dst = append(dst, '"')
		case v.v == nil && !v.str:
			dst = append(dst, "null"...)
		default:
			b, err := json.Marshal(v.any())
			if err != nil {
				// Only a value no JSON reader produces fails: a NaN.
				b = []byte("null")
			}
			dst = append(dst, b...)
		}
	}
	return append(dst, '}')
}

// mapPlainJSON reports whether encoding/json writes s between quotes as
// it is: plainJSON, and without the bytes it escapes for HTML (<, >, &),
// looked for eight bytes at a time in the same pass. plain says s is
// known to be valid UTF-8 without quotes, backslashes or control
// characters (Row.PlainStrings), which then are not checked again.
func mapPlainJSON(s string, plain bool) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		if hasByte(x, 0xE2) || hasByte(x, '<') || hasByte(x, '>') || hasByte(x, '&') || !plain && stopsString(x) {
			return false
		}
	}
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case 0xE2, '<', '>', '&':
			return false
		default:
			if !plain && (c < 0x20 || c == '"' || c == '\\') {
				return false
			}
		}
	}
	return plain || utf8.ValidString(s)
}
