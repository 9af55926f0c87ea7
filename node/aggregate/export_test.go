package aggregate

import "context"

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
