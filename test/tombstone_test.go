package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// TestErasureBeforeData: a student withdraws consent after her record
// left for uni-b but before uni-b stored it, and the erasure request
// reaches uni-b first (the test holds the delivery back: the deliver and
// control consumers are not ordered). uni-b keeps a tombstone, confirms
// the erasure, and drops her record when it arrives, with evidence; the
// other nine records are stored.
func TestErasureBeforeData(t *testing.T) {
	ctx := context.Background()
	s, a, b, ag := consentStudy(t)
	for i := range 10 {
		id := fmt.Sprintf("S%04d", i)
		if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
			Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	outboxEmpty := func(what string) {
		t.Helper()
		wait.UntilErr(t, 20*time.Second, what, func() error {
			st, err := a.Status(ctx)
			if err == nil && st.OutboxDepth != 0 {
				err = fmt.Errorf("uni-a's outbox holds %d envelopes", st.OutboxDepth)
			}
			return err
		})
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Permitted != 10 || sr.Envelopes != 1 {
		t.Fatalf("share: %+v, %v; want 10 records in one envelope", sr, err)
	}
	outboxEmpty("the records on the space")
	if _, err := a.WithdrawConsent(ctx, "c-S0001"); err != nil {
		t.Fatal(err)
	}
	outboxEmpty("the erasure request on the space")

	// Hold the delivery: fetched from uni-b's consumer and not
	// acknowledged, it comes back only when released.
	l := bus.Layout{Space: space}
	cons, err := s.js().Consumer(ctx, l.ExchangeStream(), l.DeliverConsumer("uni-b"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var held []jetstream.Msg
	for m := range batch.Messages() {
		held = append(held, m)
	}
	if len(held) != 1 {
		t.Fatalf("held %d deliveries, want the one envelope", len(held))
	}

	b = s.open("uni-b", node.Env{})
	wait.Until(t, 20*time.Second, "the erasure confirmed at uni-a, uni-b holding nothing yet", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), `eduspace_erasures_total{event="confirmed"} 1`)
	})
	if st, _ := b.Status(ctx); st.Received != 0 {
		t.Fatalf("uni-b holds %d records before the delivery was released", st.Received)
	}
	for _, m := range held {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	wait.UntilErr(t, 20*time.Second, "the nine records kept at uni-b", func() error {
		if st, _ := b.Status(ctx); st.Received != 9 {
			return fmt.Errorf("uni-b holds %d records", st.Received)
		}
		return nil
	})
	if n := len(received(t, s.conf["uni-b"].DataDir)); n != 9 {
		t.Errorf("uni-b's database holds %d records, want 9", n)
	}
	dropped := 0
	for _, e := range nodetest.Evidence(t, s.conf["uni-b"].DataDir) {
		if e["kind"] == "erasure" && e["reason"] == "tombstoned" {
			c, _ := e["count"].(float64)
			dropped += int(c)
		}
	}
	if dropped != 1 {
		t.Errorf("uni-b's evidence records %d records dropped for an erasure that came first, want 1", dropped)
	}
}
