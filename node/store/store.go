// Package store owns a node's SQLite database: the schema and its
// migrations, one writing connection and a pool of readers.
//
// The database runs in WAL mode with immediate transactions, so the single
// writer never meets SQLITE_BUSY on a read-then-write, and readers never
// block it. A connection of its own checkpoints the WAL in the background,
// so that no commit waits while the WAL is copied into the database.
//
// It holds the schema's history (migrate.go), while each table belongs to
// the package that reads and writes it (node/doc.go). It must never edit a
// migration that has shipped, and never write outside Write's single
// writer.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
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
	ckptErr  atomic.Pointer[func(error)] // told of a failed checkpoint

	damaged atomic.Pointer[error] // Fault: the file is damaged, for good
	failing atomic.Pointer[error] // Fault: the last write failed for want of disk
}

// OnCheckpointError makes report be told of every background checkpoint
// that fails; the checkpoint is tried again after the next commit.
func (db *DB) OnCheckpointError(report func(error)) { db.ckptErr.Store(&report) }

// Checkpoints: the background checkpointer copies the WAL into the
// database at most every checkpointEvery while commits happen; the writer
// itself checkpoints only if the WAL grows past writerCheckpointBytes,
// which the background one keeps it from.
//
// Every 500 ms rather than 100: a checkpoint is a cgo call of 1–30 ms
// (copying pages, two fsyncs) and the Go runtime hands its P to other
// goroutines only when its monitor notices, after up to 10–20 ms. With two
// cores, the sender's and the receiver's checkpoints at once leave no P to
// run Go code for up to 15 ms (an execution trace of `eduspace bench`
// shows it). Fewer checkpoints stall less often and copy pages rewritten
// in between (evidence head, outbox marks) once: in interleaved runs
// `eduspace bench` moves 114,000–156,000 records/s with checkpoints every
// 500 ms against 97,000–118,000 every 100 ms, and BenchmarkEnvelopeWrites
// uses 5–10 % less CPU per envelope. The WAL grows to about 15 MiB per
// checkpoint at full speed, far below writerCheckpointBytes.
const (
	checkpointEvery       = 500 * time.Millisecond
	writerCheckpointBytes = 64 << 20
)

// pageSize is the page size of a database Open creates: 16 KiB rather
// than SQLite's 4 KiB. A node writes envelopes and evidence entries of
// tens of KiB; with 16 KiB pages SQLite handles, logs and checkpoints a
// quarter as many pages (and overflow pages) for them, each costing system
// calls and page-cache work, although a small row updated rewrites 16 KiB:
// SQLite's CPU time per envelope is more than a quarter lower than with
// 4 KiB pages in BenchmarkEnvelopeWrites, and about a sixth lower in
// `eduspace bench`.
// 64 KiB pages rewrite too much for the small rows. A database keeps the
// page size it was created with.
const pageSize = 16384

// stmtCacheSize is how many statements each connection keeps prepared
// (the driver's _stmt_cache_size): statements given as text, such as the
// relay's read of the outbox, the readers' lookups and the writer's
// statements not declared with NewQuery, are prepared once per connection
// instead of at every call. A cached statement is reset when put back, so
// it holds no snapshot: readers see every commit.
const stmtCacheSize = 64

// writerCacheBytes is the writer connection's page cache (SQLite's
// default is 2 MiB, 128 pages of 16 KiB). The records table's key index is
// random, a SHA-256 per record: an ingest transaction touches its pages
// all over, and at a few hundred thousand records they no longer fit the
// default, so each insert would read its page back from the file.
// Readers keep the default.
const writerCacheBytes = 64 << 20

