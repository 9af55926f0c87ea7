// Package store owns a node's SQLite database: the schema and its
// migrations, one writing connection and a pool of readers.
//
// The database runs in WAL mode with immediate transactions, so the single
// writer never meets SQLITE_BUSY on a read-then-write, and readers never
// block it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// DB is an open node database.
type DB struct {
	// W is the one writing connection; use Write for transactions.
	W *sql.DB
	// R is a pool of read-only connections.
	R    *sql.DB
	path string
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_busy_timeout", "5000")
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	w, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	// Checkpoint the WAL into the database every 16 MiB rather than 4 MiB:
	// envelopes are large rows, and each checkpoint syncs to disk.
	if _, err := w.ExecContext(ctx, `PRAGMA wal_autocheckpoint = 4096`); err != nil {
		w.Close()
		return nil, fmt.Errorf("configure database: %w", err)
	}
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, err
	}
	q.Set("mode", "ro")
	q.Del("_txlock")
	r, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open database readers: %w", err)
	}
	r.SetMaxOpenConns(4)
	return &DB{W: w, R: r, path: path}, nil
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close closes readers and the writer.
func (db *DB) Close() error {
	return errors.Join(db.R.Close(), db.W.Close())
}

// Write runs fn in one immediate transaction on the writer and commits it
// when fn returns nil.
func (db *DB) Write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.W.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}
