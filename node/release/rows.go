package release

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
)

// querier is a database or a transaction: what queryAll reads through.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryAll runs query with args on db (or inside a transaction) and returns what scan makes of each
// row, in the query's order. scan reads its row through read, which
// scans the row's columns into dest; an error of the query or of read
// says what was being read ("read releases: …"), an error scan returns
// of its own (decoding a stored body) comes back as scan wrote it.
func queryAll[T any](ctx context.Context, db querier, what, query string, args []any,
	scan func(read func(dest ...any) error) (T, error)) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	read := func(dest ...any) error {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	var out []T
	for rows.Next() {
		v, err := scan(read)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// queryJSON is queryAll of a query that selects one column of JSON, each
// row decoded into a T; a row that does not decode is an error prefixed
// with decoding.
func queryJSON[T any](ctx context.Context, db *sql.DB, what, decoding, query string) ([]T, error) {
	return queryAll(ctx, db, what, query, nil, func(read func(...any) error) (T, error) {
		var body string
		var v T
		if err := read(&body); err != nil {
			return v, err
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return v, fmt.Errorf("%s: %w", decoding, err)
		}
		return v, nil
	})
}
