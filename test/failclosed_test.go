package test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestFailClosed: while a node cannot publish checkpoints of its evidence
// log, it sends nothing (the outbox keeps what was sealed), says so in its
// metrics and /readyz, also once restarted; once checkpoints go through
// again, everything queued is delivered.
func TestFailClosed(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	fast := func(c *node.Config) {
		c.Checkpoint.Interval = 100 * time.Millisecond
		c.Checkpoint.MaxAge = 400 * time.Millisecond
	}
	a := s.member("uni-a", crypto.SuiteX25519, fast)
	b := s.member("uni-b", crypto.SuiteX25519, fast)

	// Have the audit stream refuse every checkpoint: none can be
	// published. (Deleted, a restarted node would make it again.)
	js := s.js()
	l := bus.Layout{Space: space}
	refusing := bus.AuditStreamConfig(l)
	refusing.MaxMsgSize = 16
	if _, err := js.UpdateStream(ctx, refusing); err != nil {
		t.Fatal(err)
	}

	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "fc", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code"}},
		MaxLevel: schema.L2, RetentionDays: 1, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 20*time.Second, "uni-a to fail closed", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), "eduspace_sending_blocked 1\n")
	})
	resp, err := http.Get("http://" + a.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while failing closed: %d, want 503", resp.StatusCode)
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 27 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	// That nothing leaves is no event to wait for, and the relay shows no
	// sign of a pass it held back: give a relay that ignored the block the
	// time to send what the share woke it for, then look.
	if err := wait.For(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.Status(ctx); st.Received != 0 {
		t.Fatalf("uni-b received %d records while uni-a failed closed", st.Received)
	}
	if st, _ := a.Status(ctx); st.OutboxDepth != int64(sr.Envelopes) {
		t.Errorf("outbox holds %d envelopes, want %d", st.OutboxDepth, sr.Envelopes)
	}

	// A restart does not clear it: the node fails closed from its first
	// moment, by what its log and checkpoints say.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = s.open("uni-a", node.Env{})
	if a.Ready() {
		t.Error("uni-a ready right after a restart while its log is uncovered")
	}
	if m := nodetest.Scrape(t, a); !strings.Contains(m, "eduspace_sending_blocked 1\n") {
		t.Error("uni-a does not report sending blocked right after a restart")
	}
	if err := wait.For(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.Status(ctx); st.Received != 0 {
		t.Fatalf("uni-b received %d records after uni-a restarted failing closed", st.Received)
	}

	// Let the stream take checkpoints again: they go out, sending resumes.
	if _, err := js.UpdateStream(ctx, bus.AuditStreamConfig(l)); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b after recovery", func() bool {
		st, _ := b.Status(ctx)
		return st.Received == 27
	})
	if m := nodetest.Scrape(t, a); !strings.Contains(m, "eduspace_sending_blocked 0\n") {
		t.Error("uni-a still reports sending blocked")
	}
}
