package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
)

// receiptBody is the plaintext of a receipt envelope: which envelope was
// stored, with how many records, when.
type receiptBody struct {
	Envelope string `json:"envelope"`
	Records  int    `json:"records"`
	StoredMS int64  `json:"stored_ms"`
}

// queueReceipt writes a signed receipt for the envelope h to the outbox,
// inside the transaction that stored the envelope: a stored envelope always
// gets its receipt, and a receipt never precedes what it confirms.
func (n *Node) queueReceipt(ctx context.Context, tx *sql.Tx, h crypto.Header, sender *crypto.Credential, records int, now time.Time) error {
	to := sender.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("receipt: sender %s has no KEM key", h.Sender)
	}
	body, err := json.Marshal(receiptBody{Envelope: h.IDString(), Records: records, StoredMS: now.UnixMilli()})
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	_, err = n.enqueue(ctx, tx, crypto.Header{
		Recipient: h.Sender, Agreement: h.Agreement, Purpose: h.Purpose, RecordType: h.RecordType,
		Count: uint32(records), Kind: crypto.KindReceipt,
	}, to, n.layout.ReceiptSubject(h.Sender, n.cfg.NodeID), body, 0)
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	return nil
}

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
	plain, err := env.Open(n.keys.KEM)
	if err != nil {
		return h, refuse(RefuseDecrypt, err)
	}
	var rb receiptBody
	if err := json.Unmarshal(plain, &rb); err != nil || rb.Envelope == "" {
		return h, refuse(RefuseContent, errors.New("receipt body is not a receipt"))
	}
	var updated int64
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		var records int
		var receipt sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT records, receipt_ms FROM outbox WHERE envelope_id = ? AND recipient = ? AND kind = ?`,
			rb.Envelope, h.Sender, crypto.KindRecords).Scan(&records, &receipt)
		if errors.Is(err, sql.ErrNoRows) {
			return refuse(RefuseContent, fmt.Errorf("receipt for an envelope never sent to %s", h.Sender))
		}
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		if receipt.Valid {
			return nil // a redelivered receipt
		}
		if records != rb.Records {
			return refuse(RefuseContent, fmt.Errorf("receipt counts %d records, envelope held %d", rb.Records, records))
		}
		if _, err := tx.ExecContext(ctx, `UPDATE outbox SET receipt_ms = ? WHERE envelope_id = ?`, n.now().UnixMilli(), rb.Envelope); err != nil {
			return fmt.Errorf("record receipt: %w", err)
		}
		updated = 1
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindReceipt, Peer: h.Sender, Agreement: h.Agreement,
			Envelope: rb.Envelope, Count: rb.Records})
	})
	if err != nil {
		return h, err
	}
	n.m.receipts.Add(float64(updated))
	return h, nil
}
