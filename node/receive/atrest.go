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
	k, err := r.reseal(ctx, "received", "envelope_id", receivedNotCurrent, receivedAAD, progress)
	if err != nil {
		return k, fmt.Errorf("seal received records: %w", err)
	}
	return k, nil
}

// reseal seals under the current data key, a page at a time, the bodies of
// table (key column key, each sealed bound to aad(key)) that notCurrent
// selects, and returns how many it sealed. Only a body still as read is
// rewritten: an erasure may have rewritten it since.
func (r *Receiver) reseal(ctx context.Context, table, key string, notCurrent func(*keys.DataKey) string, aad func(string) []byte, progress func(int)) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	type row struct {
		id   string
		body []byte
	}
	return store.RewritePages(ctx, r.db, `SELECT `+key+`, body FROM `+table+`
		WHERE `+key+` > ? AND `+notCurrent(r.dk)+` ORDER BY `+key+` LIMIT 200`, "", func(x row) any { return x.id },
		func(rows *sql.Rows) (x row, err error) { return x, rows.Scan(&x.id, &x.body) },
		func(tx *sql.Tx, x row) error {
			plain, err := r.dk.Open(nil, x.body, aad(x.id))
			if err != nil {
				return fmt.Errorf("%s %s: %w", key, x.id, err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE `+table+` SET body = ? WHERE `+key+` = ? AND body = ?`,
				r.dk.Seal(nil, plain, aad(x.id)), x.id, x.body)
			return err
		}, progress)
}

// unsealed counts the bodies of table reseal has yet to seal.
func (r *Receiver) unsealed(ctx context.Context, table string, notCurrent func(*keys.DataKey) string) (int, error) {
	if r.dk == nil {
		return 0, nil
	}
	var k int
	if err := r.db.R.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` WHERE `+notCurrent(r.dk)).Scan(&k); err != nil {
		return 0, fmt.Errorf("count %s bodies to seal: %w", table, err)
	}
	return k, nil
}

// receivedNotCurrent selects the received bodies not sealed under dk's
// current key (an empty body, every record of it erased, stays empty).
func receivedNotCurrent(dk *keys.DataKey) string {
	return "length(body) > 0 AND " + dk.NotCurrentSQL("body")
}

// UnsealedReceived counts the received bodies SealReceived has yet to
// seal.
func (r *Receiver) UnsealedReceived(ctx context.Context) (int, error) {
	return r.unsealed(ctx, "received", receivedNotCurrent)
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
	k, err := r.reseal(ctx, "erased", "request", erasedNotCurrent, erasedAAD, progress)
	if err != nil {
		return k, fmt.Errorf("seal kept erasure requests: %w", err)
	}
	return k, nil
}

// erasedNotCurrent selects the kept erasure requests not sealed under dk's
// current key.
func erasedNotCurrent(dk *keys.DataKey) string {
	return "body IS NOT NULL AND " + dk.NotCurrentSQL("body")
}

// UnsealedErased counts the kept erasure requests SealErased has yet to
// seal.
func (r *Receiver) UnsealedErased(ctx context.Context) (int, error) {
	return r.unsealed(ctx, "erased", erasedNotCurrent)
}
