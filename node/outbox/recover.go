package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// MaxAsk bounds how many awaited envelopes a recovery asks one peer
// about; those beyond stay awaiting their receipts, as before.
const MaxAsk = 20_000

// Awaiting is what a node restored from an older copy asks a peer about
// (node/recovery): the ids of its envelopes of records to the peer that
// await an answer (at most MaxAsk), and Known, the highest sequence
// number it gave one the peer did not refuse: a copy that sent before it
// was found out holds envelopes refused as replayed, whose numbers the
// peer had seen under others.
type Awaiting struct {
	IDs   []string
	Known int64
}

// AwaitingFrom reads what this node awaits from peer (Awaiting).
func (o *Outbox) AwaitingFrom(ctx context.Context, peer string) (Awaiting, error) {
	var a Awaiting
	var known sql.NullInt64
	err := o.db.R.QueryRowContext(ctx, `SELECT max(seq) FROM outbox WHERE recipient = ? AND kind = ? AND refused IS NULL`,
		peer, crypto.KindRecords).Scan(&known)
	if err != nil {
		return Awaiting{}, fmt.Errorf("read outbox: %w", err)
	}
	a.Known = known.Int64
	a.IDs, err = store.Strings(ctx, o.db.R, `SELECT envelope_id FROM outbox
		WHERE recipient = ? AND kind = ? AND receipt_ms IS NULL AND refused IS NULL ORDER BY seq LIMIT ?`, peer, crypto.KindRecords, MaxAsk)
	if err != nil {
		return Awaiting{}, fmt.Errorf("read outbox: %w", err)
	}
	return a, nil
}

// Settled is what Recovered made of a peer's answer.
type Settled struct {
	// Confirmed are the envelopes the peer holds, marked as answered.
	Confirmed int `json:"confirmed"`
	// Resent are the envelopes asked about that it does not hold,
	// published again: it stores each once, or refuses it with a receipt
	// that says why.
	Resent int `json:"resent"`
	// Replayed are the envelopes asked about that it does not hold under
	// sequence numbers it holds others under (sent by a copy before it was
	// found out): answered as refused, their records shareable again.
	Replayed int `json:"replayed"`
}

// Recovered applies inside tx what peer answered a recovery request: the
// highest sequence number of records it stored from this node (last) and,
// of the envelopes asked about (asked), the ones it holds (held).
// Sequence numbers go on past last; the envelopes it holds are marked
// answered, with a receipt entry (reason recovered); those it does not
// hold under numbers up to last are answered as refused (replayed: it
// holds others under them), their records shareable again; the rest are
// published again by the relay (their attempt mark stays: they may have
// left). The caller has reopened the evidence log in tx.
func (o *Outbox) Recovered(ctx context.Context, tx *sql.Tx, peer string, last int64, asked, held []string) (Settled, error) {
	var s Settled
	if _, err := tx.ExecContext(ctx, `INSERT INTO seq_out(peer, kind, next) VALUES (?, ?, ?)
		ON CONFLICT(peer, kind) DO UPDATE SET next = max(next, excluded.next)`, peer, crypto.KindRecords, last+1); err != nil {
		return s, fmt.Errorf("sequence: %w", err)
	}
	holds := make(map[string]bool, len(held))
	for _, id := range held {
		holds[id] = true
	}
	now := o.now().UnixMilli()
	for _, eid := range asked {
		var records int
		var seq int64
		err := tx.QueryRowContext(ctx, `SELECT records, seq FROM outbox WHERE envelope_id = ? AND recipient = ? AND kind = ?
			AND receipt_ms IS NULL AND refused IS NULL`, eid, peer, crypto.KindRecords).Scan(&records, &seq)
		if errors.Is(err, sql.ErrNoRows) {
			continue // answered meanwhile
		}
		if err != nil {
			return s, fmt.Errorf("read outbox: %w", err)
		}
		if holds[eid] {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET attempt_ms = coalesce(attempt_ms, ?1), sent_ms = coalesce(sent_ms, ?1),
				receipt_ms = ?1 WHERE envelope_id = ?2`, now, eid); err != nil {
				return s, fmt.Errorf("record receipt: %w", err)
			}
			if err := o.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: peer, Envelope: eid,
				Count: records, Reason: "recovered"}); err != nil {
				return s, err
			}
			s.Confirmed++
			continue
		}
		if seq <= last {
			// The peer holds another envelope under its number: it would
			// refuse it as replayed. Answered so here, its records shareable
			// again under a number of their own.
			if _, err := o.db.Exec(ctx, tx, qRefusedMark, now, envelope.RefuseReplayed, eid); err != nil {
				return s, fmt.Errorf("record refusal: %w", err)
			}
			for _, fn := range o.onDrop {
				if err := fn(ctx, tx, eid); err != nil {
					return s, fmt.Errorf("record refusal: %w", err)
				}
			}
			if err := o.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: peer, Envelope: eid,
				Count: records, Reason: envelope.RefuseReplayed}); err != nil {
				return s, err
			}
			s.Replayed++
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET sent_ms = NULL WHERE envelope_id = ?`, eid); err != nil {
			return s, fmt.Errorf("resend: %w", err)
		}
		s.Resent++
	}
	return s, nil
}

