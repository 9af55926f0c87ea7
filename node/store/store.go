// Package store owns a node's SQLite database: the schema and its
// migrations, one writing connection and a pool of readers.
//
// The database runs in WAL mode with immediate transactions, so the single
// writer never meets SQLITE_BUSY on a read-then-write, and readers never
// block it. A connection of its own checkpoints the WAL in the background,
// so that no commit waits while the WAL is copied into the database.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// DB is an open node database.
type DB struct {
	// W is the one writing connection; use Write for transactions.
	W *sql.DB
	// R is a pool of read-only connections.
	R     *sql.DB
	path  string
	stmts map[*Query]*sql.Stmt // prepared on W at Open; read-only after

	ckpt     *sql.DB       // the checkpointing connection
	ckptWake chan struct{} // a commit happened
	ckptStop context.CancelFunc
	ckptDone sync.WaitGroup
}

// Checkpoints: the background checkpointer copies the WAL into the
// database at most every checkpointEvery while commits happen; the writer
// itself checkpoints only if the WAL grows past writerCheckpointPages
// pages of 4 KiB (64 MiB), which the background one keeps it from.
const (
	checkpointEvery       = 100 * time.Millisecond
	writerCheckpointPages = 16384
)

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
	if _, err := w.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, writerCheckpointPages)); err != nil {
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
	q.Del("mode")
	c, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open database checkpointer: %w", err), r.Close(), w.Close())
	}
	c.SetMaxOpenConns(1)
	db := &DB{W: w, R: r, path: path, ckpt: c, ckptWake: make(chan struct{}, 1)}
	if err := db.prepare(ctx); err != nil {
		return nil, errors.Join(err, c.Close(), r.Close(), w.Close())
	}
	cctx, stop := context.WithCancel(context.Background())
	db.ckptStop = stop
	db.ckptDone.Go(func() { db.checkpointer(cctx) })
	return db, nil
}

// checkpointer copies committed WAL frames into the database after
// commits, at most every checkpointEvery, without blocking the writer or
// the readers (a passive checkpoint), and once more when the database
// closes.
func (db *DB) checkpointer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-db.ckptWake:
		}
		// A failed checkpoint is retried after the next commit; the writer
		// checkpoints by itself past writerCheckpointPages.
		db.ckpt.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
		select {
		case <-ctx.Done():
			return
		case <-time.After(checkpointEvery):
		}
	}
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close stops the checkpointer and closes readers and the writer.
func (db *DB) Close() error {
	db.ckptStop()
	db.ckptDone.Wait()
	db.closeStmts()
	return errors.Join(db.ckpt.Close(), db.R.Close(), db.W.Close())
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
	select {
	case db.ckptWake <- struct{}{}:
	default:
	}
	return nil
}

func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}
