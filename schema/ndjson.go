package schema

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
	"unsafe"
)

// MaxLineBytes is the longest NDJSON line NDJSONReader accepts; a longer
// line is skipped and reported as a syntax error.
const MaxLineBytes = 1 << 20

// NDJSONReader reads records from newline-delimited JSON: one JSON object
// per line, blank lines skipped. A record's type is the object's "type"
// member, or the reader's default type when the line has none. Memory use
// is bounded by the longest line, not by the input.
type NDJSONReader struct {
	br    *bufio.Reader
	p     LineParser
	next  int   // index of the next record
	err   error // sticky read error
	buf   []byte
	first bool
}

// LineParser parses NDJSON lines into records, for a goroutine that does
// not read them itself: NDJSONReader.NextLine reads lines, and parsers in
// other goroutines turn them into records. A LineParser is not safe for
// concurrent use; get one per goroutine from NDJSONReader.Parser.
type LineParser struct {
	defaultType string
	keys        map[string]string // interned member names
	order       []string          // the member names of the last line, in order

	// ParseRow's state: the members of the line being read, the field
	// index of each member of the last row (for rowType), and a map for
	// lines off the fast path.
	pairs []member
	// typeVal is the value of the last "type" member parseFlatObject read
	// into pairs (which leave it out), when typeSet.
	typeVal value
	typeSet bool
	rowType *RecordType
	rowIdx  []rowMember
	spare   map[string]any

	shared bool // ShareLines: values refer to the line itself
}

// maxInternedKeys bounds the reader's table of member names.
const maxInternedKeys = 4096

// NewNDJSONReader returns a reader of records from r. Records without a
// "type" member get defaultType.
func NewNDJSONReader(r io.Reader, defaultType string) *NDJSONReader {
	return &NDJSONReader{br: bufio.NewReaderSize(r, 64<<10), p: LineParser{defaultType: defaultType}, first: true}
}

// NewLineParser returns a parser of NDJSON lines; records without a
// "type" member get defaultType.
func NewLineParser(defaultType string) *LineParser {
	return &LineParser{defaultType: defaultType}
}

// ShareLines tells the parser that the lines it is given stay unmodified
// for as long as the values parsed from them are in use: string values then
// refer to the line itself instead of a copy. The caller must not reuse a
// line's memory before it is done with what was parsed from it.
func (p *LineParser) ShareLines() { p.shared = true }

// Parser returns a new parser of r's lines, with r's default type.
func (r *NDJSONReader) Parser() *LineParser { return NewLineParser(r.p.defaultType) }

