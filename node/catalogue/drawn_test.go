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
	plan, err := store.QueryPlan(ctx, db.R, qDrawn, "2026-12-04", `["types:student"]`)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) == 0 || !strings.Contains(plan[0], "USING PRIMARY KEY (dataset=? AND day=?)") {
		t.Errorf("drawn's plan %q, want a search of catalogue_rows by its primary key", plan)
	}
}
