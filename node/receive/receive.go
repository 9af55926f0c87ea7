// Package receive owns what arrives at the node from its peers: envelopes
// of records, checked, opened and stored; the control messages addressed
// to it; the receipts that confirm stored envelopes to their senders; and
// the received records' erasure on a provider's request and expiry at the
// end of their agreement's retention; and the institution's reading of what
// it received (Holdings, Export). Its tables are inbox (one row per
// envelope stored: sender, sequence number, agreement, times), received
// (the records of each, as they arrived), seq_in (the highest sequence
// number seen per peer and kind), receipt_queue (envelopes stored, or refused
// from an authenticated sender, not yet answered for), erased (the erasure requests carried out) and
// tombstones (the subjects erased, whose records arriving late are dropped),
// recovered (the records a provider restored from an older copy sent
// after its copy, which are not stored again) and awaited_agreements (the
// agreements this node's restored copy lost, whose envelopes wait for
// them).
//
// An envelope is stored, its receipt queued and its evidence entry
// written in one transaction before its message is acknowledged, so a
// crash loses nothing and a redelivery is recognised in the inbox. The
// receiver must never store an envelope that no active agreement with its
// sender covers, never store a sequence number its sender already used,
// never store a record its sender asked to erase, in whichever order the
// two arrived, never confirm an envelope before it is stored, and never
// export a record without its evidence entry, past its retention, or under
// an agreement revoked, ended or of which it is not the recipient.
package receive

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// retentionEvery is how often Run expires received records whose
// retention has ended (and once at start).
const retentionEvery = 10 * time.Minute

// Deps is what a Receiver is built from.
type Deps struct {
	NodeID   string
	DB       *store.DB
	Evidence *evidence.Log
	// Codec checks and opens what arrives.
	Codec *envelope.Codec
	// Registry looks up the senders' credentials receipts are sealed to.
	Registry *registry.Registry
	// Outbox takes the receipts and erasure receipts this node sends.
	Outbox  *outbox.Outbox
	Std     *schema.Standard
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time
	Layout  bus.Layout
	// ClockSkew is how far the senders' clocks may be from this node's: an
	// envelope created further ahead is refused, and an agreement counts
	// as in force this far either side of its validity.
	ClockSkew time.Duration
	// Agreement returns the agreement with id as decisions see it: revoked
	// ones with Revoked set. When the node holds no active agreement with
	// that id, its error is one NoAgreement made.
	Agreement func(ctx context.Context, id string) (*policy.Agreement, error)
	// The handlers of control messages this package does not own, each
	// given the message's header and plaintext: an erasure receipt (a
	// recipient confirms an erasure this node requested), an agreement
	// message (from its sender, whose credential is given) and a message
	// of an aggregate round.
	ErasureReceipt   func(ctx context.Context, h crypto.Header, plain []byte) error
	AgreementMessage func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error
	Aggregate        func(ctx context.Context, h crypto.Header, plain []byte) error
	// Recovery handles a recovery message: a restored peer's request, or
	// a peer's answer to this node's (node/recovery).
	Recovery func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error
	// Linkage handles a linkage message: a member's evaluation request at
	// the evaluator, or the evaluator's answer (node/linkage).
	Linkage func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error
	// DataKey seals the records received at rest; nil stores them in
	// clear (storage.encrypt off). They are read either way.
	DataKey *keys.DataKey
	// Options are settings tests make (export_test.go); the zero value is
	// production's.
	Options Options
}

// Options are test seams: they hold only unexported fields, so only this
// package's tests can set them.
type Options struct {
	receiptLinger time.Duration // replaces receiptLinger when > 0
}

// NoAgreement marks err, the reason a lookup found no active agreement
// with an id, as such: an envelope under that agreement is refused, not
// retried.
func NoAgreement(err error) error { return &noAgreement{err} }

type noAgreement struct{ err error }

func (e *noAgreement) Error() string { return e.err.Error() }
func (e *noAgreement) Unwrap() error { return e.err }

// isNoAgreement reports whether err is one NoAgreement made.
func isNoAgreement(err error) bool {
	var na *noAgreement
	return errors.As(err, &na)
}

