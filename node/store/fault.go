package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/mattn/go-sqlite3"
)

// Damaged reports whether err says the database file is damaged (SQLite's
// CORRUPT or NOTADB): permanent, until the database is restored from a
// backup.
func Damaged(err error) bool {
	var e sqlite3.Error
	return errors.As(err, &e) && (e.Code == sqlite3.ErrCorrupt || e.Code == sqlite3.ErrNotADB)
}

// Full reports whether err says the disk (or a quota) is full: it lasts
// until room is made, and nothing is lost meanwhile, as nothing that
// failed was committed.
func Full(err error) bool {
	var e sqlite3.Error
	return errors.As(err, &e) && e.Code == sqlite3.ErrFull
}

// ioFailure reports whether err is an I/O error of the disk beneath.
func ioFailure(err error) bool {
	var e sqlite3.Error
	return errors.As(err, &e) && e.Code == sqlite3.ErrIoErr
}

// Fault is the storage failure that keeps the database from taking writes,
// nil when there is none: a damaged file, from the first write that met
// the damage on (permanent); a full disk or an I/O error, until a write
// commits again.
func (db *DB) Fault() error {
	if err := db.damaged.Load(); err != nil {
		return *err
	}
	if err := db.failing.Load(); err != nil {
		return *err
	}
	return nil
}

// noteFault records err, a failed write, when it is a storage failure.
func (db *DB) noteFault(err error) {
	switch {
	case Damaged(err):
		f := fmt.Errorf("database %s is damaged (%w): restore it from a backup (deploy/README.md, Backup and restore)", db.path, err)
		db.damaged.CompareAndSwap(nil, &f)
	case Full(err):
		f := fmt.Errorf("disk full: database %s cannot grow (%w); nothing is acknowledged until there is room", db.path, err)
		db.failing.Store(&f)
	case ioFailure(err):
		f := fmt.Errorf("disk I/O error writing database %s: %w", db.path, err)
		db.failing.Store(&f)
	}
}

// quickCheck runs SQLite's quick integrity check on w: a damaged database
// is refused at start rather than met halfway through a transaction. It
// reads every page once: about a second per gigabyte.
func quickCheck(ctx context.Context, w *sql.DB, path string) error {
	rows, err := w.QueryContext(ctx, `PRAGMA quick_check`)
	if err != nil {
		return damagedAtStart(path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return damagedAtStart(path, err)
		}
		if line != "ok" && len(problems) < 3 {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return damagedAtStart(path, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("database %s is damaged (quick_check: %s): restore it from a backup (deploy/README.md, Backup and restore)",
			path, strings.Join(problems, "; "))
	}
	return nil
}

// damagedAtStart is err, met opening the database at path, with what to do
// when it says the file is damaged.
func damagedAtStart(path string, err error) error {
	if Damaged(err) {
		return fmt.Errorf("database %s is damaged (%w): restore it from a backup (deploy/README.md, Backup and restore)", path, err)
	}
	return fmt.Errorf("check database %s: %w", path, err)
}
