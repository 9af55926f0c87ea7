package receive

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// maxEnvelopeLife is how long an envelope may be valid at all.
const (
	maxEnvelopeLife = 30 * 24 * time.Hour
)

// deliveryGroup is how many deliveries at most one transaction stores,
// and how many wait between the consumer and the deliveries loop.
const deliveryGroup = 64

// DeliveryBufferBytes is how much of the deliveries the JetStream client
// is to fetch ahead (jetstream.PullMaxBytes): at least the largest message
// a server accepts (bus.EmbeddedMaxPayload), or the consumer would stall.
// Deliveries are buffered by bytes, not messages: envelopes run to
// megabytes, so 256 of them could be a gigabyte.
const DeliveryBufferBytes = 64 << 20

// ackHold is how long the acknowledgement of the newest stored delivery
// waits for the next delivery to be stored (it is acknowledged then):
// the exchange stream is a work queue, and an ack that empties the
// server's last message block makes it delete that block's file and
// create a new one. Without the hold, a receiver keeping up empties it at every
// envelope, and a file created and one deleted per envelope costs 5–7 % of
// the bench's CPU (ext4 searching its inode bitmap past recently deleted inodes).
// Holding one ack keeps the last block in use while deliveries flow. The
// envelope is stored before its ack is held: a crash meanwhile means a
// redelivery after AckWait that the inbox recognises.
const ackHold = 100 * time.Millisecond

// deliveries takes the messages the deliveries consumer hands over
// (Deliver) and stores them in groups: whatever has arrived, up to
// deliveryGroup, is checked and opened in parallel and stored in one transaction, then
// acknowledged (the newest one's ack held back, ackHold). Under load this
// turns one commit per envelope into one per group; at light load a group
// is a single envelope and nothing waits. The next group is checked and
// opened while the last one is stored: a duplicate of an envelope still
// being stored is then found by storeOne, inside the transaction.
func (r *Receiver) deliveries(ctx context.Context) {
	in := r.inbound
	ready := make(chan []prepared, 1)
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		var held jetstream.Msg // stored, its ack held back (ackHold)
		wait := time.NewTimer(time.Hour)
		wait.Stop()
		defer func() {
			if held != nil {
				// At shutdown: unacknowledged, it is redelivered and found in the inbox.
				if err := held.Ack(); err != nil {
					r.log.Warn("ack delivery at shutdown; redelivered after AckWait", "err", err)
				}
			}
		}()
		for {
			var ps []prepared
			var ok bool
			select {
			case ps, ok = <-ready:
			case <-wait.C:
				r.ack(held)
				held = nil
				continue
			}
			if !ok {
				return
			}
			// The timer runs from when the held ack was taken aside: groups
			// that store nothing (refused, retried) do not push it back.
			if next := r.storeDeliveries(ctx, ps, held); next != held {
				held = next
				wait.Reset(ackHold)
			}
		}
	}()
	defer func() {
		close(ready)
		<-stored
	}()
	for {
		var first jetstream.Msg
		select {
		case <-ctx.Done():
			return
		case first = <-in:
		}
		group := []jetstream.Msg{first}
	more:
		for len(group) < deliveryGroup {
			select {
			case m := <-in:
				group = append(group, m)
			default:
				break more
			}
		}
		ps := r.prepareDeliveries(ctx, group)
		select {
		case ready <- ps:
		case <-ctx.Done():
			return // not acknowledged: redelivered after AckWait
		}
	}
}

// plainBuffers holds buffers for the receiver's decompressed payloads,
// which are checked and dropped (the compressed payload is what is
// stored): a 300 KB allocation per envelope otherwise.
var plainBuffers sync.Pool // of *[]byte

