package schema

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// CSVReader reads records of one type from CSV (RFC 4180, as
// encoding/csv reads it): a header row of field names, then one record per
// row. A leading byte order mark is skipped and blank lines are ignored.
//
// Cells are converted by the kind of their field in the standard: string,
// date, enum and resident_id cells stay strings; integer, number and
// amount cells become json.Number after a check of the number syntax
// (surrounding spaces ignored); bool cells are true/false/1/0 (any case).
// An empty cell leaves its field out of the record. A column that is not a
// field of the type is kept as a string, so that Classify reports it as an
// unknown field.
//
// Per row, Next reports *ValidationError{Field: f, Reason: "type"} for the
// first cell (in column order) that does not convert, and
// *ValidationError{Reason: "syntax"} for a row with a different number of
// cells than the header or a quoting error; reading goes on with the next
// row. A header that is empty or repeats a name, a row longer than
// MaxLineBytes (give or take the read buffer's 128 KiB) and read errors
// end the reading with an error: memory stays bounded by the longest row.
type CSVReader struct {
	typ    *RecordType
	guard  *guardReader
	cr     *csv.Reader
	header []string
	specs  []*FieldSpec // per column; nil for a column not in the type
	next   int
	err    error // sticky
}

// NewCSVReader returns a reader of records of recordType (a type of s)
// from CSV input r.
func NewCSVReader(s *Standard, r io.Reader, recordType string) (*CSVReader, error) {
	if recordType == "" {
		return nil, errors.New("schema: csv input needs a record type")
	}
	t, ok := s.Type(recordType)
	if !ok {
		return nil, fmt.Errorf("schema: unknown record type %q", recordType)
	}
	g := &guardReader{r: r, limit: MaxLineBytes + guardSlack}
	cr := csv.NewReader(skipBOM(g))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	return &CSVReader{typ: t, guard: g, cr: cr}, nil
}

// Next returns the next record and its 0-based index among the data rows.
func (r *CSVReader) Next() (Record, int, error) {
	for {
		if r.err != nil {
			return Record{}, r.next, r.err
		}
		if r.header == nil {
			r.err = r.readHeader()
			continue
		}
		r.guard.reset()
		row, err := r.cr.Read()
		if err != nil {
			var pe *csv.ParseError
			switch {
			case err == io.EOF:
				r.err = io.EOF
				continue
			case errors.As(err, &pe) && r.guard.err == nil && !errors.Is(err, errTooLong):
				idx := r.next
				r.next++
				return Record{}, idx, &ValidationError{Reason: ReasonSyntax}
			default:
				r.err = r.fatal(err)
				continue
			}
		}
		idx := r.next
		r.next++
		if len(row) != len(r.header) {
			return Record{}, idx, &ValidationError{Reason: ReasonSyntax}
		}
		fields := make(map[string]any, len(row))
		for i, cell := range row {
			if cell == "" {
				continue
			}
			v, ok := convertCell(r.specs[i], cell)
			if !ok {
				return Record{}, idx, &ValidationError{Field: r.header[i], Reason: ReasonType}
			}
			if v != nil {
				fields[r.header[i]] = v
			}
		}
		return Record{Type: r.typ.name, Fields: fields}, idx, nil
	}
}

// readHeader reads the header row; io.EOF for an input without one.
func (r *CSVReader) readHeader() error {
	r.guard.reset()
	row, err := r.cr.Read()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) && r.guard.err == nil && !errors.Is(err, errTooLong) {
			return fmt.Errorf("schema: csv header: line %d: %w", pe.Line, pe.Err)
		}
		return r.fatal(err)
	}
	r.header = make([]string, len(row))
	r.specs = make([]*FieldSpec, len(row))
	seen := make(map[string]bool, len(row))
	for i, name := range row {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			return fmt.Errorf("schema: csv header: column %d: empty field name", i+1)
		case seen[name]:
			return fmt.Errorf("schema: csv header: column %d: repeated field name", i+1)
		}
		seen[name] = true
		r.header[i] = name
		if j, ok := r.typ.index[name]; ok {
			r.specs[i] = &r.typ.fields[j]
		}
	}
	return nil
}

// fatal turns an error that ends the reading into one that names no data.
func (r *CSVReader) fatal(err error) error {
	switch {
	case r.guard.err != nil:
		return fmt.Errorf("schema: read csv: %w", r.guard.err)
	case errors.Is(err, errTooLong):
		return fmt.Errorf("schema: csv row at index %d longer than %d bytes", r.next, MaxLineBytes)
	}
	return fmt.Errorf("schema: read csv: %w", err)
}

// convertCell converts a non-empty cell by the kind of its field (nil
// spec: a column not in the type, kept as a string). A nil value with ok
// means the cell holds only spaces and leaves the field out.
func convertCell(f *FieldSpec, cell string) (any, bool) {
	if f == nil || f.Kind.stringKind() {
		return cell, true
	}
	v := strings.TrimSpace(cell)
	if v == "" {
		return nil, true
	}
	switch f.Kind {
	case KindBool, KindFlag:
		switch {
		case v == "1" || strings.EqualFold(v, "true"):
			return true, true
		case v == "0" || strings.EqualFold(v, "false"):
			return false, true
		case f.Kind == KindFlag:
			return cell, true // a flag that says what
		}
		return nil, false
	case KindInteger, KindNumber, KindAmount:
		if _, _, ok := jsonNumber(v); ok {
			return json.Number(v), true
		}
		return nil, false
	}
	return cell, true
}
