package node

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/store"
)

// enqueue seals plaintext to `to` under header h and writes the envelope to
// the outbox inside tx, with the next per-peer sequence number. It returns
// the envelope id. The relay publishes the row after the transaction
// commits; if it does not commit, nothing was sent.
func (n *Node) enqueue(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error) {
	var seq int64
	err := tx.QueryRowContext(ctx, `INSERT INTO pair_seq(peer, kind) VALUES (?, ?) ON CONFLICT(peer, kind) DO UPDATE SET next_out = next_out
		RETURNING next_out`, h.Recipient, h.Kind).Scan(&seq)
	if err != nil {
		return "", fmt.Errorf("sequence: %w", err)
	}
	eid, data, err := n.codec.Seal(h, to, seq, plaintext)
	if err != nil {
		return "", err
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO outbox(envelope_id, recipient, kind, subject, seq, records, created_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, eid, h.Recipient, h.Kind, subject, seq, records, n.now().UnixMilli())
	if err == nil {
		err = n.insertEnvelope(ctx, tx, res, eid, data)
	}
	if err != nil {
		return "", fmt.Errorf("outbox: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE pair_seq SET next_out = next_out + 1 WHERE peer = ? AND kind = ?`, h.Recipient, h.Kind); err != nil {
		return "", fmt.Errorf("sequence: %w", err)
	}
	return eid, nil
}

var qInsertEnvelope = store.NewQuery(`INSERT INTO outbox_data(id, data) VALUES (?, ?)`)

// insertEnvelope stores data, envelope eid, as the envelope of the outbox
// row res inserted, and keeps it in the node's envelope cache for the
// relay; the cache keeps data itself, which nobody may modify afterwards.
// Should tx roll back, the cached entry is never asked for and ages out.
func (n *Node) insertEnvelope(ctx context.Context, tx *sql.Tx, res sql.Result, eid string, data []byte) error {
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	if _, err := n.db.Exec(ctx, tx, qInsertEnvelope, id, data); err != nil {
		return err
	}
	n.envs.put(eid, data)
	return nil
}
