package aggregate

import (
	"context"
	"database/sql"
	"time"

	"github.com/eduspace/eduspace/policy"
)

// SetTestKnobs sets the knobs of tests (Aggregator.knobs): noNoise sends
// tables without noise; dropAfter ("commit", "shares", "masked", "signed")
// makes this node stop answering a round after that step.
func (a *Aggregator) SetTestKnobs(noNoise bool, dropAfter string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.knobs.noNoise, a.knobs.dropAfter = noNoise, dropAfter
}

// QueryState is the state of a stored query: active, done or failed.
func (a *Aggregator) QueryState(ctx context.Context, id string) (string, error) {
	var state string
	err := a.db.R.QueryRowContext(ctx, `SELECT state FROM aggregate_queries WHERE id = ?`, id).Scan(&state)
	return state, err
}

// SetDeviation makes a center break the protocol (Aggregator.knobs.deviate):
// "short_u2", "equivocate_u3", "split_u3" or "split_u3_filter"; "" follows
// it.
func (a *Aggregator) SetDeviation(d string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.knobs.deviate = d
}

// StoreLedgerBody stores body as the privacy ledger, last changed at
// updated, as a node of an earlier version would have.
func (a *Aggregator) StoreLedgerBody(ctx context.Context, body []byte, updated time.Time) error {
	return a.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO privacy_ledger(id, body, updated_ms) VALUES (1, ?, ?)
			ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms`, body, updated.UnixMilli())
		return err
	})
}

// LedgerBody is the privacy ledger as stored.
func (a *Aggregator) LedgerBody(ctx context.Context) ([]byte, error) {
	var body []byte
	err := a.db.R.QueryRowContext(ctx, `SELECT body FROM privacy_ledger WHERE id = 1`).Scan(&body)
	return body, err
}

// SetPseudonyms replaces the node's linkage (Deps.Pseudonyms) with f.
func (a *Aggregator) SetPseudonyms(f func(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, error)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pseudonyms = f
}
