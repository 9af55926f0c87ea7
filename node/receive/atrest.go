package receive

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eduspace/eduspace/node/keys"
)

// SealReceived seals, a page at a time, the received bodies stored in
// clear (by a node with storage.encrypt off, or before it sealed them).
// The node runs it at start, in the background; a body is read the same
// either way meanwhile. It returns how many bodies it sealed.
func (r *Receiver) SealReceived(ctx context.Context) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	total := 0
	for {
		type row struct {
			eid  string
			body []byte
		}
		var page []row
		rows, err := r.db.R.QueryContext(ctx, `SELECT envelope_id, body FROM received
			WHERE length(body) > 0 AND substr(body, 1, 2) != x'EDA7' LIMIT 200`)
		if err != nil {
			return total, fmt.Errorf("seal received records: %w", err)
		}
		for rows.Next() {
			var x row
			if err := rows.Scan(&x.eid, &x.body); err != nil {
				rows.Close()
				return total, fmt.Errorf("seal received records: %w", err)
			}
			page = append(page, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("seal received records: %w", err)
		}
		if len(page) == 0 {
			return total, nil
		}
		if err := r.db.Write(ctx, func(tx *sql.Tx) error {
			for _, x := range page {
				// Only a body still in clear: an erasure may have rewritten
				// it since it was read.
				if _, err := tx.ExecContext(ctx, `UPDATE received SET body = ? WHERE envelope_id = ? AND body = ?`,
					r.dk.Seal(nil, x.body, receivedAAD(x.eid)), x.eid, x.body); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return total, fmt.Errorf("seal received records: %w", err)
		}
		total += len(page)
	}
}

// OpenBody is a received body as the received table stores it for the
// envelope eid, opened with the node's data key when it is sealed: for
// tools and tests that read a node's database directly.
func OpenBody(dk *keys.DataKey, eid string, body []byte) ([]byte, error) {
	return dk.Open(nil, body, receivedAAD(eid))
}
