package evidence

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Export file format (EXPORT.md): JSON values, one a line.
const (
	ExportFormat  = "eduspace-evidence-export"
	ExportVersion = 1
)

// ExportHeader is the first line of an export.
type ExportHeader struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	Node        string    `json:"node"`
	Space       string    `json:"space,omitempty"`
	Exported    time.Time `json:"exported"`
	Entries     int64     `json:"entries"`
	Checkpoints int       `json:"checkpoints"`
}

// exportLine is any line of an export; Type says which fields are set.
type exportLine struct {
	Type         string `json:"type"`
	ExportHeader        // its Node is a checkpoint line's node too
	// entry
	Seq      int64           `json:"seq"`
	PrevHash string          `json:"prev_hash"`
	Hash     string          `json:"hash"`
	Entry    json.RawMessage `json:"entry"`
	// checkpoint
	Count      int64  `json:"count"`
	Head       string `json:"head"`
	TimeMS     int64  `json:"time_ms"`
	Data       []byte `json:"data"`
	Credential string `json:"credential"`
	TSAToken   []byte `json:"tsa_token"`
}

// ReadCheckpoints reads node's checkpoints, in count order, inside tx: the
// checkpoints table belongs to package checkpoint, which hands its reader
// to Export.
type ReadCheckpoints func(ctx context.Context, tx *sql.Tx, node string) ([]Signed, error)

// Export writes node's evidence log from db to w (EXPORT.md): a header, every
// entry in seq order, then node's checkpoints kept in db, which read
// returns. Entries and checkpoints are read in one transaction, so a
// running node's export is a consistent snapshot. Export copies; it does
// not verify.
func Export(ctx context.Context, db *sql.DB, node string, read ReadCheckpoints, w io.Writer) error {
	return export(ctx, db, node, read, time.Now(), w)
}

