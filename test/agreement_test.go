package test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
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
	// Over the API: 409 with Retry-After, which the CLI follows.
	resp := adminCall(t, a, s.conf["uni-a"].DataDir, http.MethodPost, "/v1/shares", `{"agreement":"signed"}`, nil)
	if resp.StatusCode != http.StatusConflict || resp.Header.Get("Retry-After") == "" {
		t.Errorf("share before acceptance over the API: %s, Retry-After %q; want 409 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
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

// TestProposalWithdrawnOrDeclined: a proposal not accepted yet is revoked
// like an agreement in force: by its proposer (withdrawn) or by the other
// side (declined). Both sides then hold it as revoked, and it can be
// neither accepted nor shared under.
func TestProposalWithdrawnOrDeclined(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	for _, c := range []struct {
		id      string
		revoker *node.Node
	}{{"withdrawn", b}, {"declined", a}} {
		ag := gradeAgreement(c.id, "uni-a", "uni-b", s.now)
		if err := b.ProposeAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
		wait.Until(t, 20*time.Second, c.id+": the proposal at uni-a", func() bool { st, _ := agreementState(t, a, c.id); return st == "offered" })
		if _, err := c.revoker.RevokeAgreement(ctx, c.id); err != nil {
			t.Fatalf("%s: revoke a proposal: %v", c.id, err)
		}
		wait.Until(t, 20*time.Second, c.id+": revoked on both sides", func() bool {
			sa, _ := agreementState(t, a, c.id)
			sb, _ := agreementState(t, b, c.id)
			return sa == "revoked" && sb == "revoked"
		})
		if err := a.AcceptAgreement(ctx, c.id); err == nil {
			t.Errorf("%s: a revoked proposal was accepted", c.id)
		}
		if _, err := c.revoker.RevokeAgreement(ctx, c.id); err == nil {
			t.Errorf("%s: revoked twice", c.id)
		}
	}
}

// TestAgreementRevokedOnlyByItsParties: a member that is not a party to an
// agreement between two others sends one of them a revocation naming
// itself as the other party. The message is refused as bad content,
// counted and recorded; the agreement stays in force and records still
// flow under it.
func TestAgreementRevokedOnlyByItsParties(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	s.member("uni-c", crypto.SuiteX25519)
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}

	// uni-c's revocation of "a-to-b", with itself in uni-a's place.
	forged := *ag
	forged.Provider = "uni-c"
	now := time.Now()
	body, err := json.Marshal(map[string]any{"action": "revoke", "agreement": policy.SignedAgreement{
		Agreement: forged, ProposedBy: "uni-c", ProposedAt: now, RevokedBy: "uni-c", RevokedAt: now}})
	if err != nil {
		t.Fatal(err)
	}
	cKeys, err := keys.LoadKeys(s.conf["uni-c"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	bKeys, err := keys.LoadKeys(s.conf["uni-b"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	bKEM := bKeys.KEM.Public()
	h := crypto.Header{Suite: bKEM.Suite(), Kind: crypto.KindAgreement, Sender: "uni-c", SenderKeyID: cKeys.Signing.Public().KeyID(),
		Recipient: "uni-b", RecipientKeyID: bKEM.KeyID(), Seq: 1, Created: now, Expires: now.Add(time.Hour),
		Agreement: ag.ID, Purpose: string(ag.Purpose), Count: 1}
	if _, err := rand.Read(h.ID[:]); err != nil {
		t.Fatal(err)
	}
	env, err := crypto.Seal(nil, h, bKEM, cKeys.Signing, body)
	if err != nil {
		t.Fatal(err)
	}
	js := s.js()
	if _, err := js.Publish(ctx, bus.Layout{Space: space}.ControlSubject("uni-b", "uni-c"), env); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{envelope.RefuseContent: 1}
	wait.Until(t, 20*time.Second, "uni-b to refuse the forged revocation", func() bool {
		return sameCounts(refusedCounts(t, b), want)
	})
	if got := refusals(t, s.conf["uni-b"].DataDir); !sameCounts(got, want) {
		t.Errorf("uni-b's evidence of refusals: %v, want %v", got, want)
	}
	if state, _ := agreementState(t, b, ag.ID); state != agreement.Active {
		t.Fatalf("agreement at uni-b is %q after uni-c's revocation, want %q", state, agreement.Active)
	}

	// Records still flow under it.
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted == 0 {
		t.Fatalf("share after the forged revocation: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == int64(sr.Permitted)
	})
}
