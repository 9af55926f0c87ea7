// Package evidence keeps a node's evidence log: an append-only hash chain
// over every event that concerns a record (ingest, decision, seal, send,
// receive, refusal), stored in the node database's evidence table.
//
// Each entry's hash is H(prev_hash ‖ canonical entry), where the
// canonical entry is the entry's JSON encoding (struct fields in a fixed
// order, map keys sorted) and H is SHA-256, or SM3 in the log of a node on
// the GM/T suite ([Log.ForSuite]): entry 1's prev_hash, the chain's
// genesis, says which (EXPORT.md). Data subjects appear only as keyed
// hashes.
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
	"bytes"
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
	"sync/atomic"
	"time"

	"github.com/eduspace/eduspace/crypto"
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
	KindExport  = "export" // received records handed to the institution's own systems
	// KindRecover opens the log again after a restore from an older copy
	// (Log.AppendRecovery): the entries between the copy's last and the
	// space's newest checkpoint of the node are lost, and the chain goes on
	// from that checkpoint's head.
	KindRecover = "recover"
	KindDataKey = "data_key" // a rotation of the data key started (reason rotation_started) or finished (rotation_finished)
	// KindCatalogue is a change of the datasets this node offers (reason
	// offered, withdrawn), a noised row count drawn (rows_noised), its
	// catalogue published to the space (published) or another member's
	// received (received): node/catalogue/CATALOGUE.md.
	KindCatalogue = "catalogue"
)

// ErrFrozen is the error Append returns while the log is frozen (Freeze).
var ErrFrozen = errors.New("evidence log frozen")

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
	// Digest is a SHA-256 in hex: of what an export wrote, or of the
	// envelope a receipt answers for, as its recipient received it.
	Digest string `json:"digest,omitempty"`
}

// Log appends to the chain of one node.
type Log struct {
	node string
	key  []byte
	now  func() time.Time
	macs sync.Pool // of *subjectMAC under key, for Subject
	db   *store.DB // its prepared statements, when set (UseDB)
	// frozen, when set, says why nothing may be appended (Freeze).
	frozen atomic.Pointer[error]
	// start is the algorithm a new chain starts with (ForSuite); alg is
	// the stored chain's, once read from its entry 1.
	start chainAlg
	alg   atomic.Uint32
}

// Freeze makes every Append fail with an error wrapping ErrFrozen and
// saying why, until AppendRecovery reopens the log. A node whose database
// was restored from an older copy freezes its log: what it appended now
// would take numbers the space has seen under other entries.
// AppendRecovery opens it again.
func (l *Log) Freeze(why string) {
	err := fmt.Errorf("%w: %s", ErrFrozen, why)
	l.frozen.Store(&err)
}

// Frozen says why the log is frozen, nil when it is not.
func (l *Log) Frozen() error {
	if err := l.frozen.Load(); err != nil {
		return *err
	}
	return nil
}

// chainAlg is the hash of a chain: SHA-256 or SM3.
type chainAlg uint32

const (
	chainSHA256 chainAlg = 1
	chainSM3    chainAlg = 2
)

// String returns "SHA-256" or "SM3".
func (a chainAlg) String() string {
	if a == chainSM3 {
		return "SM3"
	}
	return "SHA-256"
}

// sm3Genesis is entry 1's prev_hash in an SM3 chain:
// SM3("eduspace evidence chain v1 sm3"). A SHA-256 chain's is 32 zero
// bytes.
var sm3Genesis = func() []byte {
	h := crypto.SuiteSM2.NewHash()
	h.Write([]byte("eduspace evidence chain v1 sm3"))
	return h.Sum(nil)
}()

func (a chainAlg) genesis() []byte {
	if a == chainSM3 {
		return bytes.Clone(sm3Genesis)
	}
	return make([]byte, sha256.Size)
}

// genesisAlg is the algorithm of the chain whose entry 1 has prev_hash
// prev, or 0 when prev starts no chain.
func genesisAlg(prev []byte) chainAlg {
	switch {
	case bytes.Equal(prev, sm3Genesis):
		return chainSM3
	case bytes.Equal(prev, make([]byte, sha256.Size)):
		return chainSHA256
	}
	return 0
}

// ForSuite makes a chain this log starts hash with suite s's hash
// (crypto.SuiteID.NewHash): SM3 for the GM/T suite, SHA-256 otherwise. A
// chain already stored keeps the algorithm its entry 1 started it with.
func (l *Log) ForSuite(s crypto.SuiteID) *Log {
	l.start = chainSHA256
	if s == crypto.SuiteSM2 {
		l.start = chainSM3
	}
	return l
}

// The statements of Append, prepared once per database.
var (
	qHead   = store.NewQuery(`SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1`)
	qAppend = store.NewQuery(`INSERT INTO evidence(seq, entry, prev_hash, hash, kind) VALUES (?, ?, ?, ?, ?)`)
	qFirst  = store.NewQuery(`SELECT prev_hash FROM evidence WHERE seq = 1`)
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
	return &Log{node: node, key: subjectKey, now: now, start: chainSHA256}
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
	if err := l.Frozen(); err != nil {
		return err
	}
	ctx = store.InTx(ctx)
	var seq int64
	var prev []byte
	err := l.db.QueryRow(ctx, tx, qHead).Scan(&seq, &prev)
	alg := l.start
	if errors.Is(err, sql.ErrNoRows) {
		seq, prev = 0, alg.genesis()
	} else if err != nil {
		return fmt.Errorf("read evidence head: %w", err)
	} else if alg, err = l.storedAlg(ctx, tx); err != nil {
		return err
	}
	return l.appendAt(ctx, tx, alg, seq+1, prev, e)
}

