package receive

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/store"
)

// SealReceived seals, a page at a time, the received bodies stored in
// clear (by a node with storage.encrypt off, or before it sealed them).
// The node runs it at start, in the background; a body is read the same
// either way meanwhile. It returns how many bodies it sealed.
func (r *Receiver) SealReceived(ctx context.Context) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	type row struct {
		eid  string
		body []byte
	}
	k, err := store.RewritePages(ctx, r.db, `SELECT envelope_id, body FROM received
		WHERE length(body) > 0 AND substr(body, 1, 2) != x'EDA7' LIMIT 200`,
		func(rows *sql.Rows) (x row, err error) { return x, rows.Scan(&x.eid, &x.body) },
		func(tx *sql.Tx, x row) error {
			// Only a body still in clear: an erasure may have rewritten it
			// since it was read.
			_, err := tx.ExecContext(ctx, `UPDATE received SET body = ? WHERE envelope_id = ? AND body = ?`,
				r.dk.Seal(nil, x.body, receivedAAD(x.eid)), x.eid, x.body)
			return err
		})
	if err != nil {
		return k, fmt.Errorf("seal received records: %w", err)
	}
	return k, nil
}

// OpenBody is a received body as the received table stores it for the
// envelope eid, opened with the node's data key when it is sealed: for
// tools and tests that read a node's database directly.
func OpenBody(dk *keys.DataKey, eid string, body []byte) ([]byte, error) {
	return dk.Open(nil, body, receivedAAD(eid))
}
