package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestAIServiceTraining: a member credentialed as ai_service receives
// model_training records from a university. Adults who consented to
// training by it leave without their L4 fields; the minors (even with
// their own consent), the students who did not consent, and a student
// who withdrew are denied with the training reasons, and so is every
// record once the agreement lets an L4 field out. The same university
// cannot send the AI service records for credit transfer, nor another
// university records for training.
func TestAIServiceTraining(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	uni := s.member("uni-a", crypto.SuiteX25519)
	ai := s.memberAs("ai-1", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	other := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := uni.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	agree := func(id, to string, purpose policy.Purpose, fields []string, max schema.Level, nodes ...*node.Node) *policy.Agreement {
		t.Helper()
		ag := &policy.Agreement{ID: id, Provider: "uni-a", Recipient: to, Purpose: purpose, LegalBasis: policy.BasisContract,
			RecordTypes: map[string][]string{"student": fields}, MaxLevel: max, AllowRawL4: max == schema.L4,
			RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
		for _, n := range nodes {
			if err := n.AddAgreement(ctx, ag); err != nil {
				t.Fatalf("add agreement %s: %v", id, err)
			}
		}
		return ag
	}
	train := agree("train", "ai-1", policy.PurposeModelTraining, []string{"student_id", "gender", "birth_date"}, schema.L3, uni, ai)
	// S0000–S0005 consent to training by ai-1; S0025, a minor, consents
	// herself, without her guardian.
	for _, id := range []string{"S0000", "S0001", "S0002", "S0003", "S0004", "S0005", "S0025"} {
		if _, err := uni.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeModelTraining,
			Recipients: []string{"ai-1"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// S0005 withdraws before the first share.
	if _, err := uni.WithdrawConsent(ctx, "c-S0005"); err != nil {
		t.Fatal(err)
	}

	sr, err := uni.Share(ctx, train.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("permitted %d, %s %d, %s %d", sr.Permitted,
		policy.ReasonTrainingNeedsConsent, sr.Denied[string(policy.ReasonTrainingNeedsConsent)],
		policy.ReasonTrainingMinor, sr.Denied[string(policy.ReasonTrainingMinor)])
	want := fmt.Sprintf("permitted 5, %s 20, %s 2", policy.ReasonTrainingNeedsConsent, policy.ReasonTrainingMinor)
	if got != want {
		t.Fatalf("share for training (%+v):\n got %s\nwant %s", sr, got, want)
	}
	wait.Until(t, 30*time.Second, "5 records at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == 5
	})
	for _, r := range received(t, s.conf["ai-1"].DataDir) {
		if _, ok := r["religion"]; ok || r["_type"] != "student" {
			t.Errorf("ai-1 received %v: want students without religion", r)
		}
		if id, _ := r["student_id"].(string); strings.HasPrefix(id, "S00") {
			t.Errorf("ai-1 received the student id %q in clear", id)
		}
	}

	// An agreement that lets an L4 field out sends nothing for training,
	// consent or not; the minors are still refused for want of a guardian.
	l4 := agree("train-l4", "ai-1", policy.PurposeModelTraining, []string{"student_id", "gender", "religion"}, schema.L4, uni, ai)
	sr, err = uni.Share(ctx, l4.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sr.Permitted != 0 || sr.Denied[string(policy.ReasonTrainingSensitive)] != 25 || sr.Denied[string(policy.ReasonTrainingMinor)] != 2 {
		t.Errorf("share with an L4 field for training: %+v; want 25 %s and 2 %s", sr, policy.ReasonTrainingSensitive, policy.ReasonTrainingMinor)
	}

	// S0000 withdraws: ai-1 erases what it received of her, and a new
	// record of hers is not sent for training.
	if wr, err := uni.WithdrawConsent(ctx, "c-S0000"); err != nil || wr.Requests != 1 {
		t.Fatalf("withdraw c-S0000: %+v, %v; want an erasure request to ai-1", wr, err)
	}
	wait.Until(t, 30*time.Second, "S0000's record erased at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == 4
	})
	if _, err := uni.Ingest(ctx, strings.NewReader(`{"type":"student","student_id":"S0000","name":"张0","gender":"男","birth_date":"2006-01-01"}`+"\n"), ""); err != nil {
		t.Fatal(err)
	}
	sr, err = uni.Share(ctx, train.ID)
	if err != nil {
		t.Fatal(err)
	}
	// What was delivered is not considered again: the 20 without consent
	// and S0000's new record are denied.
	if sr.Permitted != 0 || sr.Denied[string(policy.ReasonTrainingNeedsConsent)] != 21 {
		t.Errorf("share after S0000 withdrew: %+v; want nothing permitted, 21 %s", sr, policy.ReasonTrainingNeedsConsent)
	}

	// Records go to the AI service only for an AI purpose, and for an AI
	// purpose only to an AI service: every one of the 28 held students.
	ct := agree("ct", "ai-1", policy.PurposeCreditTransfer, []string{"student_id", "gender"}, schema.L3, uni, ai)
	if sr, err := uni.Share(ctx, ct.ID); err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonAIServicePurpose)] != 28 {
		t.Errorf("credit transfer to ai-1: %+v, %v; want all 28 denied %s", sr, err, policy.ReasonAIServicePurpose)
	}
	la := agree("la", "uni-b", policy.PurposeLearningAnalytics, []string{"student_id", "gender"}, schema.L3, uni, other)
	if sr, err := uni.Share(ctx, la.ID); err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonAIPurposeRecipient)] != 28 {
		t.Errorf("learning analytics to uni-b: %+v, %v; want all 28 denied %s", sr, err, policy.ReasonAIPurposeRecipient)
	}

	m := nodetest.Scrape(t, uni)
	for _, r := range []policy.Reason{policy.ReasonTrainingNeedsConsent, policy.ReasonTrainingMinor, policy.ReasonTrainingSensitive} {
		if !strings.Contains(m, `eduspace_policy_decisions_total{outcome="deny",reason="`+string(r)+`"}`) {
			t.Errorf("uni-a's metrics count no %s denial", r)
		}
	}
	if st, _ := ai.Status(ctx); st.Received != 4 {
		t.Errorf("ai-1 holds %d records, want the 4 left of the first share", st.Received)
	}
	for name, n := range map[string]*node.Node{"uni-a": uni, "ai-1": ai} {
		if _, err := n.VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", name, err)
		}
	}
}