// NextLine returns the next non-blank line, trimmed, unparsed, and its
// 0-based index, as Next would count it; the line is valid until the next
// call. A line longer than MaxLineBytes gives (nil, index,
// *ValidationError{Reason: "syntax"}). At the end NextLine returns io.EOF.
func (r *NDJSONReader) NextLine() ([]byte, int, error) {
	for {
		if r.err != nil {
			return nil, r.next, r.err
		}
		line, tooLong, err := r.readLine()
		if err != nil {
			r.err = err
		}
		if r.first {
			r.first = false
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 && !tooLong {
			continue
		}
		idx := r.next
		r.next++
		if tooLong {
			return nil, idx, &ValidationError{Reason: ReasonSyntax}
		}
		return line, idx, nil
	}
}

// Next returns the next record and its 0-based index among the input's
// non-blank lines. A line that is not a JSON object gives
// (Record{}, index, *ValidationError{Reason: "syntax"}) and reading goes on;
// a "type" member that is not a string gives Field "type", Reason "type".
// At the end Next returns io.EOF; any other error is an I/O error.
func (r *NDJSONReader) Next() (Record, int, error) {
	line, idx, err := r.NextLine()
	if err != nil {
		return Record{}, idx, err
	}
	rec, verr := r.p.Parse(line, nil)
	if verr != nil {
		return Record{}, idx, verr
	}
	return rec, idx, nil
}

// readLine returns the next line without its newline. A line longer than
// MaxLineBytes is consumed and reported as tooLong. err is io.EOF or a
// read error after the last (possibly empty) line.
func (r *NDJSONReader) readLine() (line []byte, tooLong bool, err error) {
	r.buf = r.buf[:0]
	for {
		chunk, err := r.br.ReadSlice('\n')
		if !tooLong {
			if len(r.buf)+len(chunk) > MaxLineBytes+1 {
				tooLong = true
				r.buf = r.buf[:0]
			} else if err == nil && len(r.buf) == 0 {
				return chunk[:len(chunk)-1], false, nil // the common case: no copy
			} else {
				r.buf = append(r.buf, chunk...)
			}
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(r.buf, []byte{'\n'}), tooLong, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return r.buf, tooLong, err
		}
	}
}

// Parse parses one line, a JSON object, into a record, as
// NDJSONReader.Next does. The record's fields go into fields, emptied
// first, when it is not nil (a caller done with the previous record reuses
// its map), into a new map otherwise.
func (p *LineParser) Parse(line []byte, fields map[string]any) (Record, *ValidationError) {
	if fields == nil {
		fields = make(map[string]any, 32)
	} else {
		clear(fields)
	}
	if _, ok := p.parseFlatObject(line, fields, nil); !ok {
		fields = nil
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		if err := dec.Decode(&fields); err != nil || fields == nil {
			return Record{}, &ValidationError{Reason: ReasonSyntax}
		}
		if _, err := dec.Token(); err != io.EOF {
			return Record{}, &ValidationError{Reason: ReasonSyntax}
		}
	}
	rec := Record{Type: p.defaultType, Fields: fields}
	if t, ok := fields["type"]; ok {
		s, ok := t.(string)
		if !ok {
			return Record{}, &ValidationError{Field: "type", Reason: ReasonType}
		}
		rec.Type = s
		delete(fields, "type")
	}
	return rec, nil
}

// parseFlatObject is the fast path of parseRecordLine for the common line:
// valid UTF-8, one object whose values are strings without escapes,
// numbers, true, false or null. It gives the same result as encoding/json
// with UseNumber; for anything else it returns false and the caller uses
// encoding/json. Values are cut from one copy of the line: one allocation
// per line rather than one per value.
//
// With names set instead of fields, it stores nothing: it calls names with
// each member name but "type" and returns the "type" member's value if it
// is a string. With neither, it appends every member but "type" to
// p.pairs and keeps the last "type" member's value in p.typeVal (typeSet).
func (p *LineParser) parseFlatObject(b []byte, fields map[string]any, names func(string, []byte)) (typ string, ok bool) {
	values := names == nil // values are kept, in fields or p.pairs
	// UTF-8 is checked string by string (flatStringEnd): outside strings
	// only ASCII is accepted, so the line needs no pass of its own.
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return "", false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return "", skipSpace(b, i+1) == len(b)
	}
	k := 0 // members so far
	typeSeen := false
	var line string // b as a string, made at the first string or number value
	str := func(from, to int) string {
		if line == "" {
			if p.shared {
				line = unsafe.String(unsafe.SliceData(b), len(b))
			} else {
				line = string(b)
			}
		}
		return line[from:to]
	}
	for {
		j, ok := flatStringEnd(b, i)
		if !ok {
			return "", false
		}
		key := p.member(k, b[i+1:j-1])
		k++
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return "", false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return "", false
		}
		var v value
		strVal := false
		var raw []byte // a string value's bytes, for names
		switch c := b[i]; {
		case c == '"':
			j, ok := flatStringEnd(b, i)
			if !ok {
				return "", false
			}
			strVal, raw = true, b[i+1:j-1]
			switch {
			case values:
				v = value{s: str(i+1, j-1), str: true}
			case key == "type":
				if typeSeen {
					// Two "type" members: a map keeps the last, a reader
					// of names might take either. Not a plain line.
					return "", false
				}
				typ, typeSeen = p.intern(b[i+1:j-1]), true
			}
			i = j
		case c == '-' || isDigit(c):
			j := i
			for j < len(b) && (isDigit(b[j]) || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				j++
			}
			if _, _, ok := jsonNumber(unsafeString(b[i:j])); !ok {
				return "", false
			}
			if values {
				v.v = json.Number(str(i, j))
			}
			i = j
		case bytes.HasPrefix(b[i:], []byte("true")):
			v.v, i = true, i+4
		case bytes.HasPrefix(b[i:], []byte("false")):
			v.v, i = false, i+5
		case bytes.HasPrefix(b[i:], []byte("null")):
			i += 4
		default:
			return "", false
		}
		if !values && key == "type" && !strVal {
			return "", false // a "type" that is not a string: not a plain line
		}
		switch {
		case fields != nil:
			fields[key] = v.any()
		case values && key == "type":
			p.typeVal, p.typeSet = v, true // the last one counts, as in a map
		case values:
			p.pairs = append(p.pairs, member{key, v})
		case key != "type":
			names(key, raw)
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return "", false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return typ, skipSpace(b, i+1) == len(b)
		default:
			return "", false
		}
	}
}

// Members reads a line as Parse would, but only its member names: it calls
// fn with each name other than "type", and with the member's value when it
// is a string (nil otherwise; the bytes are the line's: keep no reference),
// and returns the "type" member's value. ok is false for a line that is not
// an object of plain values (strings without escapes, numbers, true, false,
// null); Parse tells whether such a line is a record at all.
func (p *LineParser) Members(line []byte, fn func(name string, str []byte)) (recordType string, ok bool) {
	return p.parseFlatObject(line, nil, fn)
}

// unsafeString views b as a string for a check that does not keep it.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// flatStringEnd returns the index after the closing quote of the string
// without escapes or control characters starting at b[i] == '"'. ok is
// false too when the string is not valid UTF-8; ASCII strings, the
// common case, are checked by the scan itself.
func flatStringEnd(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	var high uint64 // the OR of every byte scanned, for its top bit
	j := i + 1
	for ; j+8 <= len(b); j += 8 {
		x := binary.LittleEndian.Uint64(b[j:])
		if stopsString(x) {
			break
		}
		high |= x
	}
	for ; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if high&highs != 0 && !utf8.Valid(b[i+1:j]) {
				return j, false
			}
			return j + 1, true
		case c == '\\' || c < 0x20:
			return j, false
		default:
			high |= uint64(c)
		}
	}
	return len(b), false
}

// member returns the k-th member name of a line, interned: lines of one
// feed name their members in the same order, so the name of the last
// line's k-th member is compared first, without hashing.
func (p *LineParser) member(k int, b []byte) string {
	if k < len(p.order) && p.order[k] == unsafeString(b) {
		return p.order[k]
	}
	s := p.intern(b)
	switch {
	case k < len(p.order):
		p.order[k] = s
	case k == len(p.order) && k < maxInternedKeys:
		p.order = append(p.order, s)
	}
	return s
}

// intern returns b as a string, shared between records for member names
// seen before.
func (p *LineParser) intern(b []byte) string {
	if s, ok := p.keys[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(p.keys) < maxInternedKeys {
		if p.keys == nil {
			p.keys = make(map[string]string)
		}
		p.keys[s] = s
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// DuplicateMember reports a member name that a JSON object line gives more
// than once at its top level (whose later value a map would keep), with
// true; "" and false for a line without one, or that is not an object.
func DuplicateMember(line []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		name, ok := t.(string)
		if !ok {
			return "", false
		}
		if seen[name] {
			return name, true
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}