// Open opens (creating if needed) the database at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_busy_timeout", "5000")
	q.Set("_txlock", "immediate")
	q.Set("_foreign_keys", "on")
	q.Set("_stmt_cache_size", strconv.Itoa(stmtCacheSize))
	w, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := quickCheck(ctx, w, path); err != nil {
		w.Close()
		return nil, err
	}
	size, err := setPageSize(ctx, w)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("configure database: %w", err)
	}
	if _, err := w.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = %d`, -writerCacheBytes>>10)); err != nil {
		w.Close()
		return nil, fmt.Errorf("configure database: %w", err)
	}
	if _, err := w.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, writerCheckpointBytes/size)); err != nil {
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

// setPageSize gives a new database, one without tables, pages of pageSize
// bytes, and returns the database's page size. Opening the file in WAL
// mode has already written its first page, and SQLite changes the page
// size of a database only by rebuilding it (VACUUM) outside WAL mode: an
// empty one leaves WAL mode, is rebuilt and returns to it. A database with
// tables keeps its page size.
func setPageSize(ctx context.Context, w *sql.DB) (int, error) {
	var tables, size int
	if err := w.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&tables); err != nil {
		return 0, fmt.Errorf("read schema: %w", err)
	}
	if err := w.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size); err != nil {
		return 0, fmt.Errorf("read page size: %w", err)
	}
	if tables > 0 || size == pageSize {
		return size, nil
	}
	for _, s := range []string{`PRAGMA journal_mode = DELETE`, fmt.Sprintf(`PRAGMA page_size = %d`, pageSize), `VACUUM`} {
		if _, err := w.ExecContext(ctx, s); err != nil {
			return 0, fmt.Errorf("set page size: %s: %w", s, err)
		}
	}
	var mode string
	if err := w.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode); err != nil {
		return 0, fmt.Errorf("set page size: back to WAL mode: %w", err)
	}
	if mode != "wal" {
		return 0, fmt.Errorf("set page size: back to WAL mode: journal mode is %s", mode)
	}
	if err := w.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size); err != nil {
		return 0, fmt.Errorf("read page size: %w", err)
	}
	return size, nil
}

// checkpointing lets one background checkpoint at a time run in the
// process (the writer's own, past writerCheckpointBytes, is not counted:
// the background ones keep the WAL from reaching it). A
// checkpoint holds its P (see checkpointEvery) for as long as it runs,
// and two databases in one process (the demo, the bench, tests) tend to
// checkpoint at the same moment, after commits of one exchange: on two
// cores that leaves no P for Go code for up to 25 ms, the outliers of the
// bench's single-record latency. One at a time, one P stays free.
var checkpointing sync.Mutex

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
		// checkpoints by itself past writerCheckpointBytes.
		checkpointing.Lock()
		if _, err := db.ckpt.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil && ctx.Err() == nil {
			if report := db.ckptErr.Load(); report != nil {
				(*report)(err)
			}
		}
		checkpointing.Unlock()
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
// when fn returns nil. A failure that is the storage's (Fault) is noted.
func (db *DB) Write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.W.BeginTx(ctx, nil)
	if err != nil {
		db.noteFault(err)
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		db.noteFault(err)
		return errors.Join(err, rollback(tx))
	}
	if err := tx.Commit(); err != nil {
		db.noteFault(err)
		return fmt.Errorf("commit: %w", err)
	}
	db.failing.Store(nil)
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

// RewritePages reads the rows query selects, a page at a time, and
// rewrites each page in one write transaction, row by row, until a page
// comes back empty; it returns how many rows it rewrote. The query walks
// the table in the order of a unique key: its one parameter is the key of
// the last row of the page before (start for the first page), it selects
// only rows past it, in key order, and ends with its own LIMIT; key gives
// a row's key. Each row is thus read once, however large the table. It is
// how stored values are converted while the node works (sealing at rest,
// re-sealing after a data key rotation). progress, when set, is told the
// number of rows of each page once it is committed.
func RewritePages[T any](ctx context.Context, db *DB, query string, start any, key func(T) any, scan func(*sql.Rows) (T, error),
	rewrite func(*sql.Tx, T) error, progress func(int)) (int, error) {
	total := 0
	after := start
	for {
		rows, err := db.R.QueryContext(ctx, query, after)
		if err != nil {
			return total, err
		}
		var page []T
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				rows.Close()
				return total, err
			}
			page = append(page, v)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, err
		}
		if len(page) == 0 {
			return total, nil
		}
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			for _, v := range page {
				if err := rewrite(tx, v); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return total, err
		}
		total += len(page)
		after = key(page[len(page)-1])
		if progress != nil {
			progress(len(page))
		}
	}
}

// Compact rebuilds the database from its live rows (VACUUM) and then
// copies the WAL into it and empties the WAL (a TRUNCATE checkpoint), so
// that neither file keeps a value that was overwritten or deleted: what
// the freed pages and cells held, and older versions of rewritten pages.
// Writers wait while it runs (the writing connection does the rebuild);
// readers go on. The checkpoint waits up to timeout for readers of older
// snapshots to finish.
func (db *DB) Compact(ctx context.Context, timeout time.Duration) error {
	if _, err := db.W.ExecContext(ctx, `VACUUM`); err != nil {
		db.noteFault(err)
		return fmt.Errorf("compact: %w", err)
	}
	checkpointing.Lock()
	defer checkpointing.Unlock()
	deadline := time.Now().Add(timeout)
	for {
		var busy, logged, copied int
		if err := db.ckpt.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logged, &copied); err != nil {
			return fmt.Errorf("compact: checkpoint: %w", err)
		}
		if busy == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("compact: checkpoint: readers kept the WAL from being emptied for %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// QueryPlan is SQLite's plan of query with args (EXPLAIN QUERY PLAN): the
// detail of each step, in order, e.g. "SEARCH evidence USING INDEX
// evidence_kind (kind=?)". Tests hold the queries of hot paths to their
// indexes with it.
func QueryPlan(ctx context.Context, db *sql.DB, query string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, `EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return nil, err
		}
		plan = append(plan, detail)
	}
	return plan, rows.Err()
}

// Strings runs query, which selects one text column, and returns its rows.
func Strings(ctx context.Context, db *sql.DB, query string, args ...any) ([]string, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
