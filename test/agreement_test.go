package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

func agreementState(t *testing.T, n *node.Node, id string) (string, bool) {
	t.Helper()
	list, err := n.Agreements(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if a.ID == id {
			return a.State, a.Signed
		}
	}
	return "", false
}

// TestSignedAgreementLifecycle: one side proposes, the other accepts, both
// hold both signatures; nothing is shared before acceptance; a revocation
// by either side reaches the other and stops sharing.
func TestSignedAgreementLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "signed", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}

	// The recipient proposes; the provider has to accept.
	if err := b.ProposeAgreement(ctx, ag); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the proposal at uni-a", func() bool { st, _ := agreementState(t, a, "signed"); return st == "offered" })
	if _, err := a.Share(ctx, "signed"); !errors.Is(err, agreement.ErrNotActive) {
		t.Fatalf("share before acceptance: %v, want ErrAgreementNotActive", err)
	}
	if err := b.AcceptAgreement(ctx, "signed"); err == nil {
		t.Error("the proposer accepted its own proposal")
	}
	if err := a.AcceptAgreement(ctx, "signed"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the acceptance at uni-b", func() bool {
		st, signed := agreementState(t, b, "signed")
		return st == "active" && signed
	})
	if st, signed := agreementState(t, a, "signed"); st != "active" || !signed {
		t.Fatalf("uni-a: %s, signed %v", st, signed)
	}
	sr, err := a.Share(ctx, "signed")
	if err != nil || sr.Permitted != 27 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 27 })

	// The recipient revokes; the provider learns it and shares nothing more.
	if _, err := b.RevokeAgreement(ctx, "signed"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the revocation at uni-a", func() bool { st, _ := agreementState(t, a, "signed"); return st == "revoked" })
	more := `{"type":"course_grade","student_id":"S9999","course_code":"CS301","score":77}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	sr, err = a.Share(ctx, "signed")
	if err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonAgreementRevoked)] != 1 {
		t.Fatalf("share after revocation: %+v, %v; want 1 denied agreement_revoked", sr, err)
	}
}
