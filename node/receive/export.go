package receive

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// Holding is what this node holds from one agreement and record type.
type Holding struct {
	Agreement string    `json:"agreement"`
	Provider  string    `json:"provider"`
	Purpose   string    `json:"purpose"`
	Type      string    `json:"type"`
	Envelopes int       `json:"envelopes"`
	Records   int       `json:"records"`
	Latest    time.Time `json:"latest"` // the last arrival
}

// Holdings lists what this node holds, by agreement and record type
// (`eduspace received list`). Records erased or expired are not counted.
func (r *Receiver) Holdings(ctx context.Context) ([]Holding, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT i.agreement, i.sender, i.purpose, i.record_type, COUNT(*), SUM(r.records), MAX(i.received_ms)
		FROM received r JOIN inbox i ON i.envelope_id = r.envelope_id WHERE r.records > 0
		GROUP BY i.agreement, i.sender, i.purpose, i.record_type ORDER BY i.agreement, i.record_type`)
	if err != nil {
		return nil, fmt.Errorf("received: %w", err)
	}
	defer rows.Close()
	out := []Holding{}
	for rows.Next() {
		var h Holding
		var latest int64
		if err := rows.Scan(&h.Agreement, &h.Provider, &h.Purpose, &h.Type, &h.Envelopes, &h.Records, &latest); err != nil {
			return nil, fmt.Errorf("received: %w", err)
		}
		h.Latest = time.UnixMilli(latest).UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}

// Reasons an export is refused.
const (
	ExportUnknownAgreement = "unknown_agreement" // no agreement with the id, or never accepted
	ExportForeign          = "not_recipient"     // this node is not the agreement's recipient
	ExportRevoked          = "agreement_revoked"
	ExportEnded            = "agreement_ended" // past its valid_until
	ExportBadFormat        = "bad_format"
)

// ExportRefused is an export the agreement does not allow, with its reason.
type ExportRefused struct {
	Reason string
	Detail string
}

func (e *ExportRefused) Error() string { return "export refused (" + e.Reason + "): " + e.Detail }

// ExportOptions say what to export and how.
type ExportOptions struct {
	Agreement string
	Type      string // "": every type the agreement covers
	Format    string // ndjson (default) or csv (one type only)
	// Start, when set, is called with the export's count and digest once
	// its evidence is committed, before the first byte is written.
	Start func(ExportResult)
}

// ExportResult sums up an export; it is also its evidence entry's content.
type ExportResult struct {
	Agreement string `json:"agreement"`
	Purpose   string `json:"purpose"`
	// LegalBasis is the agreement's, on which the records were received.
	LegalBasis string `json:"legal_basis"`
	// Standard names the grading standards the records' senders
	// classified them with (NAME/VERSION, comma-separated when several),
	// as their envelopes' headers named them; empty when none did.
	Standard string `json:"standard,omitempty"`
	Records  int    `json:"records"`
	Digest   string `json:"digest"` // SHA-256 of the bytes exported
}

// Export writes the records received under an agreement to w, as they
// arrived (NDJSON, one record per line) or as CSV with a header row, and
// records the export in the evidence log with its count and the digest of
// its bytes. It is allowed while the agreement is in force and this node
// is its recipient; records past the agreement's retention are deleted
// first (with their evidence), so they are never exported. The export
// reads one snapshot twice: first to count and digest it, and, once its
// evidence entry is committed, to write it, so that nothing leaves
// without its entry. An envelope that does not decode stops the export
// before anything is written, naming the envelope.
func (r *Receiver) Export(ctx context.Context, o ExportOptions, w io.Writer) (ExportResult, error) {
	res := ExportResult{Agreement: o.Agreement}
	if o.Format == "" {
		o.Format = "ndjson"
	}
	if o.Format != "ndjson" && o.Format != "csv" {
		return res, &ExportRefused{ExportBadFormat, fmt.Sprintf("format %q: want ndjson or csv", o.Format)}
	}
	if o.Format == "csv" && o.Type == "" {
		return res, &ExportRefused{ExportBadFormat, "a CSV export is of one record type: name it (type)"}
	}
	a, err := r.exportable(ctx, o.Agreement)
	if err != nil {
		return res, err
	}
	res.Purpose, res.LegalBasis = string(a.Purpose), string(a.LegalBasis)
	if err := r.expire(ctx); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	tx, err := r.db.R.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	defer tx.Rollback()

	// First pass: count, digest and, for CSV, the columns.
	h := sha256.New()
	var columns []string
	if o.Format == "csv" {
		seen := map[string]bool{}
		if err := r.exportRecords(ctx, tx, o, func(_ string, rec []byte) error {
			return eachKey(rec, func(k string) {
				if k != "type" && !seen[k] {
					seen[k] = true
					columns = append(columns, k)
				}
			})
		}); err != nil {
			return res, err
		}
		sort.Strings(columns)
	}
	write := func(out io.Writer) func([]byte) error {
		if o.Format == "ndjson" {
			return func(rec []byte) error {
				_, err := out.Write(append(rec, '\n'))
				return err
			}
		}
		cw := csv.NewWriter(out)
		header := true
		row := make([]string, len(columns))
		return func(rec []byte) error {
			if header {
				header = false
				if err := cw.Write(columns); err != nil {
					return err
				}
			}
			if err := csvRow(rec, columns, row); err != nil {
				return err
			}
			if err := cw.Write(row); err != nil {
				return err
			}
			cw.Flush()
			return cw.Error()
		}
	}
	count := 0
	digest := write(h)
	subjects := map[string]bool{}
	if err := r.exportRecords(ctx, tx, o, func(typ string, rec []byte) error {
		count++
		if err := r.exportSubject(typ, rec, subjects); err != nil {
			return err
		}
		return digest(rec)
	}); err != nil {
		return res, err
	}
	res.Records, res.Digest = count, hex.EncodeToString(h.Sum(nil))
	if res.Standard, err = exportStandards(ctx, tx, o); err != nil {
		return res, err
	}
	if err := r.db.Write(ctx, func(wtx *sql.Tx) error {
		return r.ev.Append(ctx, wtx, evidence.Entry{Kind: evidence.KindExport, Peer: a.Provider, Agreement: a.ID,
			Purpose: string(a.Purpose), LegalBasis: res.LegalBasis, Standard: res.Standard, Count: count, Digest: res.Digest, Detail: map[string]int{"format_" + o.Format: 1},
			Subjects: slices.Sorted(maps.Keys(subjects))})
	}); err != nil {
		return res, fmt.Errorf("export: evidence: %w", err)
	}
	// Second pass: the bytes themselves, the same as digested.
	if o.Start != nil {
		o.Start(res)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	out := write(bw)
	if err := r.exportRecords(ctx, tx, o, func(_ string, rec []byte) error { return out(rec) }); err != nil {
		return res, err
	}
	return res, bw.Flush()
}

// exportSubject adds to subjects the keyed hash (the evidence log's) of
// the subject of rec, a received record of type typ: the value of its type's subject
// key as it arrived, the student number where the agreement delivers it
// in clear, else the provider's token for this node. The export's evidence
// entry names them, so that the subject report finds the export.
func (r *Receiver) exportSubject(typ string, rec []byte, subjects map[string]bool) error {
	t, ok := r.std.Type(typ)
	if !ok || t.SubjectKey() == "" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec, &m); err != nil {
		return fmt.Errorf("export: a stored record is not a JSON object: %w", err)
	}
	var subject string
	if json.Unmarshal(m[t.SubjectKey()], &subject) == nil && subject != "" {
		subjects[r.ev.Subject(subject)] = true
	}
	return nil
}

// exportable is the agreement with id, if this node may export what it
// received under it now.
func (r *Receiver) exportable(ctx context.Context, id string) (*policy.Agreement, error) {
	a, err := r.agreement(ctx, id)
	switch {
	case isNoAgreement(err):
		return nil, &ExportRefused{ExportUnknownAgreement, fmt.Sprintf("no agreement %q in force here", id)}
	case err != nil:
		return nil, fmt.Errorf("export: %w", err)
	case a.Recipient != r.nodeID:
		return nil, &ExportRefused{ExportForeign, fmt.Sprintf("agreement %s names %s as its recipient, not this node", a.ID, a.Recipient)}
	case a.Revoked:
		return nil, &ExportRefused{ExportRevoked, fmt.Sprintf("agreement %s is revoked: what was received under it may no longer be used", a.ID)}
	case !r.now().Before(a.ValidUntil):
		return nil, &ExportRefused{ExportEnded, fmt.Sprintf("agreement %s ended at %s", a.ID, a.ValidUntil.UTC().Format(time.RFC3339))}
	}
	return a, nil
}

// exportRecords calls fn with each record received under o's agreement
// (of o.Type, when set) and its type, envelope by envelope in order of
// arrival.
func (r *Receiver) exportRecords(ctx context.Context, tx *sql.Tx, o ExportOptions, fn func(typ string, rec []byte) error) error {
	rows, err := tx.QueryContext(ctx, `SELECT r.envelope_id, i.record_type, r.body FROM received r JOIN inbox i ON i.envelope_id = r.envelope_id
		WHERE i.agreement = ? AND (? = '' OR i.record_type = ?) AND r.records > 0 ORDER BY i.received_ms, i.envelope_id`,
		o.Agreement, o.Type, o.Type)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var eid, typ string
		var body []byte
		if err := rows.Scan(&eid, &typ, &body); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		body, err := r.dk.Open(nil, body, receivedAAD(eid))
		if err != nil {
			return fmt.Errorf("export: envelope %s as stored: %w", eid, err)
		}
		plain, err := envelope.ReceivedNDJSON(body)
		if err != nil {
			return fmt.Errorf("export: envelope %s as stored does not decode: %w", eid, err)
		}
		for line := range bytes.Lines(plain) {
			if line = bytes.TrimSpace(line); len(line) > 0 {
				if err := fn(typ, line); err != nil {
					return err
				}
			}
		}
	}
	return rows.Err()
}

// exportStandards names the standards that the envelopes of o's records
// name, sorted and comma-separated.
func exportStandards(ctx context.Context, tx *sql.Tx, o ExportOptions) (string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT i.standard FROM received r JOIN inbox i ON i.envelope_id = r.envelope_id
		WHERE i.agreement = ? AND (? = '' OR i.record_type = ?) AND r.records > 0 AND i.standard IS NOT NULL ORDER BY i.standard`,
		o.Agreement, o.Type, o.Type)
	if err != nil {
		return "", fmt.Errorf("export: standards: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return "", fmt.Errorf("export: standards: %w", err)
		}
		names = append(names, s)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("export: standards: %w", err)
	}
	return strings.Join(names, ","), nil
}

// eachKey calls fn with the member names of the JSON object rec.
func eachKey(rec []byte, fn func(string)) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec, &m); err != nil {
		return fmt.Errorf("export: a stored record is not a JSON object: %w", err)
	}
	for k := range m {
		fn(k)
	}
	return nil
}

// csvRow fills row with rec's values by columns: strings as they are,
// other values as JSON, absent and null ones empty.
func csvRow(rec []byte, columns, row []string) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(rec, &m); err != nil {
		return fmt.Errorf("export: a stored record is not a JSON object: %w", err)
	}
	for i, c := range columns {
		v, ok := m[c]
		switch {
		case !ok || string(v) == "null":
			row[i] = ""
		case len(v) > 0 && v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			row[i] = s
		default:
			row[i] = string(v)
		}
	}
	return nil
}

// IsExportRefused reports whether err is an export the agreement does
// not allow, and why.
func IsExportRefused(err error) (*ExportRefused, bool) {
	var e *ExportRefused
	ok := errors.As(err, &e)
	return e, ok
}
