package receive

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/store"
)

// SealReceived seals under the current data key, a page at a time, the
// received bodies stored in clear (by a node with storage.encrypt off, or
// before it sealed them) or under a data key being retired (after a
// rotation). The node runs it in the background at start and after a
// rotation; a body is read the same either way meanwhile. progress, when
// set, is told each page's count; it returns how many bodies it sealed.
func (r *Receiver) SealReceived(ctx context.Context, progress func(int)) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	type row struct {
		eid  string
		body []byte
	}
	k, err := store.RewritePages(ctx, r.db, `SELECT envelope_id, body FROM received
		WHERE envelope_id > ? AND `+receivedNotCurrent(r.dk)+` ORDER BY envelope_id LIMIT 200`, "", func(x row) any { return x.eid },
		func(rows *sql.Rows) (x row, err error) { return x, rows.Scan(&x.eid, &x.body) },
		func(tx *sql.Tx, x row) error {
			plain, err := r.dk.Open(nil, x.body, receivedAAD(x.eid))
			if err != nil {
				return fmt.Errorf("envelope %s: %w", x.eid, err)
			}
			// Only the body as read: an erasure may have rewritten it
			// since.
			_, err = tx.ExecContext(ctx, `UPDATE received SET body = ? WHERE envelope_id = ? AND body = ?`,
				r.dk.Seal(nil, plain, receivedAAD(x.eid)), x.eid, x.body)
			return err
		}, progress)
	if err != nil {
		return k, fmt.Errorf("seal received records: %w", err)
	}
	return k, nil
}

// receivedNotCurrent selects the received bodies not sealed under dk's
// current key (an empty body, every record of it erased, stays empty).
func receivedNotCurrent(dk *keys.DataKey) string {
	return fmt.Sprintf("length(body) > 0 AND substr(body, 1, 6) != x'%X'", dk.SealedPrefix())
}

// UnsealedReceived counts the received bodies SealReceived has yet to
// seal.
func (r *Receiver) UnsealedReceived(ctx context.Context) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	var k int
	if err := r.db.R.QueryRowContext(ctx, `SELECT count(*) FROM received WHERE `+receivedNotCurrent(r.dk)).Scan(&k); err != nil {
		return 0, fmt.Errorf("count received records to seal: %w", err)
	}
	return k, nil
}

// OpenBody is a received body as the received table stores it for the
// envelope eid, opened with the node's data key when it is sealed: for
// tools and tests that read a node's database directly.
func OpenBody(dk *keys.DataKey, eid string, body []byte) ([]byte, error) {
	return dk.Open(nil, body, receivedAAD(eid))
}

// SealErased seals under the current data key, as SealReceived does, the
// erasure requests kept for restored providers (erased.body) that are in
// clear or under a key being retired.
func (r *Receiver) SealErased(ctx context.Context, progress func(int)) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	type row struct {
		id   string
		body []byte
	}
	k, err := store.RewritePages(ctx, r.db, `SELECT request, body FROM erased
		WHERE request > ? AND `+erasedNotCurrent(r.dk)+` ORDER BY request LIMIT 200`, "", func(x row) any { return x.id },
		func(rows *sql.Rows) (x row, err error) { return x, rows.Scan(&x.id, &x.body) },
		func(tx *sql.Tx, x row) error {
			plain, err := r.dk.Open(nil, x.body, erasedAAD(x.id))
			if err != nil {
				return fmt.Errorf("erasure request %s: %w", x.id, err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE erased SET body = ? WHERE request = ? AND body = ?`,
				r.dk.Seal(nil, plain, erasedAAD(x.id)), x.id, x.body)
			return err
		}, progress)
	if err != nil {
		return k, fmt.Errorf("seal kept erasure requests: %w", err)
	}
	return k, nil
}

// erasedNotCurrent selects the kept erasure requests not sealed under dk's
// current key.
func erasedNotCurrent(dk *keys.DataKey) string {
	return fmt.Sprintf("body IS NOT NULL AND substr(body, 1, 6) != x'%X'", dk.SealedPrefix())
}

// UnsealedErased counts the kept erasure requests SealErased has yet to
// seal.
func (r *Receiver) UnsealedErased(ctx context.Context) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	var k int
	if err := r.db.R.QueryRowContext(ctx, `SELECT count(*) FROM erased WHERE `+erasedNotCurrent(r.dk)).Scan(&k); err != nil {
		return 0, fmt.Errorf("count kept erasure requests to seal: %w", err)
	}
	return k, nil
}
