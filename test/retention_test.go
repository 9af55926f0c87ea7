package test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestRetentionExpiry: when an agreement's retention period has ended, the
// recipient deletes what it received under it without being asked, counts
// it and records it in its evidence log.
func TestRetentionExpiry(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	var offset atomic.Int64 // how far the recipient's clock runs ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.memberEnv("uni-b", crypto.SuiteX25519, node.Env{Now: clock})
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "short", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 1, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(30 * 24 * time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Share(ctx, ag.ID); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 27 })

	if err := b.ExpireRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.Status(ctx); st.Received != 27 {
		t.Fatalf("records deleted before their retention ended: %d left", st.Received)
	}
	offset.Store(int64(25 * time.Hour))
	if err := b.ExpireRetention(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := b.Status(ctx); st.Received != 0 {
		t.Errorf("after the retention period uni-b still holds %d records", st.Received)
	}
	if m := nodetest.Scrape(t, b); !strings.Contains(m, "eduspace_records_expired_total 27\n") {
		t.Error("uni-b did not count the expired records")
	}
	if _, err := b.VerifyEvidence(ctx); err != nil {
		t.Errorf("uni-b evidence: %v", err)
	}
}