// prepared is one delivery checked and opened, not yet stored.
type prepared struct {
	msg  jetstream.Msg
	h    crypto.Header
	cred *crypto.Credential
	body []byte // the payload as it arrived (NDJSON or compressed): stored as is
	err  error  // nil, a *envelope.Refusal, or transient
	dup  bool   // already stored: acknowledge, store nothing
	// level is the highest level the standard gives the fields that
	// arrived, as this node computed it: what its evidence records.
	level schema.Level
	// stored is how many of its records were stored: all but those of
	// subjects erased before they arrived (tombstones).
	stored int
	// basis is the legal basis of the agreement it arrived under, which
	// its header names (or, of version 1, does not): what its evidence
	// records.
	basis string
	// digest is the envelope's SHA-256 as it arrived, which its receipt
	// names.
	digest [32]byte
}

// prepare checks, dedups and opens one delivery: everything but storing.
func (r *Receiver) prepare(ctx context.Context, p *prepared) {
	p.digest = sha256.Sum256(p.msg.Data())
	env, cred, err := r.codec.Check(ctx, p.msg.Data(), crypto.KindRecords)
	if env != nil {
		p.h = env.Header
	}
	if err != nil {
		p.err = err
		return
	}
	h := env.Header
	p.cred = cred
	// The sender chooses created and expires: bound them, so that a
	// backdated envelope cannot pass for one made while the agreement was
	// valid.
	if now := r.now(); h.Created.After(now.Add(r.skew)) || h.Expires.Sub(h.Created) > maxEnvelopeLife {
		p.err = envelope.Refuse(envelope.RefuseExpired, errors.New("created in the future or valid for too long"))
		return
	}
	var seen int
	if err := r.db.R.QueryRowContext(ctx, `SELECT count(*) FROM inbox WHERE envelope_id = ?`, h.IDString()).Scan(&seen); err != nil {
		p.err = fmt.Errorf("check inbox: %w", err)
		return
	}
	if seen > 0 {
		p.dup = true
		return
	}
	a, err := r.agreement(ctx, h.Agreement)
	if isNoAgreement(err) {
		if r.awaited(ctx, h.Sender, h.Agreement) {
			// Lost with a restored copy: it waits to be installed again.
			p.err = fmt.Errorf("agreement %s, lost with this node's restored copy, is not installed again yet (%w): %w", h.Agreement, errAwaitedAgreement, err)
			return
		}
		p.err = envelope.Refuse(envelope.RefuseNoAgreement, err)
		return
	}
	if err != nil {
		p.err = err
		return
	}
	// The agreement must be in force when the envelope arrives, not only
	// at the time its sender wrote into it (a backdated envelope), within
	// the clock skew allowed either way.
	if a.Provider != h.Sender || a.Recipient != r.nodeID || string(a.Purpose) != h.Purpose ||
		a.Revoked || !inForce(a, h.Created, r.skew) || !inForce(a, r.now(), r.skew) {
		p.err = envelope.Refuse(envelope.RefuseNoAgreement, fmt.Errorf("agreement %s does not cover this envelope", a.ID))
		return
	}
	if _, ok := a.RecordTypes[h.RecordType]; !ok {
		p.err = envelope.Refuse(envelope.RefuseNoAgreement, fmt.Errorf("record type %q not in agreement %s", h.RecordType, a.ID))
		return
	}
	// The legal basis the sender discloses on must be the agreement's. A
	// header of version 1, from a sender that names none yet, names
	// nothing to compare: the records arrive on the agreement's basis
	// (crypto/ENVELOPE.md §14).
	if named := h.LegalBasis != "" || h.Standard != ""; named && h.LegalBasis != string(a.LegalBasis) {
		p.err = envelope.Refuse(envelope.RefuseNoAgreement, fmt.Errorf("legal basis %q in the header, agreement %s's is %q", h.LegalBasis, a.ID, a.LegalBasis))
		return
	}
	p.basis = string(a.LegalBasis)
	body, err := r.codec.Open(env)
	if err != nil {
		p.err = envelope.Refuse(envelope.RefuseDecrypt, err)
		return
	}
	// The records are checked as NDJSON and stored as they arrived, so a
	// compressed payload stays compressed in the database (envelope.Codec).
	buf, _ := plainBuffers.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer plainBuffers.Put(buf)
	plain, err := envelope.RecordsPlainInto(*buf, body, envelope.RecordsLimit(h.Count))
	if err != nil {
		p.err = envelope.Refuse(envelope.RefuseContent, err)
		return
	}
	if len(body) > 0 && len(plain) > 0 && &plain[0] != &body[0] {
		*buf = plain // decompressed: keep the storage for the next envelope
	}
	// A minor is one under the age even at the latest time a sender's
	// clock may show: a sender whose clock runs ahead by up to the skew is
	// not refused on the subject's birthday.
	if p.level, err = r.codec.CheckRecords(plain, h, a, r.now().Add(r.skew)); err != nil {
		p.err = envelope.Refuse(envelope.RefuseContent, err)
		return
	}
	p.body = body
}

