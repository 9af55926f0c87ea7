package node

import (
	"context"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// receiptsSent counts the receipts n has written to its outbox.
func receiptsSent(t *testing.T, n *Node) int {
	t.Helper()
	var k int
	if err := n.db.R.QueryRow(`SELECT count(*) FROM outbox WHERE kind = ?`, crypto.KindReceipt).Scan(&k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestReceiptsCoalesce: envelopes stored close together are confirmed by
// one receipt, not one per stored group, and every envelope is confirmed.
func TestReceiptsCoalesce(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()
	b.receiptLinger.Store(int64(500 * time.Millisecond)) // wide enough for every envelope of the share
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades || sr.Envelopes < 3 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	waitUntil(t, "the grades at uni-b", func() bool { return status(t, b).Received == relayGrades })
	waitUntil(t, "every envelope confirmed to uni-a", func() bool {
		return status(t, a).OutboxDepth == 0 && awaiting(t, a) == 0
	})
	if got := receiptsSent(t, b); got >= sr.Envelopes {
		t.Errorf("uni-b sent %d receipts for %d envelopes", got, sr.Envelopes)
	}
}

// TestReceiptsAfterRestart: what a node had queued to confirm when it
// stopped is confirmed when it starts again.
func TestReceiptsAfterRestart(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()
	b.receiptLinger.Store(int64(time.Hour)) // stores, never confirms
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	waitUntil(t, "the grades at uni-b", func() bool { return status(t, b).Received == relayGrades })
	// The first envelope may have been confirmed at once (a wake with an
	// empty queue starts the hour); the rest wait.
	time.Sleep(200 * time.Millisecond)
	if awaiting(t, a) == 0 {
		t.Fatal("uni-a awaits no receipt before uni-b restarts")
	}
	var queued int
	if err := b.db.R.QueryRow(`SELECT count(*) FROM receipt_queue`).Scan(&queued); err != nil || queued == 0 {
		t.Fatalf("uni-b's receipt queue holds %d envelopes (%v)", queued, err)
	}
	cfg := b.cfg
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = s.open(cfg)
	waitUntil(t, "every envelope confirmed to uni-a", func() bool { return awaiting(t, a) == 0 })
	if err := b.db.R.QueryRow(`SELECT count(*) FROM receipt_queue`).Scan(&queued); err != nil || queued != 0 {
		t.Fatalf("uni-b's receipt queue holds %d envelopes after the restart (%v)", queued, err)
	}
}

// awaiting is how many envelopes n sent await their receipt.
func awaiting(t *testing.T, n *Node) float64 {
	t.Helper()
	v, err := n.awaitingReceipt(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}
