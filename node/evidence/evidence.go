// Package evidence keeps a node's evidence log: an append-only hash chain
// over every event that concerns a record (ingest, decision, seal, send,
// receive, refusal), stored in the node database's evidence table.
//
// Each entry's hash is SHA-256(prev_hash ‖ canonical entry), where the
// canonical entry is the entry's JSON encoding (struct fields in a fixed
// order, map keys sorted). Data subjects appear only as keyed hashes.
//
// [VerifyCheckpoints] checks a chain, read from a database ([DBRows]) or an
// export ([ExportReader]), against the node's signed checkpoints, which
// [Signed.Authenticate] verifies; [Export] writes the file an auditor
// verifies offline (EXPORT.md).
//
// It owns the evidence table. It must never rewrite or delete an entry,
// never put a data subject's identifier in an entry other than as its keyed
// hash, and never append outside the transaction that makes the change the
// entry records.
package evidence

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/eduspace/eduspace/node/store"
)

// Kinds of entry.
const (
	KindIngest  = "ingest"
	KindDecide  = "decide"
	KindSeal    = "seal"
	KindSend    = "send"
	KindReceive = "receive"
	KindRefuse  = "refuse"
	KindReceipt = "receipt"
	KindConsent = "consent"
	KindErasure = "erasure"
	KindDrop    = "drop"
	KindExpire  = "expire"
	KindAgree   = "agreement"
	KindExport  = "export"   // received records handed to the institution's own systems
	KindDataKey = "data_key" // a rotation of the data key started (reason rotation_started) or finished (rotation_finished)
)

// Entry is one event. Only Seq and Time are set by the log.
type Entry struct {
	Seq       int64  `json:"seq"`
	Time      int64  `json:"t"` // unix milliseconds
	Node      string `json:"node"`
	Kind      string `json:"kind"`
	Peer      string `json:"peer,omitempty"`
	Agreement string `json:"agreement,omitempty"`
	Purpose   string `json:"purpose,omitempty"`
	// LegalBasis is the ground records were disclosed or received on (the
	// agreement's legal basis, PIPL art. 13), and Standard the grading
	// standard they were classified with, NAME/VERSION
	// (schema.Standard.Ref): set on the entries about records (EXPORT.md).
	LegalBasis string `json:"legal_basis,omitempty"`
	Standard   string `json:"standard,omitempty"`
	Envelope   string `json:"envelope,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Reason     string `json:"reason,omitempty"`
	Count      int    `json:"count,omitempty"`
	// Subjects are keyed hashes of the data subjects concerned.
	Subjects []string `json:"subjects,omitempty"`
	// Detail holds counts by a closed set of keys (levels, record types).
	Detail map[string]int `json:"detail,omitempty"`
	// Digest is the SHA-256 of what an export wrote, in hex.
	Digest string `json:"digest,omitempty"`
}

// Log appends to the chain of one node.
type Log struct {
	node string
	key  []byte
	now  func() time.Time
	macs sync.Pool // of *subjectMAC under key, for Subject
	db   *store.DB // its prepared statements, when set (UseDB)
}

// The statements of Append, prepared once per database.
var (
	qHead   = store.NewQuery(`SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1`)
	qAppend = store.NewQuery(`INSERT INTO evidence(seq, entry, prev_hash, hash) VALUES (?, ?, ?, ?)`)
)

// entryBufs holds buffers for Append's encoding; SQLite copies what it
// binds, so a buffer is free again when Append returns.
var entryBufs sync.Pool

// UseDB makes Append use db's prepared statements; the transactions given
// to Append must then be db's.
func (l *Log) UseDB(db *store.DB) *Log {
	l.db = db
	return l
}

// New returns the log of node; subjectKey keys the subject hashes.
func New(node string, subjectKey []byte, now func() time.Time) *Log {
	return &Log{node: node, key: subjectKey, now: now}
}

// Subject returns the keyed hash under which a data subject appears in the
// log: HMAC-SHA256(subjectKey, "eduspace evidence subject v1" ‖ 0 ‖ id),
// the first 16 bytes in hex.
func (l *Log) Subject(id string) string {
	sum := l.SubjectSum(id)
	return hex.EncodeToString(sum[:])
}

// SubjectSum is Subject in binary: the 16 bytes its hex spells.
func (l *Log) SubjectSum(id string) [16]byte {
	m, _ := l.macs.Get().(*subjectMAC)
	if m == nil {
		m = &subjectMAC{h: hmac.New(sha256.New, l.key)}
	}
	m.h.Reset()
	m.in = append(append(m.in[:0], "eduspace evidence subject v1\x00"...), id...)
	m.h.Write(m.in)
	var sum [sha256.Size]byte
	var out [16]byte
	copy(out[:], m.h.Sum(sum[:0]))
	l.macs.Put(m)
	return out
}

// subjectMAC is an HMAC state for Subject and its input, reused.
type subjectMAC struct {
	h  hash.Hash
	in []byte
}

// Append adds e to the chain inside tx. The head is read inside the same
// transaction, so a rolled-back append leaves no trace.
func (l *Log) Append(ctx context.Context, tx *sql.Tx, e Entry) error {
	ctx = store.InTx(ctx)
	var seq int64
	var prev []byte
	err := l.db.QueryRow(ctx, tx, qHead).Scan(&seq, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		seq, prev = 0, make([]byte, sha256.Size)
	} else if err != nil {
		return fmt.Errorf("read evidence head: %w", err)
	}
	e.Seq = seq + 1
	e.Time = l.now().UnixMilli()
	e.Node = l.node
	bp, _ := entryBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer entryBufs.Put(bp)
	body := appendEntry((*bp)[:0], &e)
	*bp = body
	h := chain(prev, body)
	if _, err := l.db.Exec(ctx, tx, qAppend, e.Seq, body, prev, h); err != nil {
		return fmt.Errorf("append evidence: %w", err)
	}
	return nil
}

func chain(prev, body []byte) []byte {
	s := sha256.New()
	s.Write(prev)
	s.Write(body)
	return s.Sum(nil)
}

// Head is the state of a chain: how many entries and the last hash.
type Head struct {
	Count int64
	Hash  []byte
	// Node is the node the entries name ("" for an empty chain).
	Node string
}

// BrokenError names the first entry at which a chain fails to verify.
type BrokenError struct {
	Seq    int64
	Reason string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("evidence chain broken at entry %d: %s", e.Seq, e.Reason)
}

// Verify walks the whole chain in db and checks every link: consecutive
// sequence numbers from 1, each prev_hash equal to the previous hash, each
// hash recomputed from its entry, each entry's own seq equal to its row, and
// every entry naming the first one's node. A broken chain returns a
// *BrokenError. [VerifyCheckpoints] checks the
// chain against checkpoints too.
func Verify(ctx context.Context, db *sql.DB) (Head, error) {
	return VerifyCheckpoints(DBRows(ctx, db), nil)
}

// EntryTime is when entry seq was appended, read from the database the
// log uses (UseDB).
func (l *Log) EntryTime(ctx context.Context, seq int64) (time.Time, error) {
	if l.db == nil {
		return time.Time{}, errors.New("read evidence entry: no database")
	}
	var body []byte
	if err := l.db.R.QueryRowContext(ctx, `SELECT entry FROM evidence WHERE seq = ?`, seq).Scan(&body); err != nil {
		return time.Time{}, fmt.Errorf("read evidence entry %d: %w", seq, err)
	}
	var e struct {
		Time int64 `json:"t"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return time.Time{}, fmt.Errorf("read evidence entry %d: %w", seq, err)
	}
	return time.UnixMilli(e.Time), nil
}

