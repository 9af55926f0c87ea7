package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// receiptBody is the plaintext of a receipt envelope: the envelopes of
// records that were stored, with how many records each, and when.
type receiptBody struct {
	Envelopes []receiptItem `json:"envelopes"`
}

type receiptItem struct {
	Envelope string `json:"envelope"`
	Records  int    `json:"records"`
	StoredMS int64  `json:"stored_ms"`
}

// queueReceipt writes one signed receipt to sender for the envelopes in
// items to the outbox, inside the transaction that stored them: a stored
// envelope always gets its receipt, and a receipt never precedes what it
// confirms.
func (n *Node) queueReceipt(ctx context.Context, tx *sql.Tx, sender string, cred *crypto.Credential, items []receiptItem) error {
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("receipt: sender %s has no KEM key", sender)
	}
	body, err := json.Marshal(receiptBody{Envelopes: items})
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	_, err = n.enqueue(ctx, tx, crypto.Header{
		Recipient: sender, Count: uint32(len(items)), Kind: crypto.KindReceipt,
	}, to, n.layout.ReceiptSubject(sender, n.cfg.NodeID), body, 0)
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	return nil
}

// The statements of acceptReceipt.
var (
	qReceiptRead = store.NewQuery(`SELECT records, receipt_ms FROM outbox WHERE envelope_id = ? AND recipient = ? AND kind = ?`)
	qReceiptMark = store.NewQuery(`UPDATE outbox SET receipt_ms = ? WHERE envelope_id = ?`)
)

// acceptReceipt checks and records a receipt from a peer for an envelope
// this node sent to it.
func (n *Node) acceptReceipt(ctx context.Context, data []byte) (crypto.Header, error) {
	env, _, err := n.check(ctx, data, crypto.KindReceipt)
	if env == nil {
		return crypto.Header{}, err
	}
	h := env.Header
	if err != nil {
		return h, err
	}
	plain, err := n.openEnvelope(env)
	if err != nil {
		return h, refuse(RefuseDecrypt, err)
	}
	var rb receiptBody
	if err := json.Unmarshal(plain, &rb); err != nil || len(rb.Envelopes) == 0 || len(rb.Envelopes) != int(h.Count) {
		return h, refuse(RefuseContent, errors.New("receipt body is not a receipt"))
	}
	var updated int64
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		updated = 0
		read, err := n.db.Stmt(ctx, tx, qReceiptRead)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		mark, err := n.db.Stmt(ctx, tx, qReceiptMark)
		if err != nil {
			return fmt.Errorf("record receipt: %w", err)
		}
		for _, it := range rb.Envelopes {
			var records int
			var receipt sql.NullInt64
			err := read.QueryRowContext(ctx, it.Envelope, h.Sender, crypto.KindRecords).Scan(&records, &receipt)
			if errors.Is(err, sql.ErrNoRows) {
				return refuse(RefuseContent, fmt.Errorf("receipt for an envelope never sent to %s", h.Sender))
			}
			if err != nil {
				return fmt.Errorf("read outbox: %w", err)
			}
			if receipt.Valid {
				continue // a redelivered receipt
			}
			if records != it.Records {
				return refuse(RefuseContent, fmt.Errorf("receipt counts %d records, envelope held %d", it.Records, records))
			}
			if _, err := mark.ExecContext(ctx, n.now().UnixMilli(), it.Envelope); err != nil {
				return fmt.Errorf("record receipt: %w", err)
			}
			updated++
			if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: h.Sender,
				Envelope: it.Envelope, Count: it.Records}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return h, err
	}
	n.m.receipts.Add(float64(updated))
	return h, nil
}