// appendAt writes e as entry seq, chained to prev under alg.
func (l *Log) appendAt(ctx context.Context, tx *sql.Tx, alg chainAlg, seq int64, prev []byte, e Entry) error {
	e.Seq = seq
	e.Time = l.now().UnixMilli()
	e.Node = l.node
	bp, _ := entryBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer entryBufs.Put(bp)
	body := appendEntry((*bp)[:0], &e)
	*bp = body
	h := chain(alg, prev, body)
	if _, err := l.db.Exec(ctx, tx, qAppend, e.Seq, body, prev, h, e.Kind); err != nil {
		return fmt.Errorf("append evidence: %w", err)
	}
	return nil
}

// AppendRecovery reopens a frozen log inside tx after a restore from an
// older copy: it appends e, of kind KindRecover, as entry after.Count+1,
// chained to after.Head, the space's newest checkpoint of this node. The
// entries between the log's last and after.Count are lost; e says so
// (Detail lost_from and lost_to, set here beside e's own counts), and the log goes on from the
// head the space holds. When after covers no more than the log (a copy
// newer than the newest checkpoint), nothing attested is lost: after must
// then be of this log, and e follows its last entry. The
// log is open again from here, to the rest of tx and the transactions
// after it; if tx does not commit, freeze it again (Freeze).
func (l *Log) AppendRecovery(ctx context.Context, tx *sql.Tx, after Checkpoint, e Entry) error {
	ctx = store.InTx(ctx)
	var seq int64
	var head []byte
	err := l.db.QueryRow(ctx, tx, qHead).Scan(&seq, &head)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read evidence head: %w", err)
	}
	e.Kind = KindRecover
	alg := l.start
	if seq > 0 {
		if alg, err = l.storedAlg(ctx, tx); err != nil {
			return err
		}
	}
	if len(after.Head) != sha256.Size {
		return fmt.Errorf("recover evidence log: a checkpoint head of %d bytes", len(after.Head))
	}
	next, prev := seq+1, head
	if after.Count <= seq {
		// Nothing the space attests is lost: the checkpoint must be of
		// this log, which goes on from its head.
		if after.Count > 0 {
			var h []byte
			if err := tx.QueryRowContext(ctx, `SELECT hash FROM evidence WHERE seq = ?`, after.Count).Scan(&h); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read evidence entry %d: %w", after.Count, err)
			}
			if !bytes.Equal(h, after.Head) {
				return fmt.Errorf("recover evidence log: it differs at entry %d from the checkpoint of it: it was rewritten, not restored from an older copy", after.Count)
			}
		}
		if prev == nil {
			prev = alg.genesis()
		}
	} else {
		detail := map[string]int{"lost_from": int(seq + 1), "lost_to": int(after.Count)}
		for k, v := range e.Detail {
			if _, ok := detail[k]; !ok {
				detail[k] = v
			}
		}
		e.Detail = detail
		next, prev = after.Count+1, after.Head
	}
	if err := l.appendAt(ctx, tx, alg, next, prev, e); err != nil {
		return err
	}
	l.frozen.Store(nil)
	return nil
}

// storedAlg is the algorithm of the stored chain, read from its entry 1
// once.
func (l *Log) storedAlg(ctx context.Context, tx *sql.Tx) (chainAlg, error) {
	if a := chainAlg(l.alg.Load()); a != 0 {
		return a, nil
	}
	var first []byte
	if err := l.db.QueryRow(ctx, tx, qFirst).Scan(&first); err != nil {
		return 0, fmt.Errorf("read evidence entry 1: %w", err)
	}
	a := genesisAlg(first)
	if a == 0 {
		return 0, errors.New("evidence entry 1 starts neither a SHA-256 nor an SM3 chain: run eduspace audit verify on the node database")
	}
	l.alg.Store(uint32(a))
	return a, nil
}

func chain(alg chainAlg, prev, body []byte) []byte {
	var s hash.Hash
	if alg == chainSM3 {
		s = crypto.SuiteSM2.NewHash()
	} else {
		s = sha256.New()
	}
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
	// Gaps are the runs of entries lost in restores, each declared by the
	// recovery entry after it.
	Gaps []Gap
	// Algorithm is the chain's hash, "SHA-256" or "SM3" ("" for an empty
	// chain).
	Algorithm string
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
// shorter. After entries lost in a restore (AppendRecovery) it is the
// head the recovery entry is chained to.
func (l *Log) HashAt(ctx context.Context, seq int64) ([]byte, error) {
	if l.db == nil {
		return nil, errors.New("read evidence entry: no database")
	}
	var h []byte
	err := l.db.R.QueryRowContext(ctx, `SELECT coalesce((SELECT hash FROM evidence WHERE seq = ?1),
		(SELECT prev_hash FROM evidence WHERE seq = ?1 + 1))`, seq).Scan(&h)
	if err == nil && h == nil {
		return nil, nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read evidence entry %d: %w", seq, err)
	}
	return h, nil
}

// qAbout is About's query: the entries of a kind by the index
// evidence_kind, in order of seq, that contain the quoted subject.
const qAbout = `SELECT entry FROM evidence WHERE kind = ? AND instr(entry, ?) > 0 ORDER BY seq`

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
// reads the entries of kind only, through the index on the kind column
// (evidence_kind); the subject is looked for in each of them.
func (l *Log) About(ctx context.Context, kind, subject string) ([]Entry, error) {
	if l.db == nil {
		return nil, errors.New("read evidence entries: no database")
	}
	rows, err := l.db.R.QueryContext(ctx, qAbout, kind, strconv.Quote(subject))
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
