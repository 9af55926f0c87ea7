package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Backup writes a consistent copy of the database at path to out, while a
// node may be writing it: SQLite's VACUUM INTO, on a read-only connection
// of its own, copies one snapshot (the WAL's committed transactions
// included) and never blocks the writer. out must not exist. The copy is
// compacted, in rollback-journal mode; a node that opens it returns it to
// WAL mode.
func Backup(ctx context.Context, path, out string) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("backup: %s exists: choose a new file", out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("backup: database %w", err)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", path, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, out); err != nil {
		os.Remove(out)
		if Damaged(err) {
			return fmt.Errorf("backup: database %s is damaged (%w): keep the backups you have", path, err)
		}
		return fmt.Errorf("backup of %s: %w", path, err)
	}
	return nil
}
