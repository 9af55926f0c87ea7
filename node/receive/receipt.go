package receive

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/store"
)

// Receipts. The transaction that stores an envelope queues it in
// receipt_queue, so a stored envelope always gets its receipt and a
// receipt never precedes what it confirms; the transaction that records a
// refusal queues the refused envelope with its reason the same way, when
// the sender's signature was verified (a refusal is never sent to a
// sender the receiver could not authenticate); the receipts loop then confirms
// what is queued, one signed receipt per sender for everything stored
// within receiptLinger of the first (and one for everything refused),
// and deletes the rows in the
// transaction that writes the receipt to the outbox. What a stopped node
// had queued is confirmed when it starts again.

// receiptLinger is how long a stored envelope waits for others to share
// its receipt; receiptMax the most envelopes one receipt confirms.
const (
	receiptLinger = 50 * time.Millisecond
	receiptMax    = 512
)

// The statements of the receipt queue.
var (
	qQueueReceipt  = store.NewQuery(`INSERT INTO receipt_queue(envelope_id, sender, records, stored_ms, digest) VALUES (?, ?, ?, ?, ?)`)
	qQueueRefusal  = store.NewQuery(`INSERT OR IGNORE INTO receipt_queue(envelope_id, sender, records, stored_ms, refused, digest) VALUES (?, ?, ?, ?, ?, ?)`)
	qReceiptQueued = store.NewQuery(`DELETE FROM receipt_queue WHERE envelope_id = ?`)
)

func (r *Receiver) wakeReceipts() {
	select {
	case r.receiptWake <- struct{}{}:
	default:
	}
}

// receipts confirms queued envelopes to their senders until ctx ends: at
// start, then receiptLinger (r.linger: tests set it) after each wake.
func (r *Receiver) receipts(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		if err := r.sendReceipts(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Warn("receipts: will retry", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		select {
		case <-ctx.Done():
			return
		case <-r.receiptWake:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.linger):
		}
	}
}

// sendReceipts writes a receipt to each sender with queued envelopes (up
// to receiptMax each; more wait for the next pass) and deletes them from
// the queue, in one transaction.
func (r *Receiver) sendReceipts(ctx context.Context) error {
	rows, err := r.db.R.QueryContext(ctx, `SELECT envelope_id, sender, records, stored_ms, refused, digest FROM receipt_queue ORDER BY sender, stored_ms, envelope_id`)
	if err != nil {
		return fmt.Errorf("read receipt queue: %w", err)
	}
	// answer is what one sender is told in this pass, and the queued
	// envelope ids it answers for.
	type answer struct {
		envelope.Receipt
		ids []string
	}
	queued := map[string]*answer{}
	var senders []string
	for rows.Next() {
		var sender string
		var it envelope.ReceiptItem
		var refused sql.NullString
		var digest []byte
		if err := rows.Scan(&it.Envelope, &sender, &it.Records, &it.StoredMS, &refused, &digest); err != nil {
			rows.Close()
			return fmt.Errorf("read receipt queue: %w", err)
		}
		q := queued[sender]
		if q == nil {
			q = &answer{}
			queued[sender] = q
			senders = append(senders, sender)
		}
		if len(q.ids) >= receiptMax {
			continue
		}
		q.ids = append(q.ids, it.Envelope)
		if digest != nil {
			it.SHA256 = hex.EncodeToString(digest)
		}
		if refused.Valid {
			q.Refused = append(q.Refused, envelope.RefusedItem{Envelope: it.Envelope, Records: it.Records, Reason: refused.String, SHA256: it.SHA256})
		} else {
			q.Envelopes = append(q.Envelopes, it)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read receipt queue: %w", err)
	}
	if len(senders) == 0 {
		return nil
	}
	// Credentials before the transaction: a lookup may go to the network.
	creds := make(map[string]*crypto.Credential, len(senders))
	var lookupErr error
	for _, s := range senders {
		cred, err := r.reg.Lookup(ctx, s)
		if err != nil {
			lookupErr = errors.Join(lookupErr, fmt.Errorf("receipt to %s: %w", s, err)) // stays queued
			continue
		}
		creds[s] = cred
	}
	err = r.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		for _, s := range senders {
			cred := creds[s]
			if cred == nil {
				continue
			}
			// Confirmations and refusals go in receipts of their own: a
			// sender that predates refusals refuses a receipt holding one,
			// and must still get its confirmations.
			q := queued[s]
			for _, rc := range []*envelope.Receipt{{Envelopes: q.Envelopes}, {Refused: q.Refused}} {
				if len(rc.Envelopes)+len(rc.Refused) == 0 {
					continue
				}
				if err := r.queueReceipt(ctx, tx, s, cred, rc); err != nil {
					return err
				}
			}
			for _, id := range q.ids {
				if _, err := r.db.Exec(ctx, tx, qReceiptQueued, id); err != nil {
					return fmt.Errorf("receipt queue: %w", err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.out.Wake()
	return lookupErr
}

// queueReceipt writes one signed receipt to sender for the envelopes in
// rc to the outbox, inside tx.
func (r *Receiver) queueReceipt(ctx context.Context, tx *sql.Tx, sender string, cred *crypto.Credential, rc *envelope.Receipt) error {
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("receipt: sender %s has no KEM key", sender)
	}
	body, err := json.Marshal(rc)
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	_, err = r.out.Enqueue(ctx, tx, crypto.Header{
		Recipient: sender, Count: uint32(len(rc.Envelopes) + len(rc.Refused)), Kind: crypto.KindReceipt,
	}, to, r.layout.ReceiptSubject(sender, r.nodeID), body, 0)
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	return nil
}