// HashAt is the chain's hash after entry seq, nil when the chain is
// shorter.
func (l *Log) HashAt(ctx context.Context, seq int64) ([]byte, error) {
	if l.db == nil {
		return nil, errors.New("read evidence entry: no database")
	}
	var h []byte
	err := l.db.R.QueryRowContext(ctx, `SELECT hash FROM evidence WHERE seq = ?`, seq).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read evidence entry %d: %w", seq, err)
	}
	return h, nil
}

// Head reads the chain's length and last hash from the database the log
// uses (UseDB); an empty chain is 0 and nil.
func (l *Log) Head(ctx context.Context) (count int64, hash []byte, err error) {
	if l.db == nil {
		return 0, nil, errors.New("read evidence head: no database")
	}
	err = l.db.R.QueryRowContext(ctx, `SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1`).Scan(&count, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read evidence head: %w", err)
	}
	return count, hash, nil
}

// About lists the entries of kind that name the subject hash among their
// subjects, oldest first, read from the database the log uses (UseDB). It
// reads the whole log: for reports, not for a hot path.
func (l *Log) About(ctx context.Context, kind, subject string) ([]Entry, error) {
	if l.db == nil {
		return nil, errors.New("read evidence entries: no database")
	}
	rows, err := l.db.R.QueryContext(ctx, `SELECT entry FROM evidence WHERE instr(entry, ?) > 0 AND instr(entry, ?) > 0 ORDER BY seq`,
		`"kind":`+strconv.Quote(kind), strconv.Quote(subject))
	if err != nil {
		return nil, fmt.Errorf("read evidence entries: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("read evidence entries: %w", err)
		}
		var e Entry
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("read evidence entries: %w", err)
		}
		if e.Kind == kind && slices.Contains(e.Subjects, subject) {
			out = append(out, e)
		}
	}
	return out, rows.Err()
}