// Receiver is a node's receiving side.
type Receiver struct {
	skew      time.Duration // Deps.ClockSkew
	nodeID    string
	db        *store.DB
	ev        *evidence.Log
	codec     *envelope.Codec
	reg       *registry.Registry
	out       *outbox.Outbox
	std       *schema.Standard
	m         *metrics.Metrics
	log       *slog.Logger
	now       func() time.Time
	layout    bus.Layout
	agreement func(ctx context.Context, id string) (*policy.Agreement, error)

	erasureReceipt   func(ctx context.Context, h crypto.Header, plain []byte) error
	agreementMessage func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error
	aggregate        func(ctx context.Context, h crypto.Header, plain []byte) error
	recoveryMsg      func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error
	linkage          func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error

	inbound     chan jetstream.Msg // from the deliveries consumer to the deliveries loop
	receiptWake chan struct{}
	linger      time.Duration // receiptLinger but in tests
	// records counts records stored from peers since start, less those
	// erased or expired since.
	records atomic.Int64
	dk      *keys.DataKey
}

// New is the receiver of d.NodeID.
func New(d Deps) *Receiver {
	r := &Receiver{nodeID: d.NodeID, db: d.DB, ev: d.Evidence, codec: d.Codec, reg: d.Registry, out: d.Outbox,
		std: d.Std, m: d.Metrics, log: d.Log, now: d.Now, layout: d.Layout, agreement: d.Agreement, dk: d.DataKey,
		erasureReceipt: d.ErasureReceipt, agreementMessage: d.AgreementMessage, aggregate: d.Aggregate, recoveryMsg: d.Recovery, linkage: d.Linkage,
		inbound: make(chan jetstream.Msg, deliveryGroup), receiptWake: make(chan struct{}, 1), linger: receiptLinger,
		skew: d.ClockSkew}
	if d.Options.receiptLinger > 0 {
		r.linger = d.Options.receiptLinger
	}
	return r
}

// Run stores what Deliver hands over, confirms stored envelopes to their
// senders, and expires received records whose retention has ended (at
// start and every ten minutes), until ctx ends.
func (r *Receiver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { r.deliveries(ctx) })
	wg.Go(func() { r.receipts(ctx) })
	wg.Go(func() { r.janitor(ctx, retentionEvery) })
	wg.Wait()
}

// Deliver hands a message of the deliveries consumer to Run, waiting while
// Run is busy; when ctx ends first, the message is left unacknowledged and
// redelivered after AckWait.
func (r *Receiver) Deliver(ctx context.Context, msg jetstream.Msg) {
	select {
	case r.inbound <- msg:
	case <-ctx.Done():
	}
}

// Accept checks, opens and carries out one message's data; it returns the
// message's header (as far as it was read) and an *envelope.Refusal for a
// message to refuse, another error for a passing failure.
type Accept func(ctx context.Context, data []byte) (crypto.Header, error)

// Handle handles one message with accept: a refused envelope is recorded
// and terminated, a transient failure is retried later, an accepted
// envelope is stored and then acknowledged.
func (r *Receiver) Handle(ctx context.Context, msg jetstream.Msg, accept Accept) {
	h, err := accept(ctx, msg.Data())
	var ref *envelope.Refusal
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			// The envelope is stored; a redelivery will be seen as a duplicate.
			r.log.Warn("ack delivery", "err", err)
		}
	case errors.As(err, &ref):
		r.m.Refused.WithLabelValues(ref.Reason).Inc()
		r.log.Warn("envelope refused", "reason", ref.Reason, "sender", h.Sender, "envelope", h.IDString(), "err", ref.Err)
		if err := r.db.Write(ctx, func(tx *sql.Tx) error {
			return r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: h.Sender,
				Envelope: h.IDString(), Reason: ref.Reason})
		}); err != nil {
			r.log.Error("record refusal in evidence log; will retry", "err", err)
			r.nak(msg, retryDelay(msg, err))
			return
		}
		r.term(msg, h)
	default:
		if ctx.Err() != nil {
			return // shutting down: the message is redelivered after AckWait
		}
		r.log.Warn("delivery failed; will retry", "err", err)
		r.nak(msg, retryDelay(msg, err))
	}
}

