package consent

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

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
	total := 0
	for _, t := range []struct {
		query string
		seal  func(tx *sql.Tx, id string, body []byte) error
	}{
		{`SELECT id, body FROM consents WHERE substr(body, 1, 2) != x'EDA7' LIMIT 200`, func(tx *sql.Tx, id string, body []byte) error {
			var c policy.ConsentRecord
			if err := json.Unmarshal(body, &c); err != nil {
				return fmt.Errorf("consent %q: %w", id, err)
			}
			_, err := tx.ExecContext(ctx, `UPDATE consents SET body = ?, subject = ? WHERE id = ? AND body = ?`,
				l.dk.Seal(nil, body, consentAAD(id)), l.ev.Subject(c.Subject), id, body)
			return err
		}},
		{`SELECT id, request FROM erasures WHERE substr(request, 1, 2) != x'EDA7' LIMIT 200`, func(tx *sql.Tx, id string, body []byte) error {
			_, err := tx.ExecContext(ctx, `UPDATE erasures SET request = ? WHERE id = ? AND request = ?`,
				l.dk.Seal(nil, body, erasureAAD(id)), id, body)
			return err
		}},
	} {
		for {
			type row struct {
				id   string
				body []byte
			}
			var page []row
			rows, err := l.db.R.QueryContext(ctx, t.query)
			if err != nil {
				return total, fmt.Errorf("seal the consent ledger: %w", err)
			}
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.id, &r.body); err != nil {
					rows.Close()
					return total, fmt.Errorf("seal the consent ledger: %w", err)
				}
				page = append(page, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return total, fmt.Errorf("seal the consent ledger: %w", err)
			}
			if len(page) == 0 {
				break
			}
			if err := l.db.Write(ctx, func(tx *sql.Tx) error {
				for _, r := range page {
					if err := t.seal(tx, r.id, r.body); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return total, fmt.Errorf("seal the consent ledger: %w", err)
			}
			total += len(page)
		}
	}
	return total, nil
}
