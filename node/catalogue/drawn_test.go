package catalogue

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node/store"
)

// TestDrawnUsesKey: the day's stored counts of the offers are found by
// catalogue_rows' primary key, not by a scan of every day's draws, which
// grow by a row per set of record types a day and are never deleted.
func TestDrawnUsesKey(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.R.QueryContext(ctx, `EXPLAIN QUERY PLAN `+qDrawn, "2026-12-04", `["types:student"]`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(plan) == 0 || !strings.Contains(plan[0], "USING PRIMARY KEY (dataset=? AND day=?)") {
		t.Errorf("drawn's plan %q, want a search of catalogue_rows by its primary key", plan)
	}
}
