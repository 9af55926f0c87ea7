package schema

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// MaxLineBytes is the longest NDJSON line NDJSONReader accepts; a longer
// line is skipped and reported as a syntax error.
const MaxLineBytes = 1 << 20

// NDJSONReader reads records from newline-delimited JSON: one JSON object
// per line, blank lines skipped. A record's type is the object's "type"
// member, or the reader's default type when the line has none. Memory use
// is bounded by the longest line, not by the input.
type NDJSONReader struct {
	br          *bufio.Reader
	defaultType string
	next        int   // index of the next record
	err         error // sticky read error
	buf         []byte
	first       bool
	keys        map[string]string // interned member names
}

// maxInternedKeys bounds the reader's table of member names.
const maxInternedKeys = 4096

// NewNDJSONReader returns a reader of records from r. Records without a
// "type" member get defaultType.
func NewNDJSONReader(r io.Reader, defaultType string) *NDJSONReader {
	return &NDJSONReader{br: bufio.NewReaderSize(r, 64<<10), defaultType: defaultType, first: true}
}

// Next returns the next record and its 0-based index among the input's
// non-blank lines. A line that is not a JSON object gives
// (Record{}, index, *ValidationError{Reason: "syntax"}) and reading goes on;
// a "type" member that is not a string gives Field "type", Reason "type".
// At the end Next returns io.EOF; any other error is an I/O error.
func (r *NDJSONReader) Next() (Record, int, error) {
	for {
		if r.err != nil {
			return Record{}, r.next, r.err
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
			return Record{}, idx, &ValidationError{Reason: ReasonSyntax}
		}
		rec, verr := r.parseRecordLine(line)
		if verr != nil {
			return Record{}, idx, verr
		}
		return rec, idx, nil
	}
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

// parseRecordLine parses one JSON object into a record.
func (r *NDJSONReader) parseRecordLine(line []byte) (Record, *ValidationError) {
	fields, ok := r.parseFlatObject(line)
	if !ok {
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
	rec := Record{Type: r.defaultType, Fields: fields}
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
// encoding/json.
func (r *NDJSONReader) parseFlatObject(b []byte) (map[string]any, bool) {
	if !utf8.Valid(b) {
		return nil, false
	}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	fields := make(map[string]any, 32)
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return fields, skipSpace(b, i+1) == len(b)
	}
	for {
		j, ok := flatStringEnd(b, i)
		if !ok {
			return nil, false
		}
		key := r.intern(b[i+1 : j-1])
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return nil, false
		}
		var v any
		switch c := b[i]; {
		case c == '"':
			v, i, ok = flatString(b, i)
			if !ok {
				return nil, false
			}
		case c == '-' || isDigit(c):
			j := i
			for j < len(b) && (isDigit(b[j]) || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				j++
			}
			n := string(b[i:j])
			if _, _, ok := jsonNumber(n); !ok {
				return nil, false
			}
			v, i = json.Number(n), j
		case bytes.HasPrefix(b[i:], []byte("true")):
			v, i = true, i+4
		case bytes.HasPrefix(b[i:], []byte("false")):
			v, i = false, i+5
		case bytes.HasPrefix(b[i:], []byte("null")):
			v, i = nil, i+4
		default:
			return nil, false
		}
		fields[key] = v
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return fields, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// flatString parses a JSON string without escapes or control characters
// starting at b[i] == '"'.
func flatString(b []byte, i int) (string, int, bool) {
	j, ok := flatStringEnd(b, i)
	if !ok {
		return "", j, false
	}
	return string(b[i+1 : j-1]), j, true
}

// flatStringEnd returns the index after the closing quote of the string
// without escapes or control characters starting at b[i] == '"'.
func flatStringEnd(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\' || c < 0x20:
			return j, false
		}
	}
	return len(b), false
}

// intern returns b as a string, shared between records for member names
// seen before.
func (r *NDJSONReader) intern(b []byte) string {
	if s, ok := r.keys[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(r.keys) < maxInternedKeys {
		if r.keys == nil {
			r.keys = make(map[string]string)
		}
		r.keys[s] = s
	}
	return s
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