func export(ctx context.Context, db *sql.DB, node string, read ReadCheckpoints, now time.Time, w io.Writer) error {
	if node == "" {
		return errors.New("export evidence: no node id")
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export evidence: %w", err)
	}
	defer tx.Rollback()
	h := ExportHeader{Format: ExportFormat, Version: ExportVersion, Node: node, Exported: now.UTC().Truncate(time.Millisecond)}
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM evidence`).Scan(&h.Entries); err != nil {
		return fmt.Errorf("export evidence: %w", err)
	}
	cps, err := read(ctx, tx, node)
	if err != nil {
		return fmt.Errorf("export evidence: %w", err)
	}
	h.Checkpoints = len(cps)
	for _, c := range cps {
		if h.Space = CredentialSpace(c.Credential); h.Space != "" {
			break
		}
	}

	bw := bufio.NewWriter(w)
	if err := writeLine(bw, exportHeaderLine{Type: "header", ExportHeader: h}); err != nil {
		return fmt.Errorf("export evidence: %w", err)
	}
	var n int64
	for r, err := range queryRows(ctx, tx) {
		if err != nil {
			return fmt.Errorf("export evidence: %w", err)
		}
		if !json.Valid(r.Entry) {
			return fmt.Errorf("export evidence: entry %d is not JSON (run audit verify)", r.Seq)
		}
		// Written by hand so that the entry's bytes, which the hash covers,
		// are copied exactly.
		b := []byte(`{"type":"entry","seq":`)
		b = strconv.AppendInt(b, r.Seq, 10)
		b = append(b, `,"prev_hash":"`...)
		b = hex.AppendEncode(b, r.PrevHash)
		b = append(b, `","hash":"`...)
		b = hex.AppendEncode(b, r.Hash)
		b = append(b, `","entry":`...)
		b = append(b, r.Entry...)
		b = append(b, "}\n"...)
		if _, err := bw.Write(b); err != nil {
			return fmt.Errorf("export evidence: %w", err)
		}
		n++
	}
	if n != h.Entries {
		return fmt.Errorf("export evidence: counted %d entries, read %d", h.Entries, n)
	}
	for _, c := range cps {
		if err := writeLine(bw, exportCheckpointLine{
			Type: "checkpoint", Node: c.Node, Count: c.Count, Head: hex.EncodeToString(c.Head),
			TimeMS: c.TimeMS, Data: c.Data, Credential: c.Credential, TSAToken: c.TSAToken,
		}); err != nil {
			return fmt.Errorf("export evidence: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export evidence: %w", err)
	}
	return nil
}

type exportHeaderLine struct {
	Type string `json:"type"`
	ExportHeader
}

type exportCheckpointLine struct {
	Type       string `json:"type"`
	Node       string `json:"node"`
	Count      int64  `json:"count"`
	Head       string `json:"head"`
	TimeMS     int64  `json:"time_ms"`
	Data       []byte `json:"data"`
	Credential string `json:"credential"`
	TSAToken   []byte `json:"tsa_token,omitempty"`
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ExportReader reads an export: the header when made, then the entries with
// Rows, then the checkpoints with Checkpoints. Errors name the line.
type ExportReader struct {
	Header ExportHeader

	dec     *json.Decoder
	line    int
	pending *exportLine // the first checkpoint line, read by Rows
	rowsErr error
	done    bool // Rows has run to its end
}

// NewExportReader reads the header of an export from r.
func NewExportReader(r io.Reader) (*ExportReader, error) {
	x := &ExportReader{dec: json.NewDecoder(bufio.NewReader(r))}
	l, err := x.next()
	if err == io.EOF {
		return nil, errors.New("read export: empty file")
	}
	if err != nil {
		return nil, err
	}
	if l.Type != "header" || l.Format != ExportFormat {
		return nil, errors.New("read export: not an eduspace evidence export (no header)")
	}
	if l.Version != ExportVersion {
		return nil, fmt.Errorf("read export: format version %d, this binary reads %d", l.Version, ExportVersion)
	}
	if l.Node == "" || l.Entries < 0 || l.Checkpoints < 0 {
		return nil, errors.New("read export: header lacks the node or has negative counts")
	}
	x.Header = l.ExportHeader
	return x, nil
}

func (x *ExportReader) next() (*exportLine, error) {
	var l exportLine
	x.line++
	if err := x.dec.Decode(&l); err != nil {
		if err == io.EOF {
			return nil, err
		}
		return nil, fmt.Errorf("read export: value %d: %w", x.line, err)
	}
	return &l, nil
}

// Rows yields the export's entries. Use it once; stopping early leaves the
// reader where it stopped.
func (x *ExportReader) Rows() Rows {
	return func(yield func(Row, error) bool) {
		for !x.done {
			l, err := x.next()
			if err == io.EOF {
				x.done = true
				return
			}
			if err != nil {
				x.done, x.rowsErr = true, err
				yield(Row{}, err)
				return
			}
			switch l.Type {
			case "entry":
			case "checkpoint":
				x.done, x.pending = true, l
				return
			default:
				x.done = true
				x.rowsErr = fmt.Errorf("read export: value %d: unexpected %q among the entries", x.line, l.Type)
				yield(Row{}, x.rowsErr)
				return
			}
			r := Row{Seq: l.Seq, Entry: l.Entry}
			if r.PrevHash, err = hex.DecodeString(l.PrevHash); err == nil {
				r.Hash, err = hex.DecodeString(l.Hash)
			}
			if err != nil || len(l.Entry) == 0 {
				x.done = true
				x.rowsErr = fmt.Errorf("read export: value %d: malformed entry line", x.line)
				yield(Row{}, x.rowsErr)
				return
			}
			if !yield(r, nil) {
				return
			}
		}
	}
}

// Checkpoints reads the rest of the export, skipping any entries Rows has not
// read, and returns its checkpoints. It verifies nothing.
func (x *ExportReader) Checkpoints() ([]Signed, error) {
	for _, err := range x.Rows() {
		if err != nil {
			return nil, err
		}
	}
	if x.rowsErr != nil {
		return nil, x.rowsErr
	}
	var out []Signed
	l := x.pending
	x.pending = nil
	for {
		if l == nil {
			var err error
			if l, err = x.next(); err == io.EOF {
				return out, nil
			} else if err != nil {
				return nil, err
			}
		}
		if l.Type != "checkpoint" {
			return nil, fmt.Errorf("read export: value %d: unexpected %q among the checkpoints", x.line, l.Type)
		}
		head, err := hex.DecodeString(l.Head)
		if err != nil || l.Node == "" || len(l.Data) == 0 || l.Credential == "" {
			return nil, fmt.Errorf("read export: value %d: malformed checkpoint line", x.line)
		}
		out = append(out, Signed{Node: l.Node, Count: l.Count, Head: head, TimeMS: l.TimeMS, Data: l.Data, Credential: l.Credential, TSAToken: l.TSAToken})
		l = nil
	}
}
