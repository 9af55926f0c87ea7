package receive_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/store"
)

// TestRetentionForgetsAwaitedAgreements: a retention pass deletes the
// agreements a restored copy awaited whose wait has ended, and keeps those
// still awaited.
func TestRetentionForgetsAwaitedAgreements(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	cfg := s.Config("uni-b")
	n := s.Open(cfg)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, w := range []struct {
		agreement string
		until     time.Time
	}{{"ended-a", now.Add(-time.Hour)}, {"ended-b", now.Add(-time.Minute)}, {"waiting", now.Add(time.Hour)}} {
		if _, err := db.W.ExecContext(ctx, `INSERT INTO awaited_agreements(peer, agreement, until_ms) VALUES ('uni-a', ?, ?)`,
			w.agreement, w.until.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	n = s.Open(cfg)
	if err := n.ExpireRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if k := nodetest.Count(t, cfg, `SELECT count(*) FROM awaited_agreements`); k != 1 {
		t.Errorf("%d awaited agreements after a retention pass, want 1", k)
	}
	if k := nodetest.Count(t, cfg, `SELECT count(*) FROM awaited_agreements WHERE agreement = 'waiting'`); k != 1 {
		t.Error("the agreement still awaited was deleted")
	}
}

// TestForgetRecoveredUsesIndex: the janitor's deletion of the hashes kept
// after a peer's restore finds them by recovered_added, not by reading the
// whole table.
func TestForgetRecoveredUsesIndex(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plan, err := store.QueryPlan(ctx, db.R, receive.QForgetRecovered, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || !strings.Contains(plan[0], "USING COVERING INDEX recovered_added (added_ms<?)") && !strings.Contains(plan[0], "USING INDEX recovered_added (added_ms<?)") {
		t.Errorf("plan %q, want a search of recovered by the index recovered_added", plan)
	}
}
