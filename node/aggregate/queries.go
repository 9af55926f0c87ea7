package aggregate

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// ErrUnknownQuery is returned for a query id this center does not hold.
var ErrUnknownQuery = errors.New("unknown aggregate query")

// ErrQueryNotActive is returned when cancelling a query that has no
// rounds left to run.
var ErrQueryNotActive = errors.New("aggregate query not active")

// QueryState is a query this center submitted and where it stands.
type QueryState struct {
	ID           string     `json:"id"`
	State        string     `json:"state"` // active (rounds to come), done, cancelled
	Rounds       int        `json:"rounds"`
	Next         *time.Time `json:"next,omitempty"` // the next round, while active
	Created      time.Time  `json:"created"`
	RecordType   string     `json:"record_type"`
	Purpose      string     `json:"purpose"`
	Participants []string   `json:"participants"`
	Interval     Duration   `json:"interval,omitempty"`
	Deadline     time.Time  `json:"deadline"`
}

// Queries lists the queries this center submitted, newest first.
func (a *Aggregator) Queries(ctx context.Context) ([]QueryState, error) {
	rows, err := a.db.R.QueryContext(ctx, `SELECT id, signed, state, rounds, next_ms, created_ms FROM aggregate_queries ORDER BY created_ms DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("read aggregate queries: %w", err)
	}
	defer rows.Close()
	out := []QueryState{}
	for rows.Next() {
		qs, err := scanQuery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, qs)
	}
	return out, rows.Err()
}

// QueryByID is one query this center submitted; ErrUnknownQuery when it
// has none of that id.
func (a *Aggregator) QueryByID(ctx context.Context, id string) (QueryState, error) {
	row := a.db.R.QueryRowContext(ctx, `SELECT id, signed, state, rounds, next_ms, created_ms FROM aggregate_queries WHERE id = ?`, id)
	qs, err := scanQuery(row)
	if errors.Is(err, sql.ErrNoRows) {
		return qs, fmt.Errorf("aggregate query %q: %w", id, ErrUnknownQuery)
	}
	return qs, err
}

func scanQuery(row interface{ Scan(...any) error }) (QueryState, error) {
	var qs QueryState
	var signed []byte
	var next sql.NullInt64
	var created int64
	if err := row.Scan(&qs.ID, &signed, &qs.State, &qs.Rounds, &next, &created); err != nil {
		return qs, err
	}
	qs.Created = time.UnixMilli(created).UTC()
	if next.Valid {
		t := time.UnixMilli(next.Int64).UTC()
		qs.Next = &t
	}
	var sq SignedQuery
	var q Query
	if err := json.Unmarshal(signed, &sq); err != nil {
		return qs, fmt.Errorf("aggregate query %s: %w", qs.ID, err)
	}
	if err := json.Unmarshal(sq.Query, &q); err != nil {
		return qs, fmt.Errorf("aggregate query %s: %w", qs.ID, err)
	}
	qs.RecordType, qs.Purpose, qs.Participants = q.RecordType, string(q.Purpose), q.Participants
	qs.Interval, qs.Deadline = q.Interval, q.Deadline
	return qs, nil
}

// Cancel ends a standing query: no round starts after it (a round under
// way finishes). The cancellation is an evidence entry.
func (a *Aggregator) Cancel(ctx context.Context, id string) (QueryState, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	qs, err := a.QueryByID(ctx, id)
	if err != nil {
		return qs, err
	}
	if qs.State != "active" {
		return qs, fmt.Errorf("aggregate query %q is %s: %w", id, qs.State, ErrQueryNotActive)
	}
	var signed []byte
	err = a.db.Write(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT signed FROM aggregate_queries WHERE id = ?`, id).Scan(&signed); err != nil {
			return err
		}
		var sq SignedQuery
		if err := json.Unmarshal(signed, &sq); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE aggregate_queries SET state = 'cancelled', next_ms = NULL WHERE id = ?`, id); err != nil {
			return err
		}
		return a.ev.Append(ctx, tx, aggEntry(id, sq.Digest(), "query_cancelled"))
	})
	if err != nil {
		return qs, fmt.Errorf("cancel aggregate query %s: %w", id, err)
	}
	a.log.Info("aggregate query cancelled", "query", id)
	qs.State, qs.Next = "cancelled", nil
	return qs, nil
}

// RoundInfo is one round this center ran or runs: its state, who took
// part, what it released and what each contributor spent.
type RoundInfo struct {
	ID           string    `json:"id"`
	Query        string    `json:"query"`
	State        string    `json:"state"` // released, failed, or the step under way
	Reason       string    `json:"reason,omitempty"`
	Started      time.Time `json:"started"`
	Participants []string  `json:"participants"`
	Survivors    []string  `json:"survivors,omitempty"`
	Released     int       `json:"cells_released"`
	Suppressed   int       `json:"cells_suppressed"`
	Rho          float64   `json:"rho,omitempty"` // ρ each contributor's budget was debited
	// Declined are the participants that took no part, with their reason
	// code.
	Declined map[string]string `json:"declined,omitempty"`
}

// Rounds lists the rounds this center released (stored) and those it
// still holds in memory (under way, or failed in the last minutes),
// newest first.
func (a *Aggregator) Rounds(ctx context.Context) ([]RoundInfo, error) {
	rels, err := a.Releases(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RoundInfo, 0, len(rels))
	seen := map[string]bool{}
	for _, r := range rels {
		seen[r.ID] = true
		out = append(out, RoundInfo{ID: r.ID, Query: r.Query, State: "released", Started: r.Started, Participants: r.Participants,
			Survivors: r.Survivors, Released: r.CellsReleased, Suppressed: r.CellsSuppressed, Rho: r.Rho, Declined: r.Declined})
	}
	a.mu.Lock()
	for id, cr := range a.rounds {
		if seen[id] {
			continue
		}
		ri := RoundInfo{ID: id, Query: cr.queryID, Started: cr.started, Participants: slices.Clone(cr.q.Participants), Survivors: cr.survivors,
			State: [...]string{"commit", "shares", "masked inputs", "signatures", "unmasking", "done"}[cr.step], Declined: maps.Clone(cr.declined)}
		if cr.step == stepDone && cr.err != nil {
			ri.State, ri.Reason = "failed", cr.err.Error()
		}
		out = append(out, ri)
	}
	a.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.After(out[j].Started) })
	return out, nil
}
