package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// A Query is a statement of the hot paths: the writer prepares it once,
// when the database opens, and every transaction reuses it. Preparing a
// statement costs as much as running a small insert, and a group commit
// runs hundreds of them.
type Query struct{ sql string }

var (
	queriesMu sync.Mutex
	queries   []*Query
)

// NewQuery declares a writer statement. Declare queries in package-level
// variables, so that they exist before any database opens; a query
// declared later still works, prepared anew in each transaction.
func NewQuery(sql string) *Query {
	q := &Query{sql: sql}
	queriesMu.Lock()
	queries = append(queries, q)
	queriesMu.Unlock()
	return q
}

// prepare prepares every declared query on the writer.
func (db *DB) prepare(ctx context.Context) error {
	queriesMu.Lock()
	qs := append([]*Query(nil), queries...)
	queriesMu.Unlock()
	db.stmts = make(map[*Query]*sql.Stmt, len(qs))
	for _, q := range qs {
		s, err := db.W.PrepareContext(ctx, q.sql)
		if err != nil {
			db.closeStmts()
			return fmt.Errorf("prepare %q: %w", q.sql, err)
		}
		db.stmts[q] = s
	}
	return nil
}

func (db *DB) closeStmts() {
	for _, s := range db.stmts {
		s.Close()
	}
	db.stmts = nil
}

// Stmt returns q for use in tx, a transaction of Write. The statement is
// closed with the transaction; the prepared one stays for the next. On a
// nil DB (tx from elsewhere) q is prepared for tx alone.
func (db *DB) Stmt(ctx context.Context, tx *sql.Tx, q *Query) (*sql.Stmt, error) {
	if db != nil {
		if s := db.stmts[q]; s != nil {
			return tx.StmtContext(ctx, s), nil
		}
	}
	s, err := tx.PrepareContext(ctx, q.sql)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return s, nil
}

// InTx returns the context for the statements of a transaction of Write:
// ctx without its cancellation. The SQLite driver runs each statement
// under a cancellable context in a goroutine of its own, to interrupt it;
// a transaction's statements are short, and a cancelled ctx still ends the
// transaction, which Write began under it.
func InTx(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// Exec runs q in tx with args.
func (db *DB) Exec(ctx context.Context, tx *sql.Tx, q *Query, args ...any) (sql.Result, error) {
	st, err := db.Stmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// Row is the result of QueryRow.
type Row struct {
	row *sql.Row
	err error // preparing the statement failed
}

// Scan is sql.Row's Scan; it reports a failure to prepare the query too.
func (r Row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.row.Scan(dest...)
}

// QueryRow runs q in tx with args, for at most one row.
func (db *DB) QueryRow(ctx context.Context, tx *sql.Tx, q *Query, args ...any) Row {
	st, err := db.Stmt(ctx, tx, q)
	if err != nil {
		return Row{err: err}
	}
	return Row{row: st.QueryRowContext(ctx, args...)}
}
