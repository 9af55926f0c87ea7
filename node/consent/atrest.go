package consent

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// SealLedger seals under the current data key the consent records and
// erasure requests stored in clear (by a node with storage.encrypt off,
// or before it sealed them) or under a data key being retired (after a
// rotation), and replaces the consents' subjects by keyed hashes. The
// node runs it in the background at start and after a rotation; a record
// reads the same either way meanwhile. progress, when set, is told each
// page's count; it returns how many rows it sealed.
func (l *Ledger) SealLedger(ctx context.Context, progress func(int)) (int, error) {
	if l.dk == nil {
		return 0, nil
	}
	type row struct {
		id   string
		body []byte
	}
	scan := func(rows *sql.Rows) (r row, err error) { return r, rows.Scan(&r.id, &r.body) }
	id := func(r row) any { return r.id }
	consents, err := store.RewritePages(ctx, l.db, `SELECT id, body FROM consents WHERE id > ? AND `+l.dk.NotCurrentSQL("body")+` ORDER BY id LIMIT 200`, "", id, scan,
		func(tx *sql.Tx, r row) error {
			plain, err := l.dk.Open(nil, r.body, consentAAD(r.id))
			if err != nil {
				return fmt.Errorf("consent %q: %w", r.id, err)
			}
			var c policy.ConsentRecord
			if err := json.Unmarshal(plain, &c); err != nil {
				return fmt.Errorf("consent %q: %w", r.id, err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE consents SET body = ?, subject = ? WHERE id = ? AND body = ?`,
				l.dk.Seal(nil, plain, consentAAD(r.id)), l.ev.Subject(c.Subject), r.id, r.body)
			return err
		}, progress)
	if err != nil {
		return consents, fmt.Errorf("seal the consent ledger: %w", err)
	}
	erasures, err := store.RewritePages(ctx, l.db, `SELECT id, request FROM erasures WHERE id > ? AND `+l.dk.NotCurrentSQL("request")+` ORDER BY id LIMIT 200`, "", id, scan,
		func(tx *sql.Tx, r row) error {
			plain, err := l.dk.Open(nil, r.body, erasureAAD(r.id))
			if err != nil {
				return fmt.Errorf("erasure request %q: %w", r.id, err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE erasures SET request = ? WHERE id = ? AND request = ?`,
				l.dk.Seal(nil, plain, erasureAAD(r.id)), r.id, r.body)
			return err
		}, progress)
	if err != nil {
		return consents + erasures, fmt.Errorf("seal the consent ledger: %w", err)
	}
	return consents + erasures, nil
}

// UnsealedLedger counts the consent records and erasure requests
// SealLedger has yet to seal.
func (l *Ledger) UnsealedLedger(ctx context.Context) (int, error) {
	if l.dk == nil {
		return 0, nil
	}
	var k int
	if err := l.db.R.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM consents WHERE `+l.dk.NotCurrentSQL("body")+`)
		+ (SELECT count(*) FROM erasures WHERE `+l.dk.NotCurrentSQL("request")+`)`).Scan(&k); err != nil {
		return 0, fmt.Errorf("count consent records to seal: %w", err)
	}
	return k, nil
}
