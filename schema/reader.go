package schema

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Reader is a stream of input records. Next returns the next record and
// its 0-based index in the input. A record that cannot be read (a line
// that is not JSON, a CSV cell of the wrong kind, an Ed-Fi element that
// is malformed) gives (Record{}, index, *ValidationError) and reading goes
// on with the next record; at the end Next returns io.EOF; any other error
// is an I/O error or an input that cannot be read further, and is sticky.
//
// Readers hold at most one record in memory (the Ed-Fi reader also the
// small join tables described at EdFiReader), never the whole input.
type Reader interface {
	Next() (Record, int, error)
}

// The input formats NewReader knows.
const (
	FormatNDJSON = "ndjson"
	FormatCSV    = "csv"
	FormatEdFi   = "edfi"
	FormatXAPI   = "xapi"
)

// Formats returns the input formats NewReader knows.
func Formats() []string { return []string{FormatNDJSON, FormatCSV, FormatEdFi, FormatXAPI} }

// NewReader returns a reader of records in format ("ndjson", "csv", "edfi"
// or "xapi") from r, converting values by the kinds of the default standard.
// See Standard.NewReader.
func NewReader(format string, r io.Reader, recordType string) (Reader, error) {
	return Default().NewReader(format, r, recordType)
}

// NewReader returns a reader of records in format from r, under s (the CSV
// reader converts cells by the kinds of s's fields):
//
//   - "ndjson": recordType is the type of records without a "type"
//     member (NewNDJSONReader);
//   - "csv": recordType is required and must be a type of s
//     (NewCSVReader);
//   - "edfi": recordType may be empty (the interchange decides) or one of
//     EdFiTypes, to keep only records of that type (NewEdFiReader);
//   - "xapi": recordType may be empty or "xapi_statement", the only type
//     xAPI statements become (NewXAPIReader).
//
// Errors name the format or type argument that is wrong, never input data.
func (s *Standard) NewReader(format string, r io.Reader, recordType string) (Reader, error) {
	switch format {
	case FormatNDJSON:
		return NewNDJSONReader(r, recordType), nil
	case FormatCSV:
		return NewCSVReader(s, r, recordType)
	case FormatEdFi:
		return NewEdFiReader(r, recordType)
	case FormatXAPI:
		if recordType != "" && recordType != XAPIType {
			return nil, fmt.Errorf("schema: xapi input gives records of type %q only, not %q", XAPIType, recordType)
		}
		return NewXAPIReader(r), nil
	}
	return nil, fmt.Errorf("schema: unknown input format %q (want one of %q)", format, Formats())
}

// guardReader counts the bytes a parser pulls from the input between two
// calls of reset and fails with errTooLong when one step pulls more than
// limit: it bounds the memory a parser that buffers a whole token or
// record (encoding/csv, encoding/xml) can use on hostile input.
type guardReader struct {
	r     io.Reader
	n     int64
	limit int64
	err   error // the first read error of r other than io.EOF
}

var errTooLong = errors.New("record too long")

func (g *guardReader) reset() { g.n = 0 }

func (g *guardReader) Read(p []byte) (int, error) {
	if g.n > g.limit {
		return 0, errTooLong
	}
	if rest := g.limit + 1 - g.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	if err != nil && err != io.EOF && g.err == nil {
		g.err = err
	}
	return n, err
}

// guardSlack is what a parser's own read-ahead may add to one step.
const guardSlack = 128 << 10

// skipBOM returns a reader of r without a leading UTF-8 byte order mark.
func skipBOM(r io.Reader) io.Reader {
	br := bufio.NewReaderSize(r, 64<<10)
	if b, err := br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
		br.Discard(3)
	}
	return br
}

// descriptorValue returns the code value of an Ed-Fi descriptor URI, the
// part after '#' ("uri://ed-fi.org/SexDescriptor#Female" → "Female"), or
// the last path segment, or the value itself.
func descriptorValue(v string) string {
	if i := strings.LastIndexByte(v, '#'); i >= 0 {
		return v[i+1:]
	}
	if i := strings.LastIndexByte(v, '/'); i >= 0 && i+1 < len(v) {
		return v[i+1:]
	}
	return v
}

// edfiTypes are the record types the Ed-Fi reader produces.
var edfiTypes = []string{"student", "guardian", "health_record", "program_participation", "discipline", "course_grade"}

// EdFiTypes returns the record types NewEdFiReader produces.
func EdFiTypes() []string { return slices.Clone(edfiTypes) }

// DetectFormat names the input format text starts with, by its first
// character that is not white space (after a UTF-8 byte order mark):
// '<' Ed-Fi XML; '[' xAPI (an array of statements); '{' xAPI when the
// first object is a statement result ({"statements": …}) or a statement
// (members "actor" and "verb", no "type"), NDJSON otherwise; anything else
// CSV. peek is the start of the input (64 KiB is plenty); a first object
// longer than peek is judged by the members peek holds.
func DetectFormat(peek []byte) string {
	peek = bytes.TrimPrefix(peek, []byte("\xef\xbb\xbf"))
	t := bytes.TrimLeft(peek, " \t\r\n")
	if len(t) == 0 {
		return FormatNDJSON // empty: nothing to read either way
	}
	switch t[0] {
	case '<':
		return FormatEdFi
	case '[':
		return FormatXAPI
	case '{':
		if looksXAPI(t) {
			return FormatXAPI
		}
		return FormatNDJSON
	}
	return FormatCSV
}

// looksXAPI reports whether the object t starts with is an xAPI statement
// or statement result, by its top-level member names.
func looksXAPI(t []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(t))
	if _, err := dec.Token(); err != nil {
		return false
	}
	var actor, verb bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case "statements", "more":
			return true
		case "type":
			return false
		case "actor":
			actor = true
		case "verb":
			verb = true
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			break
		}
	}
	return actor && verb
}