// prepareDeliveries checks and opens a group of deliveries, two at a time.
func (r *Receiver) prepareDeliveries(ctx context.Context, msgs []jetstream.Msg) []prepared {
	ps := make([]prepared, len(msgs))
	var wg sync.WaitGroup
	const workers = 2
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := w; i < len(ps); i += workers {
				ps[i].msg = msgs[i]
				r.prepare(ctx, &ps[i])
			}
		})
	}
	wg.Wait()
	return ps
}

// storeDeliveries stores what of a prepared group was accepted, queues its
// receipts (receipt.go) and records what was refused, in one transaction,
// then terminates or retries what it must and acknowledges what it stored
// or found stored already: held, the ack held back before, and each of the
// group but the last, which it returns to be held in turn (ackHold).
func (r *Receiver) storeDeliveries(ctx context.Context, ps []prepared, held jetstream.Msg) jetstream.Msg {
	now := r.now()
	var stored []*prepared
	var answered bool // a refusal queued for a receipt
	err := r.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		stored, answered = stored[:0], false
		for i := range ps {
			p := &ps[i]
			if p.err == nil && !p.dup {
				ok, err := r.storeOne(ctx, tx, p, now)
				if err != nil {
					return err
				}
				if ok {
					if _, err := r.db.Exec(ctx, tx, qQueueReceipt, p.h.IDString(), p.h.Sender, p.h.Count, now.UnixMilli(), p.digest[:]); err != nil {
						return fmt.Errorf("queue receipt: %w", err)
					}
					stored = append(stored, p)
					continue
				}
			}
			// Refused, when checked or by storeOne (a sequence replayed).
			var ref *envelope.Refusal
			if !errors.As(p.err, &ref) {
				continue // a duplicate, or a failure to retry
			}
			// A recovery may have committed since the check: an agreement
			// its restored copy lost now waits to be installed again.
			if ref.Reason == envelope.RefuseNoAgreement {
				awaited, err := r.awaitedTx(ctx, tx, p.h.Sender, p.h.Agreement)
				if err != nil {
					return err
				}
				if awaited {
					p.err = fmt.Errorf("agreement %s, lost with this node's restored copy, is not installed again yet (%w): %w", p.h.Agreement, errAwaitedAgreement, ref.Err)
					continue
				}
			}
			if err := r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: p.h.Sender,
				LegalBasis: p.h.LegalBasis, Standard: p.h.Standard, Envelope: p.h.IDString(), Reason: ref.Reason}); err != nil {
				return err
			}
			q, err := r.queueRefusal(ctx, tx, p, ref, now)
			if err != nil {
				return err
			}
			answered = answered || q
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return held // shutting down: redelivered after AckWait
		}
		r.log.Warn("deliveries not stored; will retry", "envelopes", len(ps), "err", err)
		for _, p := range ps {
			r.nak(p.msg, retryDelay(p.msg, err))
		}
		return held
	}
	if len(stored) > 0 || answered {
		r.wakeReceipts()
	}
	for i := range ps {
		p := &ps[i]
		var ref *envelope.Refusal
		switch {
		case errors.As(p.err, &ref):
			r.m.Refused.WithLabelValues(ref.Reason).Inc()
			r.log.Warn("envelope refused", "reason", ref.Reason, "sender", p.h.Sender, "envelope", p.h.IDString(), "err", ref.Err)
			r.term(p.msg, p.h)
		case p.err != nil:
			if ctx.Err() == nil {
				r.log.Warn("delivery failed; will retry", "err", p.err)
				r.nak(p.msg, retryDelay(p.msg, p.err))
			}
		default:
			// Stored (or a duplicate): acknowledge the one held before and
			// hold this one. A lost ack means a redelivery seen as a duplicate.
			if held != nil {
				r.ack(held)
			}
			held = p.msg
		}
	}
	for _, p := range stored {
		r.m.Received.Inc()
		r.m.Stored.Add(float64(p.stored))
		r.records.Add(int64(p.stored))
		r.m.Latency.Observe(r.now().Sub(p.h.Created).Seconds())
	}
	return held
}

