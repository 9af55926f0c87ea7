package release

import (
	"context"
	"database/sql"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node/store"
)

// TestQueryAll: queryAll and queryJSON return the rows in the query's
// order; a failing query or scan says what was read, a row that does
// not decode says what was decoded, and no rows is no error.
func TestQueryAll(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE rows_test (n INTEGER, body TEXT);
			INSERT INTO rows_test VALUES (2, '{"a":"two"}'), (1, '{"a":"one"}'), (3, 'not json')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	type row struct {
		N int
		A string
	}
	scan := func(read func(...any) error) (row, error) {
		var r row
		return r, read(&r.N)
	}
	got, err := queryAll(ctx, db.R, "read rows", `SELECT n FROM rows_test WHERE n < ? ORDER BY n`, []any{3}, scan)
	if err != nil || !reflect.DeepEqual(got, []row{{N: 1}, {N: 2}}) {
		t.Errorf("queryAll: %v %v, want rows 1 and 2", got, err)
	}
	if got, err := queryAll(ctx, db.R, "read rows", `SELECT n FROM rows_test WHERE n > 9`, nil, scan); err != nil || got != nil {
		t.Errorf("no rows: %v %v, want none and no error", got, err)
	}
	if _, err := queryAll(ctx, db.R, "read rows", `SELECT n FROM no_such_table`, nil, scan); err == nil || !strings.HasPrefix(err.Error(), "read rows: ") {
		t.Errorf("a failing query: %v, want an error saying read rows", err)
	}
	if _, err := queryAll(ctx, db.R, "read rows", `SELECT n, body FROM rows_test`, nil, scan); err == nil || !strings.HasPrefix(err.Error(), "read rows: ") {
		t.Errorf("a failing scan: %v, want an error saying read rows", err)
	}
	decoded, err := queryJSON[row](ctx, db.R, "read bodies", "decode body", `SELECT body FROM rows_test WHERE n < 3 ORDER BY n`)
	if err != nil || !reflect.DeepEqual(decoded, []row{{A: "one"}, {A: "two"}}) {
		t.Errorf("queryJSON: %v %v, want one and two", decoded, err)
	}
	if _, err := queryJSON[row](ctx, db.R, "read bodies", "decode body", `SELECT body FROM rows_test`); err == nil || !strings.HasPrefix(err.Error(), "decode body: ") {
		t.Errorf("a row that does not decode: %v, want an error saying decode body", err)
	}
}
