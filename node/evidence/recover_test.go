package evidence_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/evidence"
)

// TestAppendRecovery: a log restored from an older copy is frozen until it
// is reopened after the space's newest checkpoint; the entries between are
// a declared gap that verifies only where a checkpoint vouches for the head
// the log goes on from.
func TestAppendRecovery(t *testing.T) {
	ctx := context.Background()
	db := chain(t, 10)
	at := func(n int64) evidence.Checkpoint { return evidence.Checkpoint{Count: n, Head: headAt(t, db, n)} }
	cp4, cp8, cp10 := at(4), at(8), at(10)
	// The restore: the copy ends at entry 6.
	if _, err := db.W.Exec(`DELETE FROM evidence WHERE seq > 6`); err != nil {
		t.Fatal(err)
	}
	log := evidence.New("uni-a", []byte("0123456789abcdef0123456789abcdef"), time.Now).UseDB(db)
	log.Freeze("database restored from an older copy")
	err := db.Write(ctx, func(tx *sql.Tx) error { return log.Append(ctx, tx, evidence.Entry{Kind: evidence.KindIngest}) })
	if !errors.Is(err, evidence.ErrFrozen) || !strings.Contains(err.Error(), "restored") {
		t.Fatalf("append to a frozen log: %v; want ErrFrozen and why", err)
	}
	// A checkpoint of a log that differs from this one is refused.
	err = db.Write(ctx, func(tx *sql.Tx) error {
		return log.AppendRecovery(ctx, tx, evidence.Checkpoint{Count: 4, Head: cp8.Head}, evidence.Entry{Reason: "restored"})
	})
	if err == nil || !strings.Contains(err.Error(), "rewritten") {
		t.Fatalf("recovery after a checkpoint of another log: %v; want it refused", err)
	}
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		return log.AppendRecovery(ctx, tx, cp10, evidence.Entry{Reason: "restored"})
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := db.Write(ctx, func(tx *sql.Tx) error { return log.Append(ctx, tx, evidence.Entry{Kind: evidence.KindIngest}) }); err != nil {
			t.Fatal(err)
		}
	}
	if h, err := log.HashAt(ctx, 10); err != nil || string(h) != string(cp10.Head) {
		t.Errorf("hash after the lost entry 10: %x, %v; want the checkpoint's head", h, err)
	}
	if h, err := log.HashAt(ctx, 8); err != nil || h != nil {
		t.Errorf("hash after the lost entry 8: %x, %v; want none", h, err)
	}
	head, err := evidence.Verify(ctx, db.R)
	if err != nil || head.Count != 13 || len(head.Gaps) != 1 || head.Gaps[0] != (evidence.Gap{From: 7, To: 10}) {
		t.Fatalf("verify the recovered log: %+v, %v; want 13 entries and the gap 7–10", head, err)
	}
	cp13 := evidence.Checkpoint{Count: 13, Head: head.Hash}
	for _, tc := range []struct {
		name string
		cps  []evidence.Checkpoint
		ok   bool
	}{
		{"vouched, lost checkpoints skipped", []evidence.Checkpoint{cp4, cp8, cp10, cp13}, true},
		{"no checkpoint at the gap's end", []evidence.Checkpoint{cp4, cp13}, false},
		{"a different head at the gap's end", []evidence.Checkpoint{cp4, {Count: 10, Head: cp4.Head}}, false},
	} {
		_, err := evidence.VerifyCheckpoints(evidence.DBRows(ctx, db.R), tc.cps)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestForgedGapRefused: entries deleted from the middle of a log and
// replaced by a recovery entry of the attacker's making do not verify
// against the checkpoints, nor does a gap no recovery entry declares.
func TestForgedGapRefused(t *testing.T) {
	ctx := context.Background()
	db := chain(t, 10)
	cps := []evidence.Checkpoint{{Count: 4, Head: headAt(t, db, 4)}, {Count: 10, Head: headAt(t, db, 10)}}
	if _, err := db.W.Exec(`DELETE FROM evidence WHERE seq IN (6, 7)`); err != nil {
		t.Fatal(err)
	}
	if _, err := evidence.Verify(ctx, db.R); err == nil {
		t.Fatal("a gap without a recovery entry verifies")
	}
	// A recovery entry chained to the hash after entry 5 cannot claim
	// the checkpoint's head at 10.
	log := evidence.New("uni-a", []byte("0123456789abcdef0123456789abcdef"), time.Now).UseDB(db)
	if _, err := db.W.Exec(`DELETE FROM evidence WHERE seq > 5`); err != nil {
		t.Fatal(err)
	}
	forged := evidence.Checkpoint{Count: 7, Head: headAt(t, db, 5)}
	if err := db.Write(ctx, func(tx *sql.Tx) error { return log.AppendRecovery(ctx, tx, forged, evidence.Entry{}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := evidence.VerifyCheckpoints(evidence.DBRows(ctx, db.R), cps); err == nil {
		t.Error("a forged gap verifies against the checkpoints")
	}
}
