package test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/store"
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

// TestReceiptBindsEnvelope: a receipt names the SHA-256 of each envelope it
// answers for, as it arrived; the sender keeps it in its evidence, and
// refuses a receipt that names another hash than it sent (bad_content),
// which then answers for nothing.
func TestReceiptBindsEnvelope(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	agreeGrades(t, "grades", s.now, a, b)
	awaiting := func(n int) func() bool {
		return func() bool {
			return strings.Contains(nodetest.Scrape(t, a), fmt.Sprintf("\neduspace_envelopes_awaiting_receipt %d\n", n))
		}
	}
	if _, err := a.Share(ctx, "grades"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the receipts at uni-a", func() bool {
		st, _ := b.Status(ctx)
		return st.Received == 27 && awaiting(0)() && strings.Contains(nodetest.Scrape(t, a), "\neduspace_outbox_depth 0\n")
	})

	// The hashes the receipts named are those of the envelopes sent.
	sent := map[string]string{}
	db, err := store.OpenReadOnly(filepath.Join(s.conf["uni-a"].DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT o.envelope_id, d.data FROM outbox o JOIN outbox_data d ON d.id = o.id WHERE o.kind = 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var eid string
		var env []byte
		if err := rows.Scan(&eid, &env); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(env)
		sent[eid] = hex.EncodeToString(sum[:])
	}
	rows.Close()
	db.Close()
	receipts := 0
	for _, e := range nodetest.Evidence(t, s.conf["uni-a"].DataDir) {
		if e["kind"] != "receipt" {
			continue
		}
		receipts++
		if eid, _ := e["envelope"].(string); e["digest"] != sent[eid] || sent[eid] == "" {
			t.Errorf("receipt entry for envelope %s names %v, the envelope sent hashes to %s", eid, e["digest"], sent[eid])
		}
	}
	if receipts == 0 || receipts != len(sent) {
		t.Errorf("%d receipt entries for %d envelopes", receipts, len(sent))
	}

	// uni-b away, an envelope awaits its receipt; a receipt signed by uni-b
	// naming another hash is refused and answers for nothing.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	more := strings.ReplaceAll(data, `"term":"2025-2026-1"`, `"term":"2025-2026-2"`)
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	sr, err := a.Share(ctx, "grades")
	if err != nil || sr.Envelopes == 0 {
		t.Fatalf("share while uni-b is away: %+v, %v; want envelopes", sr, err)
	}
	wait.Until(t, 20*time.Second, "the envelopes sent and awaiting", awaiting(sr.Envelopes))
	var eid string
	var records int
	db, err = store.OpenReadOnly(filepath.Join(s.conf["uni-a"].DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT envelope_id, records FROM outbox WHERE kind = 1 AND receipt_ms IS NULL LIMIT 1`).Scan(&eid, &records); err != nil {
		t.Fatal(err)
	}
	db.Close()
	bk, err := keys.LoadKeys(s.conf["uni-b"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := keys.LoadKeys(s.conf["uni-a"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := crypto.Header{Suite: ak.KEM.Suite(), Kind: crypto.KindReceipt, Sender: "uni-b", SenderKeyID: bk.Signing.Public().KeyID(),
		Recipient: "uni-a", RecipientKeyID: ak.KEM.Public().KeyID(), Seq: 1 << 40, Created: now, Expires: now.Add(time.Hour), Count: 1}
	rand.Read(h.ID[:])
	body := fmt.Sprintf(`{"envelopes":[{"envelope":%q,"records":%d,"stored_ms":%d,"sha256":%q}]}`, eid, records, now.UnixMilli(), strings.Repeat("0", 64))
	forged, err := crypto.Seal(nil, h, ak.KEM.Public(), bk.Signing, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := jsPublish(nc, bus.Layout{Space: space}.ReceiptSubject("uni-a", "uni-b"), forged); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the receipt with another hash refused", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), "\neduspace_envelopes_refused_total{reason=\"bad_content\"} 1\n")
	})
	if !awaiting(sr.Envelopes)() {
		t.Error("a receipt naming another hash answered for the envelope")
	}
	// uni-b back: its own receipt, with the right hash, answers.
	s.open("uni-b", node.Env{})
	wait.Until(t, 20*time.Second, "uni-b's receipt", awaiting(0))
}
