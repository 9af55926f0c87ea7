package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
)

// TestPageSize: a database Open creates has pages of pageSize bytes; one
// created before, with SQLite's default pages, keeps them. Either way the
// database is in WAL mode, the writer's own checkpoints start at the same
// WAL size in bytes, an envelope larger than a page goes in and comes back
// out, and the page size survives reopening.
func TestPageSize(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		existing bool // the file was created and migrated by a binary with 4 KiB pages
		wantSize int
	}{
		{"new", false, pageSize},
		{"existing", true, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			if tt.existing {
				old, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_txlock=immediate")
				if err != nil {
					t.Fatal(err)
				}
				if err := migrate(ctx, old); err != nil {
					t.Fatal(err)
				}
				if err := old.Close(); err != nil {
					t.Fatal(err)
				}
			}
			envelope := bytes.Repeat([]byte("0123456789abcdef"), 72<<10/16)
			for round := range 2 {
				db, err := Open(ctx, path)
				if err != nil {
					t.Fatalf("open (round %d): %v", round, err)
				}
				for _, c := range []struct {
					name string
					db   *sql.DB
				}{{"writer", db.W}, {"reader", db.R}} {
					var size int
					var mode string
					if err := c.db.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&size); err != nil {
						t.Fatal(err)
					}
					if err := c.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
						t.Fatal(err)
					}
					if size != tt.wantSize || mode != "wal" {
						t.Errorf("round %d, %s: page size %d, journal mode %s; want %d, wal", round, c.name, size, mode, tt.wantSize)
					}
				}
				var pages int
				if err := db.W.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
					t.Fatal(err)
				}
				if got, want := pages*tt.wantSize, writerCheckpointBytes; got != want {
					t.Errorf("round %d: writer checkpoints at %d pages of %d bytes = %d bytes, want %d", round, pages, tt.wantSize, got, want)
				}
				id := int64(round + 1)
				if err := db.Write(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO outbox_data(id, data) VALUES (?, ?)`, id, envelope)
					return err
				}); err != nil {
					t.Fatal(err)
				}
				for i := int64(1); i <= id; i++ {
					var got []byte
					if err := db.R.QueryRowContext(ctx, `SELECT data FROM outbox_data WHERE id = ?`, i).Scan(&got); err != nil {
						t.Fatalf("round %d, read envelope %d: %v", round, i, err)
					}
					if !bytes.Equal(got, envelope) {
						t.Errorf("round %d, envelope %d: read %d bytes, want the %d written", round, i, len(got), len(envelope))
					}
				}
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestReadersSeeCommits: the readers' statements are prepared once per
// connection and reused (stmtCacheSize); a reused statement still reads
// the latest commit, and one left unfinished by a caller that read only
// its first row holds no old snapshot either.
func TestReadersSeeCommits(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 1; i <= 20; i++ {
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO erased(request, done_ms) VALUES (?, ?)`, i, i)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.R.QueryRowContext(ctx, `SELECT count(*) FROM erased`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		var last int
		// QueryRow reads one row of several and closes the statement.
		if err := db.R.QueryRowContext(ctx, `SELECT done_ms FROM erased ORDER BY done_ms DESC`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if n != i || last != i {
			t.Fatalf("after commit %d: readers see %d rows, the last %d", i, n, last)
		}
	}
}

// TestRewritePages: every row the query selects is rewritten once, a page
// at a time in key order, rows it does not select are left alone, progress
// is told each page, and a rewrite that fails rolls its page back while
// the pages before it stay.
func TestRewritePages(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.W.ExecContext(ctx, `CREATE TABLE pages_test (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const n = 1234
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		for i := 1; i <= n; i++ {
			v := "old"
			if i%10 == 0 {
				v = "other" // not selected
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO pages_test(id, v) VALUES (?, ?)`, i, v); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const query = `SELECT id FROM pages_test WHERE id > ? AND v = 'old' ORDER BY id LIMIT 100`
	scan := func(rows *sql.Rows) (id int64, err error) { return id, rows.Scan(&id) }
	key := func(id int64) any { return id }
	seen := map[int64]int{}
	fail := errors.New("stop")
	// Stopped in its fourth page: three pages stay rewritten.
	k, err := RewritePages(ctx, db, query, int64(0), key, scan, func(tx *sql.Tx, id int64) error {
		if len(seen) == 300 {
			return fail
		}
		seen[id]++
		_, err := tx.ExecContext(ctx, `UPDATE pages_test SET v = 'new' WHERE id = ?`, id)
		return err
	}, nil)
	var rewritten int
	db.R.QueryRowContext(ctx, `SELECT count(*) FROM pages_test WHERE v = 'new'`).Scan(&rewritten)
	if !errors.Is(err, fail) || k != 300 || rewritten != 300 {
		t.Fatalf("a rewrite stopped in its fourth page: %d rewritten, %d in the table, %v; want 300, 300 and the error", k, rewritten, err)
	}
	pages := 0
	k, err = RewritePages(ctx, db, query, int64(0), key, scan, func(tx *sql.Tx, id int64) error {
		seen[id]++
		_, err := tx.ExecContext(ctx, `UPDATE pages_test SET v = 'new' WHERE id = ?`, id)
		return err
	}, func(int) { pages++ })
	want := n - n/10
	if err != nil || k != want-300 || pages != (want-300+99)/100 {
		t.Fatalf("the rest: %d rows in %d pages, %v; want %d rows", k, pages, err, want-300)
	}
	for id, c := range seen {
		if c != 1 || id%10 == 0 {
			t.Fatalf("row %d rewritten %d times", id, c)
		}
	}
	if len(seen) != want {
		t.Errorf("%d rows rewritten, want %d", len(seen), want)
	}
}
