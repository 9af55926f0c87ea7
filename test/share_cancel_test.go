package test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
	"github.com/eduspace/eduspace/test/wait"
)

// TestShareCancelledThenResumed: a share whose request goes away midway
// stops without leaving its sealer behind; the next share sends the rest;
// every record arrives exactly once.
func TestShareCancelledThenResumed(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	// The adults' grades, and their student records, so that the node
	// knows every student.
	students, grades, want := adultRecords(t, synth.Synth{Prefix: "2025000", Students: 1000, Seed: 5, Now: s.now})
	n := len(want)
	if _, err := a.Ingest(ctx, bytes.NewReader(append(students, grades...)), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "cancel", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 30, BulkApproved: true, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, nd := range []*node.Node{a, b} {
		if err := nd.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Millisecond)
	a.Share(cctx, ag.ID) // may finish, fail or stop midway: any of them is fine
	cancel()

	done := make(chan error, 1)
	go func() {
		_, err := a.Share(ctx, ag.ID)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second share: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the second share hung")
	}
	wait.Until(t, 20*time.Second, "every grade at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received >= int64(n) })
	wait.UntilErr(t, 20*time.Second, "the exchange to settle, nothing more on its way to uni-b", func() error {
		return exchangeSettled(a.AdminAddr(), b.AdminAddr())
	})
	if st, _ := b.Status(ctx); st.Received != int64(n) {
		t.Errorf("uni-b holds %d records, want exactly %d", st.Received, n)
	}
}
