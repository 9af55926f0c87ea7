package schema

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrOtherStandard is returned by ParseLabels for labels another standard,
// or another version of this one, made: the record must be classified
// again.
var ErrOtherStandard = errors.New("labels of another standard")

// labelsFormat is the first byte of stored labels.
const labelsFormat = 1

// AppendLabels appends the stored form of l, labels s made: what a node
// keeps beside a record it holds, so that the record is classified once,
// at ingest, and read back by ParseLabels whenever it is decided. The form
// names the standard and its version.
func (s *Standard) AppendLabels(dst []byte, l Labels) []byte {
	dst = append(dst, labelsFormat)
	dst = appendLabelString(dst, s.Name())
	for _, str := range []string{l.Type, l.Subject, l.SubjectKey, l.ID} {
		dst = appendLabelString(dst, str)
	}
	dst = append(dst, byte(l.Level))
	dst = appendLabelStrings(dst, l.Flags)
	dst = appendLabelStrings(dst, l.Rules)
	var days int64
	if !l.BirthDate.IsZero() {
		days = l.BirthDate.Unix()/86400 + 1
	}
	dst = binary.AppendVarint(dst, days)
	dst = binary.AppendUvarint(dst, uint64(l.NumFields()))
	for name, fl := range l.Sorted() {
		dst = appendLabelString(dst, name)
		dst = appendLabelString(dst, string(fl.Category))
		bits := byte(0)
		if fl.DirectID {
			bits |= 1
		}
		if fl.Text {
			bits |= 2
		}
		dst = append(dst, byte(fl.Level), bits)
		dst = appendLabelStrings(dst, fl.Detectors)
	}
	return dst
}

// ParseLabels reads labels AppendLabels stored. Labels another standard
// made are ErrOtherStandard; anything else unreadable is an error naming
// no content.
func (s *Standard) ParseLabels(data []byte) (Labels, error) {
	r := labelReader{b: data}
	if r.byte() != labelsFormat {
		return Labels{}, errors.New("stored labels: unknown format")
	}
	if std := r.string(); r.err == nil && std != s.Name() {
		return Labels{}, fmt.Errorf("stored labels of %q: %w", std, ErrOtherStandard)
	}
	var l Labels
	l.Type, l.Subject, l.SubjectKey, l.ID = r.string(), r.string(), r.string(), r.string()
	l.Level = Level(r.byte())
	l.Flags = r.strings()
	if len(l.Flags) == 0 {
		l.Flags = flagsNone
	} else if slices.Equal(l.Flags, flagsMinor) {
		l.Flags = flagsMinor
	}
	l.Rules = r.strings()
	if days := r.varint(); days != 0 {
		l.BirthDate = time.Unix((days-1)*86400, 0).UTC()
	}
	// The field labels by position, as ClassifyRow gives them: no map,
	// and no string for a name or a category (they are the standard's).
	t, ok := s.types[l.Type]
	if !ok {
		return Labels{}, fmt.Errorf("stored labels: %w", ErrOtherStandard)
	}
	k := r.uvarint()
	if k > uint64(len(data)) {
		return Labels{}, errors.New("stored labels: truncated")
	}
	nf := len(t.fields)
	l.dense, l.has = make([]FieldLabel, nf), make([]bool, nf)
	for range k {
		i, ok := t.index[string(r.bytes())]
		if !ok && r.err == nil {
			return Labels{}, fmt.Errorf("stored labels: %w", ErrOtherStandard)
		}
		fl := FieldLabel{Category: categoryOf(r.bytes())}
		fl.Level = Level(r.byte())
		bits := r.byte()
		fl.DirectID, fl.Text = bits&1 != 0, bits&2 != 0
		fl.Detectors = r.strings()
		if r.err != nil {
			break
		}
		l.dense[i], l.has[i] = fl, true
	}
	if r.err != nil || len(r.b) != 0 {
		return Labels{}, errors.New("stored labels: truncated or trailing bytes")
	}
	l.typ = t
	return l, nil
}

func appendLabelString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

func appendLabelStrings(dst []byte, ss []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ss)))
	for _, s := range ss {
		dst = appendLabelString(dst, s)
	}
	return dst
}

// labelReader reads stored labels; the first failure sticks in err and
// every read after it returns zero values.
type labelReader struct {
	b   []byte
	err error
}

func (r *labelReader) fail() { r.err, r.b = errors.New("truncated"), nil }

func (r *labelReader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *labelReader) uvarint() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *labelReader) varint() int64 {
	v, k := binary.Varint(r.b)
	if k <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[k:]
	return v
}

// bytes reads a string without copying it.
func (r *labelReader) bytes() []byte {
	k := r.uvarint()
	if k > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	b := r.b[:k]
	r.b = r.b[k:]
	return b
}

func (r *labelReader) string() string {
	k := r.uvarint()
	if k > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:k])
	r.b = r.b[k:]
	return s
}

func (r *labelReader) strings() []string {
	k := r.uvarint()
	if k > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	if k == 0 {
		return nil
	}
	out := make([]string, k)
	for i := range out {
		out[i] = r.string()
	}
	return out
}
