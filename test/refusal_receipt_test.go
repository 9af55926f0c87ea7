package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/test/wait"
)

// TestSenderToldOfRefusals: uni-a shares under an agreement that uni-b does
// not hold. uni-b refuses every envelope (no_agreement) and says so in a
// signed receipt; uni-a then awaits nothing, counts the refusals by reason,
// records them in its evidence log and in the subject report, and may share
// the records again: once uni-b imports the agreement, they arrive.
func TestSenderToldOfRefusals(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	if err := a.AddAgreement(ctx, ag); err != nil {
		t.Fatal(err)
	}
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 27 || sr.Envelopes == 0 {
		t.Fatalf("share: %+v, %v; want 27 grades permitted", sr, err)
	}

	wait.Until(t, 30*time.Second, "uni-a to learn of uni-b's refusals", func() bool {
		m := nodetest.Scrape(t, a)
		return strings.Contains(m, fmt.Sprintf("eduspace_envelopes_refused_by_peer_total{reason=%q} %d\n", envelope.RefuseNoAgreement, sr.Envelopes)) &&
			strings.Contains(m, "eduspace_envelopes_awaiting_receipt 0\n")
	})
	if got, want := refusedCounts(t, b), map[string]int{envelope.RefuseNoAgreement: sr.Envelopes}; !sameCounts(got, want) {
		t.Errorf("uni-b refused %v, want %v", got, want)
	}
	if m := nodetest.Scrape(t, a); !strings.Contains(m, "eduspace_receipts_received_total 0\n") {
		t.Errorf("uni-a counts refusals as confirmed envelopes")
	}
	var told int
	for _, e := range nodetest.Evidence(t, s.conf["uni-a"].DataDir) {
		if e["kind"] == "receipt" {
			if e["reason"] != envelope.RefuseNoAgreement || e["peer"] != "uni-b" {
				t.Errorf("receipt evidence %v, want a refusal by uni-b for %s", e, envelope.RefuseNoAgreement)
			}
			told++
		}
	}
	if told != sr.Envelopes {
		t.Errorf("uni-a's evidence holds %d refusals, want %d", told, sr.Envelopes)
	}
	rep, err := a.SubjectReport(ctx, "S0003")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deliveries) != 1 || rep.Deliveries[0].Refused != envelope.RefuseNoAgreement || rep.Deliveries[0].Received != nil {
		t.Errorf("subject report after the refusal: %+v, want one delivery refused (%s), not received", rep.Deliveries, envelope.RefuseNoAgreement)
	}

	// The records never arrived, so they may be shared again; with the
	// agreement on both sides they arrive and are confirmed.
	if err := b.AddAgreement(ctx, ag); err != nil {
		t.Fatal(err)
	}
	again, err := a.Share(ctx, ag.ID)
	if err != nil || again.Permitted != 27 {
		t.Fatalf("share again after the refusal: %+v, %v; want the 27 grades again", again, err)
	}
	wait.Until(t, 30*time.Second, "the grades at uni-b and their receipts at uni-a", func() bool {
		st, err := b.Status(ctx)
		m := nodetest.Scrape(t, a)
		return err == nil && st.Received == 27 &&
			strings.Contains(m, fmt.Sprintf("eduspace_receipts_received_total %d\n", again.Envelopes)) &&
			strings.Contains(m, "eduspace_envelopes_awaiting_receipt 0\n")
	})
}
