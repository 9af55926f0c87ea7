package consent

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// SealLedger seals the consent records and erasure requests stored in
// clear (by a node with storage.encrypt off, or before it sealed them),
// and replaces the consents' subjects by keyed hashes. The node runs it at
// start, in the background; a record reads the same either way meanwhile.
// It returns how many rows it sealed.
func (l *Ledger) SealLedger(ctx context.Context) (int, error) {
	if l.dk == nil {
		return 0, nil
	}
	type row struct {
		id   string
		body []byte
	}
	scan := func(rows *sql.Rows) (r row, err error) { return r, rows.Scan(&r.id, &r.body) }
	consents, err := store.RewritePages(ctx, l.db, `SELECT id, body FROM consents WHERE substr(body, 1, 2) != x'EDA7' LIMIT 200`, scan,
		func(tx *sql.Tx, r row) error {
			var c policy.ConsentRecord
			if err := json.Unmarshal(r.body, &c); err != nil {
				return fmt.Errorf("consent %q: %w", r.id, err)
			}
			_, err := tx.ExecContext(ctx, `UPDATE consents SET body = ?, subject = ? WHERE id = ? AND body = ?`,
				l.dk.Seal(nil, r.body, consentAAD(r.id)), l.ev.Subject(c.Subject), r.id, r.body)
			return err
		})
	if err != nil {
		return consents, fmt.Errorf("seal the consent ledger: %w", err)
	}
	erasures, err := store.RewritePages(ctx, l.db, `SELECT id, request FROM erasures WHERE substr(request, 1, 2) != x'EDA7' LIMIT 200`, scan,
		func(tx *sql.Tx, r row) error {
			_, err := tx.ExecContext(ctx, `UPDATE erasures SET request = ? WHERE id = ? AND request = ?`,
				l.dk.Seal(nil, r.body, erasureAAD(r.id)), r.id, r.body)
			return err
		})
	if err != nil {
		return consents + erasures, fmt.Errorf("seal the consent ledger: %w", err)
	}
	return consents + erasures, nil
}
