// Package outbox owns what leaves the node: sealed envelopes waiting to be
// published and the record of what was published, to whom and with whose
// records. Its tables are outbox (one row per envelope and its marks:
// attempted, sent, receipt), outbox_data (the sealed envelopes), seq_out
// (the next sequence number per peer and kind) and delivered (per envelope
// of records, whose records it held, at which level and with which
// fields). The relay (Run) publishes the outbox to JetStream in order and
// marks what JetStream acknowledged; AcceptReceipt records the recipients'
// signed receipts.
//
// An envelope is written to the outbox in the transaction that decides it,
// so nothing is sent that was not decided and recorded as evidence, and
// nothing decided is lost. The outbox must never publish while the node
// fails closed, never publish a row it has not first marked attempted (a
// withdrawal drops only what cannot have left), and never mark a row sent
// before JetStream acknowledged it.
package outbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/store"
)

// Config is what an Outbox is built from.
type Config struct {
	DB       *store.DB
	Codec    *envelope.Codec
	Evidence *evidence.Log
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	Now      func() time.Time
	// JetStream publishes; MaxPayload is the server's largest message,
	// named when a publish is refused.
	JetStream  jetstream.JetStream
	MaxPayload func() int64
	// Blocked reports whether the node fails closed: nothing is published
	// while it does.
	Blocked func() bool
	// Replayed, when set, is told of a peer that refused envelopes as
	// replayed: it holds other envelopes of this node under their sequence
	// numbers, which only a database restored from an older copy explains.
	Replayed func(ctx context.Context, peer string)
	// Options are settings tests make (export_test.go); the zero value is
	// production's.
	Options Options
}

// Options are test seams: they hold only unexported fields, so only this
// package's tests can set them.
type Options struct {
	pageRead func()        // runs between the relay's read of a page and its marks
	observe  func(*Outbox) // is handed the outbox New builds
}

// Outbox is a node's outbox and relay.
type Outbox struct {
	db      *store.DB
	codec   *envelope.Codec
	ev      *evidence.Log
	m       *metrics.Metrics
	log     *slog.Logger
	now     func() time.Time
	js      jetstream.JetStream
	maxPay  func() int64
	blocked func() bool
	replay  func(ctx context.Context, peer string)
	opts    Options

	cache  envelopeCache // envelopes written to the outbox, for the relay
	wake   chan struct{}
	onDrop []func(ctx context.Context, tx *sql.Tx, eid string) error
}

// New is the outbox in c.DB.
func New(c Config) *Outbox {
	o := &Outbox{db: c.DB, codec: c.Codec, ev: c.Evidence, m: c.Metrics, log: c.Logger, now: c.Now,
		js: c.JetStream, maxPay: c.MaxPayload, blocked: c.Blocked, replay: c.Replayed, opts: c.Options, wake: make(chan struct{}, 1)}
	if o.opts.observe != nil {
		o.opts.observe(o)
	}
	return o
}

// OnDrop adds fn to what runs, inside the dropping transaction, for each
// envelope of records dropped before it left or refused by its recipient
// (AcceptReceipt): the records it held never arrived and become shareable
// again. Call it before the node starts.
func (o *Outbox) OnDrop(fn func(ctx context.Context, tx *sql.Tx, eid string) error) {
	o.onDrop = append(o.onDrop, fn)
}

