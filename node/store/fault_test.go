package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedDatabaseRefused: a database whose pages were overwritten does
// not open; the error says it is damaged and what to do. A file that is no
// database at all says the same.
func TestDamagedDatabaseRefused(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		damage func(f *os.File, size int64) error
	}{
		{"pages overwritten", func(f *os.File, size int64) error {
			junk := []byte(strings.Repeat("\xa5", int(size/2)))
			_, err := f.WriteAt(junk, size/4)
			return err
		}},
		{"header overwritten", func(f *os.File, _ int64) error {
			_, err := f.WriteAt([]byte("not a database at all"), 0)
			return err
		}},
	} {
		path := filepath.Join(t.TempDir(), "node.db")
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			for i := range 200 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO evidence(seq, entry, prev_hash, hash) VALUES (?, ?, x'00', x'00')`,
					i+1, strings.Repeat("e", 1000)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		if err := c.damage(f, fi.Size()); err != nil {
			t.Fatal(err)
		}
		f.Close()
		db, err = Open(ctx, path)
		if err == nil {
			db.Close()
			t.Errorf("%s: a damaged database opened", c.name)
			continue
		}
		if !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), "restore it from a backup") {
			t.Errorf("%s: %v; want it called damaged, with what to do", c.name, err)
		}
	}
}

// TestFullDiskIsAFault: a write that finds no room fails, rolls back and
// leaves Fault set; once there is room again the next write commits and
// clears it. (SQLite's max_page_count stands in for a full disk: it fails
// the write with the same SQLITE_FULL.)
func TestFullDiskIsAFault(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pages int
	if err := db.W.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.W.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	big := func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO evidence(seq, entry, prev_hash, hash) VALUES (1, ?, x'00', x'00')`,
			strings.Repeat("e", 200_000))
		return err
	}
	err = db.Write(ctx, big)
	if !Full(err) {
		t.Fatalf("write into a full database: %v; want SQLITE_FULL", err)
	}
	if f := db.Fault(); f == nil || !strings.Contains(f.Error(), "disk full") {
		t.Fatalf("Fault after a full disk: %v", f)
	}
	var n int
	if err := db.R.QueryRowContext(ctx, `SELECT count(*) FROM evidence`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("evidence rows after the failed write: %d, %v; want 0", n, err)
	}
	if _, err := db.W.ExecContext(ctx, `PRAGMA max_page_count = 1000000`); err != nil {
		t.Fatal(err)
	}
	if err := db.Write(ctx, big); err != nil {
		t.Fatalf("write with room again: %v", err)
	}
	if f := db.Fault(); f != nil {
		t.Errorf("Fault after a write committed: %v", f)
	}
}
