package share

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/schema"
)

// ingestBatch is how many records the reader hands on at a time, and
// ingestTx the most one database transaction stores: the store takes
// together the batches the reader has ready, up to ingestTx, in one
// writer turn. The records table's key index is random (a SHA-256), so
// each transaction rewrites index pages all over it; the more records a
// transaction stores, the fewer times each page is written.
const (
	ingestBatch = 1000
	ingestTx    = 32 * ingestBatch
)

// reasonCoreRefused is the ingest refusal of a record classified CORE.
const reasonCoreRefused = "core_refused"

// InvalidReasons are the reasons a record is refused at ingest.
var InvalidReasons = []string{
	schema.ReasonUnknownField, schema.ReasonRequired, schema.ReasonType, schema.ReasonDate,
	schema.ReasonNegative, schema.ReasonEnum, schema.ReasonChecksum, schema.ReasonUnknownType,
	schema.ReasonSyntax, reasonCoreRefused,
}

// RecordError is one record refused at ingest: its position in the input,
// the field and a reason code. It never carries the value.
type RecordError struct {
	Index  int    `json:"index"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

// IngestResult sums up one ingest.
type IngestResult struct {
	Format    string         `json:"format"`    // ndjson, csv, edfi or xapi, as named or detected
	Encoding  string         `json:"encoding"`  // utf-8 or gb18030, as named or detected
	Records   int            `json:"records"`   // records read
	Stored    int            `json:"stored"`    // new records stored
	Duplicate int            `json:"duplicate"` // records already held, not stored again
	Invalid   int            `json:"invalid"`
	ByReason  map[string]int `json:"by_reason,omitempty"` // refused records by reason code
	Errors    []RecordError  `json:"errors,omitempty"`    // the first thousand
	// NoneStored: AllOrNothing was asked and a record was refused.
	NoneStored bool `json:"none_stored,omitempty"`
	// Shared are the shares under continuous agreements that the stored
	// records started (ShareContinuous).
	Shared []Continuous `json:"shared,omitempty"`
}

// ErrCSVNeedsType is returned for CSV input without a record type: a CSV
// row cannot name its own.
var ErrCSVNeedsType = errors.New("CSV input needs its record type (--type, ?type=)")

// IngestOptions say how to read an ingest's input.
type IngestOptions struct {
	// Type is the record type of records that do not name one (required
	// for CSV; for Ed-Fi XML, only records of it are kept).
	Type string
	// Format is ndjson, csv, edfi or xapi; "" detects it from the start
	// of the input (schema.DetectFormat).
	Format string
	// Encoding is utf-8 or gb18030 (GBK); "" detects it (schema.Decode).
	Encoding string
	// AllOrNothing stores nothing when any record is refused; the input
	// is held in memory until it has all been read.
	AllOrNothing bool
}

type ingestRow struct {
	key     []byte
	typ     string
	subject string
	level   schema.Level
	body    []byte // as stored: sealed under the data key
	labels  []byte // the classification (schema.Standard.AppendLabels), as stored
	// plain and plainLabels are body and labels before sealing, which the
	// continuous shares decide from.
	plain, plainLabels []byte
	// row and rowLabels are the record parsed and classified, when the
	// reader kept them (NDJSON under continuous agreements): the shares
	// decide from them without parsing again.
	row       *schema.Row
	rowLabels schema.Labels
	id        int64 // its id in the records table once stored; 0: held already
}

// Ingest reads records in the format and encoding o names or detects
// (NDJSON, CSV, Ed-Fi XML; UTF-8, GB18030), validates and classifies each,
// and stores the valid ones. An invalid record is refused alone, with its
// index, field and reason; the rest go on, unless o.AllOrNothing. Input
// that does not decode stops the ingest with a *schema.DecodeError naming
// the line; what was stored before it stays (none with AllOrNothing).
// Storing is idempotent: a record already held is not stored twice.
func (n *Sharer) Ingest(ctx context.Context, r io.Reader, o IngestOptions) (IngestResult, error) {
	var res IngestResult
	rd, err := n.openInput(r, o, &res)
	if err != nil {
		return res, fmt.Errorf("ingest: %w", err)
	}
	// Under continuous agreements the records stored go on to their
	// shares while the next ones are read and stored: a third goroutine
	// shares each stored batch, from its first record on.
	var cont *continuousShares
	if !o.AllOrNothing {
		if cont, err = n.startContinuous(ctx); err != nil {
			return res, fmt.Errorf("ingest: %w", err)
		}
	}
	// One goroutine reads, parses and classifies while this one stores:
	// the two halves of an ingest take about as long as each other.
	var held [][]ingestRow // AllOrNothing: everything, stored at the end
	var read IngestResult  // the reader's counts
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	batches := make(chan []ingestRow, ingestTx/ingestBatch)
	var readErr error
	var wg sync.WaitGroup
	keep := cont != nil && cont.ids != nil // the shares decide the rows as read
	wg.Go(func() {
		defer close(batches)
		readErr = n.readIngest(rctx, rd, batches, &read, keep)
	})
	var storeErr error
	for b := range batches {
		switch {
		case storeErr != nil: // drain
		case o.AllOrNothing:
			held = append(held, b)
		default:
			// The batches the reader has ready go in one transaction.
		more:
			for len(b) < ingestTx {
				select {
				case next, ok := <-batches:
					if !ok {
						break more
					}
					b = append(b, next...)
				default:
					break more
				}
			}
			var ms int64
			if ms, storeErr = n.storeIngest(ctx, b, &res); storeErr != nil {
				stop()
			} else {
				cont.stored(b, ms)
			}
		}
	}
	wg.Wait()
	res.Records, res.Invalid, res.ByReason, res.Errors = read.Records, read.Invalid, read.ByReason, read.Errors
	if o.AllOrNothing && storeErr == nil && readErr == nil {
		if res.Invalid > 0 {
			res.NoneStored = true
			return res, nil
		}
		if cont, err = n.startContinuous(ctx); err != nil {
			return res, fmt.Errorf("ingest: %w", err)
		}
		for _, b := range held {
			var ms int64
			if ms, storeErr = n.storeIngest(ctx, b, &res); storeErr != nil {
				break
			}
			cont.stored(b, ms)
		}
	}
	// What was stored is shared, even when the ingest stopped short.
	res.Shared = cont.wait()
	if storeErr != nil {
		return res, storeErr
	}
	if readErr != nil {
		return res, readErr
	}
	return res, nil
}

// readIngest reads, validates and classifies the records of rd, counting
// the refused ones in res, and hands the valid ones to out in batches of
// ingestBatch, as they will be stored. With keep, each NDJSON record keeps
// its parsed row and classification for the continuous shares.
func (n *Sharer) readIngest(ctx context.Context, rd schema.Reader, out chan<- []ingestRow, res *IngestResult, keep bool) error {
	asOf := n.now()
	batch := make([]ingestRow, 0, ingestBatch)
	send := func() error {
		select {
		case out <- batch:
			batch = make([]ingestRow, 0, ingestBatch)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// NDJSON lines are parsed into a reused row, classified by position
	// and written back as stored from it: no map per record. Other
	// formats give records.
	lines, _ := rd.(lineReader)
	var parser *schema.LineParser
	if lines != nil {
		parser = lines.Parser()
	}
	row := new(schema.Row)
	var rec schema.Record
	var body []byte
	for {
		var labels schema.Labels
		var idx int
		var err error
		if lines != nil {
			var line []byte
			if line, idx, err = lines.NextLine(); err == nil {
				if verr := parser.ParseRow(line, n.std, row); verr != nil {
					err = verr
				} else {
					rec.Type = row.Type
				}
			}
		} else {
			rec, idx, err = rd.Next()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		var verr *schema.ValidationError
		if errors.As(err, &verr) {
			res.Records++
			res.reject(idx, verr)
			n.m.Invalid.WithLabelValues(verr.Reason).Inc()
			continue
		}
		if err != nil {
			return fmt.Errorf("ingest: read: %w", err)
		}
		res.Records++
		if lines != nil {
			labels, err = n.std.ClassifyRow(row, asOf)
		} else {
			labels, err = n.std.Classify(rec, asOf)
		}
		if errors.As(err, &verr) {
			res.reject(idx, verr)
			n.m.Invalid.WithLabelValues(verr.Reason).Inc()
			continue
		}
		if err != nil {
			return fmt.Errorf("ingest: classify: %w", err)
		}
		if labels.Level >= schema.CORE {
			res.reject(idx, &schema.ValidationError{Reason: reasonCoreRefused})
			n.m.Invalid.WithLabelValues(reasonCoreRefused).Inc()
			continue
		}
		// The fields as encoding/json writes the map: keys sorted, so the
		// body, and the key made from it, are canonical.
		if lines != nil {
			body = row.AppendMapJSON(nil)
		} else if body, err = json.Marshal(rec.Fields); err != nil {
			return fmt.Errorf("ingest: encode record %d: %w", idx, err)
		}
		h := sha256.New()
		h.Write([]byte(rec.Type))
		h.Write([]byte{0})
		h.Write(body)
		key := h.Sum(nil)
		plainLabels := n.std.AppendLabels(nil, labels)
		sealedBody, sealedLabels := n.sealHeld(key, body, plainLabels)
		r := ingestRow{key: key, typ: rec.Type, subject: n.subjectColumn(labels.Subject), level: labels.Level,
			body: sealedBody, labels: sealedLabels, plain: body, plainLabels: plainLabels}
		if keep && lines != nil {
			r.row, r.rowLabels = row.Keep(labels)
		}
		batch = append(batch, r)
		if len(batch) == ingestBatch {
			if err := send(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		return send()
	}
	return nil
}

// openInput decodes r as o says or as detected (res.Format, res.Encoding
// name what it found) and returns a reader of its records.
func (n *Sharer) openInput(r io.Reader, o IngestOptions, res *IngestResult) (schema.Reader, error) {
	text, enc, err := schema.Decode(r, o.Encoding)
	if err != nil {
		return nil, err
	}
	res.Encoding = enc
	br := bufio.NewReaderSize(text, detectPeek)
	if res.Format = o.Format; res.Format == "" {
		// As classify detects it (schema.DetectFormat), from what has
		// arrived of the start (up to detectPeek): a stream that sends a
		// record at a time is not kept waiting for more.
		br.Peek(1)
		peek, _ := br.Peek(br.Buffered())
		res.Format = schema.DetectFormat(peek)
	}
	if res.Format == schema.FormatCSV && o.Type == "" {
		return nil, ErrCSVNeedsType
	}
	return n.std.NewReader(res.Format, br, o.Type)
}

// detectPeek is how much of an input's start format detection reads.
const detectPeek = 64 << 10

func (res *IngestResult) reject(idx int, verr *schema.ValidationError) {
	res.Invalid++
	if res.ByReason == nil {
		res.ByReason = map[string]int{}
	}
	res.ByReason[verr.Reason]++
	// Keep the first thousand errors; the count says how many there were.
	if len(res.Errors) < 1000 {
		res.Errors = append(res.Errors, RecordError{Index: idx, Field: verr.Field, Reason: verr.Reason})
	}
}

var qInsertRecord = store.NewQuery(`INSERT OR IGNORE INTO records(key, type, subject, level, body, labels, ingested_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`)

// storeIngest stores rows in one transaction, sets the id of each it
// stored (0: held already), and returns the time it stored them at (Unix
// ms, their ingested_ms).
func (n *Sharer) storeIngest(ctx context.Context, rows []ingestRow, res *IngestResult) (int64, error) {
	now := n.now().UnixMilli()
	stored := 0
	var byLevel map[string]int
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		stored, byLevel = 0, map[string]int{}
		stmt, err := n.db.Stmt(ctx, tx, qInsertRecord)
		if err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		for i := range rows {
			r := &rows[i]
			r.id = 0
			out, err := stmt.ExecContext(ctx, r.key, r.typ, r.subject, r.level.String(), r.body, r.labels, now)
			if err != nil {
				return fmt.Errorf("ingest: store: %w", err)
			}
			k, err := out.RowsAffected()
			if err != nil {
				return fmt.Errorf("ingest: store: %w", err)
			}
			if k == 1 {
				stored++
				byLevel[r.typ+"/"+r.level.String()]++
				if r.id, err = out.LastInsertId(); err != nil {
					return fmt.Errorf("ingest: store: %w", err)
				}
			}
		}
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindIngest, Count: stored, Detail: byLevel})
	})
	if err != nil {
		for i := range rows {
			rows[i].id = 0
		}
		return 0, err
	}
	res.Stored += stored
	res.Duplicate += len(rows) - stored
	for k, c := range byLevel {
		typ, level := splitKey(k)
		n.m.Ingested.WithLabelValues(typ, level).Add(float64(c))
	}
	return now, nil
}

func splitKey(k string) (string, string) {
	typ, level, _ := strings.Cut(k, "/")
	return typ, level
}

// ScanRecords calls fn with the subject (its keyed hash) and body of every record of
// recordType this node holds, in the order they were ingested.
func (n *Sharer) ScanRecords(ctx context.Context, recordType string, fn func(subject string, body []byte) error) error {
	rows, err := n.db.R.QueryContext(ctx, `SELECT subject, key, body FROM records WHERE type = ? ORDER BY id`, recordType)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var subject string
		var key, body []byte
		if err := rows.Scan(&subject, &key, &body); err != nil {
			return err
		}
		if body, _, err = n.openHeld(key, body, nil); err != nil {
			return fmt.Errorf("held record: %w", err)
		}
		if err := fn(subject, body); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Held is how many records the node holds.
func (n *Sharer) Held(ctx context.Context) (float64, error) {
	var k int64
	if err := n.db.R.QueryRowContext(ctx, `SELECT count(*) FROM records`).Scan(&k); err != nil {
		return 0, fmt.Errorf("count records: %w", err)
	}
	return float64(k), nil
}
