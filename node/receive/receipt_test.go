package receive_test

import (
	"context"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/test/wait"
)

// TestReceiptsCoalesce: envelopes stored close together are confirmed by
// one receipt, not one per stored group, and every envelope is confirmed.
func TestReceiptsCoalesce(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	a, b, ag := s.Pair(nil, node.Env{}, node.Env{Receive: receive.WithReceiptLinger(500 * time.Millisecond)}) // wide enough for every envelope of the share
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades || sr.Envelopes < 3 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool { return nodetest.Status(t, b).Received == nodetest.Grades })
	wait.Until(t, 20*time.Second, "every envelope confirmed to uni-a", func() bool {
		return nodetest.Status(t, a).OutboxDepth == 0 && awaiting(t, s) == 0
	})
	if got := nodetest.Count(t, s.Configs["uni-b"], `SELECT count(*) FROM outbox WHERE kind = ?`, crypto.KindReceipt); got >= int64(sr.Envelopes) {
		t.Errorf("uni-b sent %d receipts for %d envelopes", got, sr.Envelopes)
	}
}

// TestReceiptsAfterRestart: what a node had queued to confirm when it
// stopped is confirmed when it starts again.
func TestReceiptsAfterRestart(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	a, b, ag := s.Pair(nil, node.Env{}, node.Env{Receive: receive.WithReceiptLinger(time.Hour)}) // stores, never confirms
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool { return nodetest.Status(t, b).Received == nodetest.Grades })
	// The first envelope may have been confirmed at once (a wake with an
	// empty queue starts the hour); the rest wait, stored and queued.
	wait.Until(t, 20*time.Second, "uni-a's outbox sent", func() bool { return nodetest.Status(t, a).OutboxDepth == 0 })
	if awaiting(t, s) == 0 {
		t.Fatal("uni-a awaits no receipt before uni-b restarts")
	}
	if queued := nodetest.Count(t, s.Configs["uni-b"], `SELECT count(*) FROM receipt_queue`); queued == 0 {
		t.Fatal("uni-b's receipt queue holds no envelope")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = s.Open(s.Configs["uni-b"])
	wait.Until(t, 20*time.Second, "every envelope confirmed to uni-a", func() bool { return awaiting(t, s) == 0 })
	if queued := nodetest.Count(t, s.Configs["uni-b"], `SELECT count(*) FROM receipt_queue`); queued != 0 {
		t.Fatalf("uni-b's receipt queue holds %d envelopes after the restart", queued)
	}
}

// awaiting is how many envelopes of records uni-a sent await their receipt.
func awaiting(t *testing.T, s *nodetest.Space) int64 {
	t.Helper()
	return nodetest.Count(t, s.Configs["uni-a"], `SELECT count(*) FROM outbox WHERE kind = 1 AND sent_ms IS NOT NULL AND receipt_ms IS NULL`)
}