// Republished counts what Republish published again to a restored peer.
type Republished struct {
	Envelopes int `json:"envelopes"`
	// Expired are envelopes past their expiry, which the peer would refuse:
	// what they carried is lost to it.
	Expired int `json:"expired"`
}

// Republish publishes again to peer, restored from an older copy of its
// database, what this node sent it that the copy cannot hold: envelopes
// of records with sequence numbers above seqIn (the highest the copy
// holds), every erasure request not yet expired (one created before the
// copy may have arrived after it; the peer carries out each once), and the
// agreement messages created since. The peer recognises what it holds
// already by envelope id. The message
// ids carry tag, so that JetStream does not take them for the first
// publications. Envelopes past their expiry are counted, not sent.
func (o *Outbox) Republish(ctx context.Context, peer string, seqIn int64, since time.Time, tag string) (Republished, error) {
	var out Republished
	rows, err := o.db.R.QueryContext(ctx, `SELECT o.envelope_id, o.subject, d.data FROM outbox o JOIN outbox_data d ON d.id = o.id
		WHERE o.recipient = ?1 AND o.sent_ms IS NOT NULL AND o.refused IS NULL
			AND ((o.kind = ?2 AND o.seq > ?3) OR o.kind = ?4 OR (o.kind = ?5 AND o.created_ms >= ?6))
		ORDER BY o.id`, peer, crypto.KindRecords, seqIn, crypto.KindErasureRequest, crypto.KindAgreement, since.UnixMilli())
	if err != nil {
		return out, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	now := o.now()
	for rows.Next() {
		var eid, subject string
		var data []byte
		if err := rows.Scan(&eid, &subject, &data); err != nil {
			return out, fmt.Errorf("read outbox: %w", err)
		}
		env, err := crypto.ParseEnvelope(data)
		if err != nil {
			return out, fmt.Errorf("envelope %s in the outbox: %w", eid, err)
		}
		if !now.Before(env.Header.Expires) {
			out.Expired++
			continue
		}
		if _, err := o.js.Publish(ctx, subject, data, jetstream.WithMsgID(eid+"."+tag)); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return out, err
			}
			return out, fmt.Errorf("publish envelope %s again: %w", eid, err)
		}
		out.Envelopes++
	}
	return out, rows.Err()
}

// SendNow seals plaintext to `to` under h and publishes it at once, even
// while the node fails closed, keeping the envelope in the outbox as
// sent. Only a restored node's recovery requests go this way: they are
// how it stops failing closed, and they carry no record.
func (o *Outbox) SendNow(ctx context.Context, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte) (string, error) {
	if h.Kind != crypto.KindRecovery {
		return "", fmt.Errorf("send now: envelopes of kind %d go through the relay", h.Kind)
	}
	var eid string
	var data []byte
	err := o.db.Write(ctx, func(tx *sql.Tx) error {
		var err error
		if eid, err = o.Enqueue(ctx, tx, h, to, subject, plaintext, 0); err != nil {
			return err
		}
		now := o.now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET attempt_ms = ?1, sent_ms = ?1 WHERE envelope_id = ?2`, now, eid); err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
		return tx.QueryRowContext(ctx, `SELECT d.data FROM outbox o JOIN outbox_data d ON d.id = o.id WHERE o.envelope_id = ?`, eid).Scan(&data)
	})
	if err != nil {
		return "", err
	}
	if _, err := o.js.Publish(ctx, subject, data, jetstream.WithMsgID(eid)); err != nil {
		return "", fmt.Errorf("publish recovery request: %w", err)
	}
	return eid, nil
}

// Peers are the nodes this node has sealed envelopes to.
func (o *Outbox) Peers(ctx context.Context) ([]string, error) {
	return store.Strings(ctx, o.db.R, `SELECT DISTINCT peer FROM seq_out ORDER BY peer`)
}
