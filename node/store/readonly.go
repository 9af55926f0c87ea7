package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// OpenReadOnly opens an existing node database at path for reading only, as
// an auditor does: no migration, no writes, no file created. It fails if
// path does not exist (the error wraps fs.ErrNotExist) or is not an SQLite
// database.
func OpenReadOnly(path string) (*sql.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open database read-only: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open database read-only: %s is not a file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Set("_busy_timeout", "5000")
	// Escape what a file: URI would take for its query or fragment.
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	db, err := sql.Open("sqlite3", "file:"+p+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database read-only: %w", err)
	}
	db.SetMaxOpenConns(2)
	var version int
	if err := db.QueryRowContext(context.Background(), `PRAGMA user_version`).Scan(&version); err != nil {
		return nil, errors.Join(fmt.Errorf("open database read-only: %s: %w", path, err), db.Close())
	}
	if version == 0 || version > len(migrations) {
		return nil, errors.Join(fmt.Errorf("open database read-only: %s: schema version %d, this binary knows 1..%d", path, version, len(migrations)), db.Close())
	}
	return db, nil
}