// frozenRetry is how long a message waits for its redelivery while the
// evidence log is frozen (a database restored from an older copy, until
// its recovery), or while the agreement it comes under, lost with the
// copy, is not installed again: not the growing backoff of passing
// failures, so that what waited arrives within seconds.
const frozenRetry = 2 * time.Second

// errAwaitedAgreement marks a delivery under an agreement this node's
// restored copy lost, which waits for it to be installed again.
var errAwaitedAgreement = errors.New("awaiting the agreement")

// retryDelay is how long msg, which failed with err, waits for its
// redelivery.
func retryDelay(msg jetstream.Msg, err error) time.Duration {
	if errors.Is(err, evidence.ErrFrozen) || errors.Is(err, errAwaitedAgreement) {
		return frozenRetry
	}
	return bus.RedeliveryDelay(msg)
}

// nak asks for msg to be redelivered after delay; if the server does not
// hear it, msg is redelivered after AckWait.
func (r *Receiver) nak(msg jetstream.Msg, delay time.Duration) {
	// eds.<space>.<kind>.<recipient>.<sender>: deliver, receipt or control.
	if kind := strings.Split(msg.Subject(), "."); len(kind) == 5 && slices.Contains(metrics.Consumers, kind[2]) {
		r.m.Retried.WithLabelValues(kind[2]).Inc()
	}
	if err := msg.NakWithDelay(delay); err != nil {
		r.log.Warn("nak delivery; redelivered after AckWait", "err", err)
	}
}

// term tells the server never to redeliver msg, refused and recorded as
// such; if the server does not hear it, a redelivery is refused again.
func (r *Receiver) term(msg jetstream.Msg, h crypto.Header) {
	if err := msg.Term(); err != nil {
		r.log.Warn("terminate refused delivery; a redelivery is refused again", "envelope", h.IDString(), "err", err)
	}
}

// ack acknowledges a stored delivery; a lost ack means a redelivery seen
// as a duplicate.
func (r *Receiver) ack(msg jetstream.Msg) {
	if err := msg.Ack(); err != nil {
		r.log.Warn("ack delivery", "err", err)
	}
}

// ReceivedRecords is how many records this node has stored from peers
// since it started, less those erased or expired since.
func (r *Receiver) ReceivedRecords() int64 { return r.records.Load() }

// Records is how many received records the node holds.
func (r *Receiver) Records(ctx context.Context) (float64, error) {
	var k sql.NullInt64
	err := r.db.R.QueryRowContext(ctx, `SELECT coalesce(sum(records), 0) FROM received`).Scan(&k)
	return float64(k.Int64), err
}

// SequenceMissing is how many envelopes of records, by their senders'
// sequence numbers, have not (yet) arrived.
func (r *Receiver) SequenceMissing(ctx context.Context) (float64, error) {
	var k sql.NullInt64
	err := r.db.R.QueryRowContext(ctx, `SELECT (SELECT coalesce(sum(last), 0) FROM seq_in WHERE kind = 1) - (SELECT count(*) FROM inbox)`).Scan(&k)
	return float64(k.Int64), err
}

// ReceivedSince is how many envelopes, and records in them, the node has
// stored since t.
func (r *Receiver) ReceivedSince(ctx context.Context, t time.Time) (envelopes, records int64, err error) {
	err = r.db.R.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(records), 0) FROM inbox WHERE received_ms >= ?`, t.UnixMilli()).
		Scan(&envelopes, &records)
	return envelopes, records, err
}

// ReceivedFrom counts the envelopes received from each sender.
func (r *Receiver) ReceivedFrom(ctx context.Context) (map[string]int64, error) {
	rows, err := r.db.R.QueryContext(ctx, `SELECT sender, count(*) FROM inbox GROUP BY sender`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var v int64
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		out[id] = v
	}
	return out, rows.Err()
}

// receivedAAD binds a received body sealed at rest to its envelope.
func receivedAAD(eid string) []byte { return append([]byte("eduspace received.body\x00"), eid...) }

// erasedAAD binds a kept erasure request to its id.
func erasedAAD(id string) []byte { return append([]byte("eduspace erased.body\x00"), id...) }