// Wake makes the relay look at the outbox now rather than at its next tick.
func (o *Outbox) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// The statements of Enqueue and Add.
var (
	qTakeSeq        = store.NewQuery(`INSERT INTO seq_out(peer, kind) VALUES (?, ?) ON CONFLICT(peer, kind) DO UPDATE SET next = next RETURNING next`)
	qSetSeq         = store.NewQuery(`INSERT INTO seq_out(peer, kind, next) VALUES (?, ?, ?) ON CONFLICT(peer, kind) DO UPDATE SET next = excluded.next`)
	qInsertOutbox   = store.NewQuery(`INSERT INTO outbox(envelope_id, recipient, kind, subject, seq, records, created_ms, agreement, purpose, record_type, held, legal_basis, standard, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	qInsertEnvelope = store.NewQuery(`INSERT INTO outbox_data(id, data) VALUES (?, ?)`)
	qInsertDelivery = store.NewQuery(`INSERT INTO delivered(envelope_id, fields, items) VALUES (?, ?, ?)`)
)

// Enqueue seals plaintext to `to` under header h and writes the envelope
// to the outbox inside tx, with the next sequence number for its recipient
// and kind. It returns the envelope id. The relay publishes the row after
// the transaction commits (call Wake); if it does not commit, nothing was
// sent.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error) {
	var seq int64
	if err := o.db.QueryRow(ctx, tx, qTakeSeq, h.Recipient, h.Kind).Scan(&seq); err != nil {
		return "", fmt.Errorf("sequence: %w", err)
	}
	eid, data, err := o.codec.Seal(h, to, seq, plaintext)
	if err != nil {
		return "", err
	}
	if err := o.insert(ctx, tx, Envelope{ID: eid, Recipient: h.Recipient, Kind: h.Kind, Subject: subject, Seq: seq, Records: records}, data); err != nil {
		return "", err
	}
	if _, err := o.db.Exec(ctx, tx, qSetSeq, h.Recipient, h.Kind, seq+1); err != nil {
		return "", fmt.Errorf("sequence: %w", err)
	}
	return eid, nil
}

// Envelope is an outbox row as it is written.
type Envelope struct {
	ID        string
	Recipient string
	Kind      uint8
	Subject   string // the NATS subject it is published on
	Seq       int64
	Records   int
	// Agreement, Purpose and RecordType describe an envelope of records,
	// LegalBasis and Standard repeat what its header names.
	Agreement, Purpose, RecordType string
	LegalBasis, Standard           string
	// Held is set when every record of the envelope is one this node holds.
	Held bool
}

// NextSeq is the next sequence number the outbox would give an envelope of
// kind to peer. A caller that seals envelopes itself (Add) numbers them
// from it and sets the next one with SetNextSeq in the transaction that
// adds them; it must keep anyone else from numbering envelopes of that kind
// to that peer meanwhile.
func (o *Outbox) NextSeq(ctx context.Context, peer string, kind uint8) (int64, error) {
	var seq int64
	if err := o.db.R.QueryRowContext(ctx, `SELECT coalesce(max(next), 1) FROM seq_out WHERE peer = ? AND kind = ?`, peer, kind).Scan(&seq); err != nil {
		return 0, fmt.Errorf("sequence: %w", err)
	}
	return seq, nil
}

// SetNextSeq records next as the next sequence number of kind to peer,
// inside tx.
func (o *Outbox) SetNextSeq(ctx context.Context, tx *sql.Tx, peer string, kind uint8, next int64) error {
	if _, err := o.db.Exec(ctx, tx, qSetSeq, peer, kind, next); err != nil {
		return fmt.Errorf("sequence: %w", err)
	}
	return nil
}

// Add writes an envelope of records the caller sealed (data) to the outbox
// inside tx, with its deliveries: fields is a JSON array of the distinct
// field lists of its records, items a JSON array of [subject, level,
// index into fields] per record (the delivered table).
func (o *Outbox) Add(ctx context.Context, tx *sql.Tx, e Envelope, data []byte, fields, items string) error {
	if err := o.insert(ctx, tx, e, data); err != nil {
		return err
	}
	if _, err := o.db.Exec(ctx, tx, qInsertDelivery, e.ID, fields, items); err != nil {
		return fmt.Errorf("deliveries: %w", err)
	}
	return nil
}

// insert writes the row and its envelope, and keeps the envelope in the
// cache for the relay; the cache keeps data itself, which nobody may
// modify afterwards. Should tx roll back, the cached entry is never asked
// for and ages out.
func (o *Outbox) insert(ctx context.Context, tx *sql.Tx, e Envelope, data []byte) error {
	nullable := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	digest := sha256.Sum256(data)
	res, err := o.db.Exec(ctx, tx, qInsertOutbox, e.ID, e.Recipient, e.Kind, e.Subject, e.Seq, e.Records, o.now().UnixMilli(),
		nullable(e.Agreement), nullable(e.Purpose), nullable(e.RecordType), e.Held, nullable(e.LegalBasis), nullable(e.Standard), digest[:])
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if _, err := o.db.Exec(ctx, tx, qInsertEnvelope, id, data); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	o.cache.put(e.ID, data)
	return nil
}

// Queued lists the envelopes of records under agreement that have not
// begun to leave.
func (o *Outbox) Queued(ctx context.Context, tx *sql.Tx, agreement string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT envelope_id FROM outbox WHERE agreement = ? AND kind = ? AND attempt_ms IS NULL`,
		agreement, crypto.KindRecords)
	if err != nil {
		return nil, fmt.Errorf("queued envelopes: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("queued envelopes: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Drop removes an envelope that has not begun to leave, with its
// deliveries, inside tx, and runs the OnDrop functions for it.
func (o *Outbox) Drop(ctx context.Context, tx *sql.Tx, eid string) error {
	for _, q := range []string{
		`DELETE FROM outbox_data WHERE id IN (SELECT id FROM outbox WHERE envelope_id = ? AND attempt_ms IS NULL)`,
		`DELETE FROM outbox WHERE envelope_id = ? AND attempt_ms IS NULL`,
		`DELETE FROM delivered WHERE envelope_id = ?`} {
		if _, err := tx.ExecContext(ctx, q, eid); err != nil {
			return fmt.Errorf("drop queued envelope: %w", err)
		}
	}
	for _, fn := range o.onDrop {
		if err := fn(ctx, tx, eid); err != nil {
			return fmt.Errorf("drop queued envelope: %w", err)
		}
	}
	return nil
}

// Delivery is one record that went out (or waits to): to whom, in which
// envelope, under which agreement, with which fields, and the envelope's
// marks.
type Delivery struct {
	Envelope   string
	Recipient  string
	Agreement  string
	Purpose    string
	RecordType string
	Level      string
	Fields     []string
	Created    time.Time
	// Attempted is set once the relay began to publish the envelope: it
	// may have left. Sent and Receipt are nil until JetStream acknowledged
	// it and the recipient confirmed it; Refused is the reason the
	// recipient's receipt gave for refusing it ("" unless refused: then
	// Receipt stays nil, the records never arrived).
	Attempted     bool
	Sent, Receipt *time.Time
	Refused       string
	// Held is set when every record of the envelope is one this node holds.
	Held bool
}

// Deliveries lists the deliveries of the subject whose evidence hash is
// subject, in the order they were sealed; with purpose set, only those
// under that purpose. q is a transaction or nil for the read pool.
func (o *Outbox) Deliveries(ctx context.Context, tx *sql.Tx, subject, purpose string) ([]Delivery, error) {
	query := `SELECT o.envelope_id, o.recipient, coalesce(o.agreement, ''), coalesce(o.purpose, ''), coalesce(o.record_type, ''),
			d.level, d.fields, o.created_ms, o.attempt_ms IS NOT NULL, o.sent_ms, o.receipt_ms, o.held, coalesce(o.refused, '')
		FROM deliveries d JOIN outbox o ON o.envelope_id = d.envelope_id
		WHERE d.subject = ? AND (? = '' OR o.purpose = ?) ORDER BY o.created_ms, o.envelope_id`
	var rows *sql.Rows
	var err error
	if tx != nil {
		rows, err = tx.QueryContext(ctx, query, subject, purpose, purpose)
	} else {
		rows, err = o.db.R.QueryContext(ctx, query, subject, purpose, purpose)
	}
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		var fields string
		var created int64
		var sent, receipt sql.NullInt64
		if err := rows.Scan(&d.Envelope, &d.Recipient, &d.Agreement, &d.Purpose, &d.RecordType, &d.Level, &fields,
			&created, &d.Attempted, &sent, &receipt, &d.Held, &d.Refused); err != nil {
			return nil, fmt.Errorf("read deliveries: %w", err)
		}
		d.Fields = strings.Split(fields, ",")
		d.Created = time.UnixMilli(created).UTC()
		d.Sent, d.Receipt = msTime(sent), msTime(receipt)
		if d.Refused != "" {
			d.Receipt = nil
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func msTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// Volume calls fn with the subject (evidence hash) and level of every
// record sent or queued to recipient since since.
func (o *Outbox) Volume(ctx context.Context, recipient string, since time.Time, fn func(subject, level string)) error {
	rows, err := o.db.R.QueryContext(ctx, `SELECT d.subject, d.level FROM deliveries d JOIN outbox o ON o.envelope_id = d.envelope_id
		WHERE o.recipient = ? AND o.created_ms >= ?`, recipient, since.UnixMilli())
	if err != nil {
		return fmt.Errorf("read volume: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var subj, lvl string
		if err := rows.Scan(&subj, &lvl); err != nil {
			return fmt.Errorf("read volume: %w", err)
		}
		fn(subj, lvl)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read volume: %w", err)
	}
	return nil
}

// The statements of AcceptReceipt.
var (
	qReceiptRead = store.NewQuery(`SELECT records, receipt_ms, digest FROM outbox WHERE envelope_id = ? AND recipient = ? AND kind = ?`)
	qReceiptMark = store.NewQuery(`UPDATE outbox SET receipt_ms = ? WHERE envelope_id = ?`)
	qRefusedMark = store.NewQuery(`UPDATE outbox SET receipt_ms = ?, refused = ? WHERE envelope_id = ?`)
)

// AcceptReceipt checks and records a receipt from a peer for envelopes of
// records this node sent to it: a message of the receipt consumer. An
// envelope the peer refused is answered for as well as one it stored: it
// awaits no receipt any more, its records may be shared again (OnDrop),
// and the outbox row, the evidence log and
// eduspace_envelopes_refused_by_peer_total say why it never arrived.
func (o *Outbox) AcceptReceipt(ctx context.Context, data []byte) (crypto.Header, error) {
	env, _, err := o.codec.Check(ctx, data, crypto.KindReceipt)
	if env == nil {
		return crypto.Header{}, err
	}
	h := env.Header
	if err != nil {
		return h, err
	}
	plain, err := o.codec.Open(env)
	if err != nil {
		return h, envelope.Refuse(envelope.RefuseDecrypt, err)
	}
	rb, err := envelope.ParseReceipt(plain, h)
	if err != nil {
		return h, envelope.Refuse(envelope.RefuseContent, err)
	}
	var updated int64
	var refused map[string]int
	err = o.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		updated, refused = 0, map[string]int{}
		read, err := o.db.Stmt(ctx, tx, qReceiptRead)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		mark, err := o.db.Stmt(ctx, tx, qReceiptMark)
		if err != nil {
			return fmt.Errorf("record receipt: %w", err)
		}
		// awaiting reads the row of envelope eid that this node sent to
		// the receipt's sender: whether it still awaits its answer, which
		// must count the n records it held and, when it names one, the
		// envelope's SHA-256.
		awaiting := func(eid string, n int, sum string) (bool, error) {
			var records int
			var receipt sql.NullInt64
			var digest []byte
			err := read.QueryRowContext(ctx, eid, h.Sender, crypto.KindRecords).Scan(&records, &receipt, &digest)
			if errors.Is(err, sql.ErrNoRows) {
				return false, envelope.Refuse(envelope.RefuseContent, fmt.Errorf("receipt for an envelope never sent to %s", h.Sender))
			}
			if err != nil {
				return false, fmt.Errorf("read outbox: %w", err)
			}
			if receipt.Valid {
				return false, nil // answered before: a redelivered receipt, or a replay refused
			}
			if records != n {
				return false, envelope.Refuse(envelope.RefuseContent, fmt.Errorf("receipt counts %d records, envelope held %d", n, records))
			}
			if sum != "" && digest != nil && sum != hex.EncodeToString(digest) {
				return false, envelope.Refuse(envelope.RefuseContent, fmt.Errorf("receipt names envelope %s with another SHA-256 than was sent", eid))
			}
			return true, nil
		}
		for _, it := range rb.Envelopes {
			if ok, err := awaiting(it.Envelope, it.Records, it.SHA256); !ok {
				if err != nil {
					return err
				}
				continue
			}
			if _, err := mark.ExecContext(ctx, o.now().UnixMilli(), it.Envelope); err != nil {
				return fmt.Errorf("record receipt: %w", err)
			}
			updated++
			if err := o.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: h.Sender,
				Envelope: it.Envelope, Count: it.Records, Digest: it.SHA256}); err != nil {
				return err
			}
		}
		for _, it := range rb.Refused {
			if ok, err := awaiting(it.Envelope, it.Records, it.SHA256); !ok {
				if err != nil {
					return err
				}
				continue
			}
			if _, err := o.db.Exec(ctx, tx, qRefusedMark, o.now().UnixMilli(), it.Reason, it.Envelope); err != nil {
				return fmt.Errorf("record refusal: %w", err)
			}
			refused[it.Reason]++
			for _, fn := range o.onDrop {
				if err := fn(ctx, tx, it.Envelope); err != nil {
					return fmt.Errorf("record refusal: %w", err)
				}
			}
			if err := o.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: h.Sender,
				Envelope: it.Envelope, Count: it.Records, Reason: it.Reason, Digest: it.SHA256}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return h, err
	}
	o.m.Receipts.Add(float64(updated))
	for reason, n := range refused {
		o.m.RefusedByPeer.WithLabelValues(reason).Add(float64(n))
		o.log.Warn("peer refused envelopes; their records never arrived", "peer", h.Sender, "reason", reason, "envelopes", n)
	}
	if refused[envelope.RefuseReplayed] > 0 && o.replay != nil {
		o.replay(ctx, h.Sender)
	}
	return h, nil
}

// count runs a query returning one number.
func (o *Outbox) count(ctx context.Context, query string, args ...any) (float64, error) {
	var k sql.NullInt64
	if err := o.db.R.QueryRowContext(ctx, query, args...).Scan(&k); err != nil {
		return 0, err
	}
	return float64(k.Int64), nil
}

// Depth is how many envelopes are sealed and not yet acknowledged by
// JetStream.
func (o *Outbox) Depth(ctx context.Context) (float64, error) {
	return o.count(ctx, `SELECT count(*) FROM outbox WHERE sent_ms IS NULL`)
}

// AwaitingReceipt is how many envelopes of records were sent and not yet
// confirmed by their recipient.
func (o *Outbox) AwaitingReceipt(ctx context.Context) (float64, error) {
	return o.count(ctx, `SELECT count(*) FROM outbox WHERE kind = 1 AND sent_ms IS NOT NULL AND receipt_ms IS NULL`)
}

// Sent sums up the envelopes of records sealed since since.
type Sent struct {
	Envelopes, Records, Acked, Confirmed, Pending int64
}

// SentSince sums up the envelopes of records sealed since since.
func (o *Outbox) SentSince(ctx context.Context, since time.Time) (Sent, error) {
	var s Sent
	err := o.db.R.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(records), 0),
			count(sent_ms), count(receipt_ms), count(*) - count(sent_ms)
			FROM outbox WHERE kind = 1 AND created_ms >= ?`, since.UnixMilli()).
		Scan(&s.Envelopes, &s.Records, &s.Acked, &s.Confirmed, &s.Pending)
	if err != nil {
		return Sent{}, fmt.Errorf("envelopes sent: %w", err)
	}
	return s, nil
}

// SentTo counts the envelopes of records sealed to each recipient.
func (o *Outbox) SentTo(ctx context.Context) (map[string]int64, error) {
	rows, err := o.db.R.QueryContext(ctx, `SELECT recipient, count(*) FROM outbox WHERE kind = 1 GROUP BY recipient`)
	if err != nil {
		return nil, fmt.Errorf("envelopes per recipient: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var r string
		var k int64
		if err := rows.Scan(&r, &k); err != nil {
			return nil, fmt.Errorf("envelopes per recipient: %w", err)
		}
		out[r] = k
	}
	return out, rows.Err()
}