// queueRefusal queues refused envelope p for a receipt to its sender, inside
// tx, when the sender's signature was verified (p.cred); queued reports
// whether it did.
func (r *Receiver) queueRefusal(ctx context.Context, tx *sql.Tx, p *prepared, ref *envelope.Refusal, now time.Time) (queued bool, err error) {
	if p.cred == nil {
		return false, nil
	}
	if _, err := r.db.Exec(ctx, tx, qQueueRefusal, p.h.IDString(), p.h.Sender, p.h.Count, now.UnixMilli(), ref.Reason, p.digest[:]); err != nil {
		return false, fmt.Errorf("queue refusal receipt: %w", err)
	}
	return true, nil
}

// The statements of storeOne.
var (
	qInboxHas        = store.NewQuery(`SELECT count(*) FROM inbox WHERE envelope_id = ?`)
	qInboxSeq        = store.NewQuery(`SELECT count(*) FROM inbox WHERE sender = ? AND seq = ?`)
	qLastIn          = store.NewQuery(`SELECT coalesce(max(last), 0) FROM seq_in WHERE peer = ? AND kind = ?`)
	qInsertInbox     = store.NewQuery(`INSERT INTO inbox(envelope_id, sender, seq, agreement, purpose, record_type, records, created_ms, received_ms, legal_basis, standard) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	qInsertReceived  = store.NewQuery(`INSERT INTO received(envelope_id, type, records, body) VALUES (?, ?, ?, ?)`)
	qTombstoned      = store.NewQuery(`SELECT count(*) FROM tombstones WHERE sender = ? AND agreement = ? AND before_ms >= ?`)
	qRecovered       = store.NewQuery(`SELECT count(*) FROM (SELECT 1 FROM recovered WHERE sender = ? AND agreement = ? LIMIT 1)`)
	qRecoveredRecord = store.NewQuery(`SELECT count(*) FROM recovered WHERE sender = ? AND agreement = ? AND digest = ?`)
	qLastInUpdate    = store.NewQuery(`INSERT INTO seq_in(peer, kind, last) VALUES (?, ?, ?)
		ON CONFLICT(peer, kind) DO UPDATE SET last = max(last, excluded.last)`)
)

// storeOne stores one prepared envelope inside tx. A sequence number the
// sender already used for another envelope turns p into a refusal
// (replayed), which the caller records, and stores nothing; ok reports
// whether it was stored.
func (r *Receiver) storeOne(ctx context.Context, tx *sql.Tx, p *prepared, now time.Time) (ok bool, err error) {
	h := p.h
	eid := h.IDString()
	var other int
	if err := r.db.QueryRow(ctx, tx, qInboxHas, eid).Scan(&other); err != nil {
		return false, fmt.Errorf("check inbox: %w", err)
	}
	if other > 0 {
		p.dup = true // twice in one group
		return false, nil
	}
	if err := r.db.QueryRow(ctx, tx, qInboxSeq, h.Sender, h.Seq).Scan(&other); err != nil {
		return false, fmt.Errorf("check sequence: %w", err)
	}
	if other > 0 {
		p.err = envelope.Refuse(envelope.RefuseReplayed, fmt.Errorf("sequence %d from %s already used", h.Seq, h.Sender))
		return false, nil
	}
	var prevLast int64
	if err := r.db.QueryRow(ctx, tx, qLastIn, h.Sender, h.Kind).Scan(&prevLast); err != nil {
		return false, fmt.Errorf("read sequence: %w", err)
	}
	if _, err := r.db.Exec(ctx, tx, qInsertInbox, eid, h.Sender, h.Seq, h.Agreement, h.Purpose, h.RecordType, h.Count,
		h.Created.UnixMilli(), now.UnixMilli(), nullable(h.LegalBasis), nullable(h.Standard)); err != nil {
		return false, fmt.Errorf("store inbox: %w", err)
	}
	body, kept, err := r.dropTombstoned(ctx, tx, p)
	if err != nil {
		return false, err
	}
	if body, kept, err = r.dropRecovered(ctx, tx, p, body, kept); err != nil {
		return false, err
	}
	p.stored = kept
	if _, err := r.db.Exec(ctx, tx, qInsertReceived, eid, h.RecordType, kept, r.dk.SealIf(body, receivedAAD(eid))); err != nil {
		return false, fmt.Errorf("store records: %w", err)
	}
	if _, err := r.db.Exec(ctx, tx, qLastInUpdate, h.Sender, h.Kind, h.Seq); err != nil {
		return false, fmt.Errorf("store sequence: %w", err)
	}
	if prevLast > 0 && h.Seq > uint64(prevLast)+1 {
		r.log.Warn("sequence gap: envelopes from this peer are missing or late", "peer", h.Sender, "after", prevLast, "got", h.Seq)
	}
	return true, r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceive, Peer: h.Sender, Agreement: h.Agreement,
		Purpose: h.Purpose, LegalBasis: p.basis, Standard: h.Standard, Envelope: eid, Count: int(h.Count), Detail: map[string]int{h.RecordType + "/" + p.level.String(): int(h.Count)}})
}

// dropTombstoned is p's body without the records of subjects its sender
// asked to erase under p's agreement before it created p (an erasure that
// arrived first leaves a tombstone: control.go), and how many records
// that leaves. What it drops gets an erasure entry of its own.
func (r *Receiver) dropTombstoned(ctx context.Context, tx *sql.Tx, p *prepared) ([]byte, int, error) {
	h := p.h
	var n int
	if err := r.db.QueryRow(ctx, tx, qTombstoned, h.Sender, h.Agreement, h.Created.UnixMilli()).Scan(&n); err != nil {
		return nil, 0, fmt.Errorf("check tombstones: %w", err)
	}
	if n == 0 {
		return p.body, int(h.Count), nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT subject FROM tombstones WHERE sender = ? AND agreement = ? AND before_ms >= ?`,
		h.Sender, h.Agreement, h.Created.UnixMilli())
	if err != nil {
		return nil, 0, fmt.Errorf("read tombstones: %w", err)
	}
	erased := map[string]bool{}
	for rows.Next() {
		var subject string
		if err := rows.Scan(&subject); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("read tombstones: %w", err)
		}
		erased[subject] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read tombstones: %w", err)
	}
	plain, err := envelope.RecordsPlain(p.body, envelope.MaxRecordsPlain)
	if err != nil {
		return nil, 0, fmt.Errorf("read records of envelope %s: %w", h.IDString(), err)
	}
	kept, k, gone := r.withoutSubjects(h.RecordType, plain, erased)
	if gone == 0 {
		return p.body, int(h.Count), nil
	}
	if err := r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: h.Sender, Agreement: h.Agreement,
		Purpose: h.Purpose, Envelope: h.IDString(), Reason: "tombstoned", Count: gone}); err != nil {
		return nil, 0, err
	}
	r.m.RecordsErased.Add(float64(gone))
	return envelope.CompressRecords(kept, uint32(k)), k, nil
}

// nullable is s, or SQL NULL for "".
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// inForce reports whether agreement a is valid at t, give or take skew.
func inForce(a *policy.Agreement, t time.Time, skew time.Duration) bool {
	return a.ValidAt(t) || a.ValidAt(t.Add(-skew)) || a.ValidAt(t.Add(skew))
}
