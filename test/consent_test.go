package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestConsentWithdrawalAcrossNodes follows a withdrawal from the provider's
// ledger to the recipient's database and back: records leave only with
// consent; the withdrawal sends a signed erasure request; the recipient
// deletes the subject's records and answers with a signed erasure receipt;
// the subject report shows the erasure confirmed; the subject's records
// do not leave again.
func TestConsentWithdrawalAcrossNodes(t *testing.T) {
	ctx := context.Background()
	s, a, b, ag := consentStudy(t)
	var receipts []string
	for _, id := range []string{"S0001", "S0002"} {
		r, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
			Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, r)
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sr.Permitted != 2 || sr.Denied[string(policy.ReasonConsentMissing)] != 23 {
		t.Fatalf("share: %+v; want 2 permitted (consented) and 23 consent_missing", sr)
	}
	wait.Until(t, 20*time.Second, "2 records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 2 })

	// The consent receipt is a JWT that uni-a's signing key verifies.
	var req keys.Request
	raw, _ := os.ReadFile(filepath.Join(s.conf["uni-a"].DataDir, keys.RequestFile))
	json.Unmarshal(raw, &req)
	vk, err := crypto.ParseVerifyKey(req.SigningKeys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		policy.ConsentReceiptClaims
		jwt.RegisteredClaims
	}
	if err := vk.ParseJWT(receipts[0], &claims, time.Now()); err != nil || claims.Action != policy.ConsentGrant || claims.Node != "uni-a" {
		t.Fatalf("consent receipt: %v, %+v", err, claims)
	}
	if strings.Contains(receipts[0], "S0001") {
		t.Error("the receipt carries the raw student id")
	}

	rep, err := a.SubjectReport(ctx, "S0001")
	if err != nil || len(rep.Deliveries) != 1 || rep.Deliveries[0].Recipient != "uni-b" || rep.Deliveries[0].Erasure != "" {
		t.Fatalf("subject report before withdrawal: %+v, %v", rep, err)
	}

	wr, err := a.WithdrawConsent(ctx, "c-S0001")
	if err != nil || wr.Requests != 1 || wr.Receipt == "" {
		t.Fatalf("withdraw: %+v, %v", wr, err)
	}
	wait.Until(t, 20*time.Second, "the erasure confirmed at uni-a", func() bool {
		m := nodetest.Scrape(t, a)
		return strings.Contains(m, `eduspace_erasures_total{event="confirmed"} 1`) && strings.Contains(m, "eduspace_erasures_open 0\n")
	})
	if st, _ := b.Status(ctx); st.Received != 1 {
		t.Errorf("uni-b holds %d records after the erasure, want 1", st.Received)
	}
	if m := nodetest.Scrape(t, b); !strings.Contains(m, "eduspace_records_erased_total 1\n") {
		t.Error("uni-b did not count the erased record")
	}
	rep, _ = a.SubjectReport(ctx, "S0001")
	if len(rep.Deliveries) != 1 || rep.Deliveries[0].Erasure != "confirmed" {
		t.Errorf("subject report after withdrawal: %+v", rep)
	}
	if rep, _ := a.SubjectReport(ctx, "S0002"); len(rep.Deliveries) != 1 || rep.Deliveries[0].Erasure != "" {
		t.Errorf("the other subject's report changed: %+v", rep)
	}
	sr, err = a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 0 {
		t.Errorf("share after withdrawal: %+v, %v; want nothing permitted", sr, err)
	}
	for name, n := range map[string]*node.Node{"uni-a": a, "uni-b": b} {
		if _, err := n.VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", name, err)
		}
	}
}

// consentStudy opens uni-a holding records(now) and uni-b, both with the
// agreement "study": research on consent, student ID, name and birth date.
func consentStudy(t *testing.T) (s *testSpace, a, b *node.Node, ag *policy.Agreement) {
	t.Helper()
	ctx := context.Background()
	s = newSpace(t)
	a = s.member("uni-a", crypto.SuiteX25519)
	b = s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag = &policy.Agreement{ID: "study", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisConsent, RecordTypes: map[string][]string{"student": {"student_id", "name", "birth_date"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	return s, a, b, ag
}

// TestConsentList: the ledger is listed a page at a time, by purpose,
// and one record shown; an unknown one is 404.
func TestConsentList(t *testing.T) {
	ctx := context.Background()
	s, a, _, _ := consentStudy(t)
	for i := range 5 {
		id := fmt.Sprintf("S%04d", i)
		if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
			Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	dir := s.conf["uni-a"].DataDir
	var page1, page2, other []policy.ConsentRecord
	adminCall(t, a, dir, http.MethodGet, "/v1/consents?purpose=research&limit=3", "", &page1)
	if len(page1) != 3 || page1[0].ID != "c-S0000" || page1[2].ID != "c-S0002" {
		t.Fatalf("first page: %+v", page1)
	}
	adminCall(t, a, dir, http.MethodGet, "/v1/consents?purpose=research&limit=3&after="+page1[2].ID, "", &page2)
	if len(page2) != 2 || page2[1].ID != "c-S0004" {
		t.Errorf("second page: %+v", page2)
	}
	adminCall(t, a, dir, http.MethodGet, "/v1/consents?purpose=statistics", "", &other)
	if len(other) != 0 {
		t.Errorf("consents for another purpose: %+v", other)
	}
	var one policy.ConsentRecord
	if resp := adminCall(t, a, dir, http.MethodGet, "/v1/consents/c-S0003", "", &one); resp.StatusCode != http.StatusOK || one.Subject != "S0003" {
		t.Errorf("show: %s, %+v", resp.Status, one)
	}
	if resp := adminCall(t, a, dir, http.MethodGet, "/v1/consents/c-none", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("show an unknown consent: %s, want 404", resp.Status)
	}
}

// TestConsentTokenJoinsNoRecipient: the token a consent receipt names a
// student by is not the token any recipient's copies carry, even that of
// a member named "consent-receipts" (the label receipt tokens were once
// derived under).
func TestConsentTokenJoinsNoRecipient(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	r := s.member("consent-receipts", crypto.SuiteX25519)
	ag := gradeAgreement("tokens", "uni-a", "consent-receipts", s.now)
	for _, n := range []*node.Node{a, r} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	receipt, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-T1", Subject: "T0001", Purpose: policy.PurposeCreditTransfer,
		Recipients: []string{"consent-receipts"}, Granted: s.now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		policy.ConsentReceiptClaims
		jwt.RegisteredClaims
	}
	if _, _, err := jwt.NewParser().ParseUnverified(receipt, &claims); err != nil || claims.SubjectToken == "" {
		t.Fatalf("receipt: %v, %+v", err, claims)
	}
	if _, err := a.Ingest(ctx, strings.NewReader(knownStudents("T0001")+`{"type":"course_grade","student_id":"T0001","course_code":"CS101","score":80}`+"\n"), ""); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, r, ag.ID, 1)
	got := received(t, s.conf["consent-receipts"].DataDir)
	if len(got) != 1 || got[0]["student_id"] == claims.SubjectToken {
		t.Errorf("the recipient's token %v equals the receipt's %s", got, claims.SubjectToken)
	}
}
