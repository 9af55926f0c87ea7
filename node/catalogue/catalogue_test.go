package catalogue_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// space opens uni-a, which holds nodetest.Records (23 grades) and serves
// its DSP endpoint on a loopback port, and uni-b.
func space(t *testing.T) (s *nodetest.Space, a, b *node.Node) {
	t.Helper()
	s = nodetest.NewSpace(t)
	ca := s.Config("uni-a")
	ca.DSP.Listen = "127.0.0.1:0"
	a = s.Open(ca)
	b = s.Open(s.Config("uni-b"))
	if _, err := a.Ingest(context.Background(), strings.NewReader(nodetest.Records(s.Now)), ""); err != nil {
		t.Fatal(err)
	}
	return s, a, b
}

// offer offers testdata/offer.json at n under id.
func offer(t *testing.T, n *node.Node, id string) catalogue.Dataset {
	t.Helper()
	data, err := os.ReadFile("testdata/offer.json")
	if err != nil {
		t.Fatal(err)
	}
	o, err := catalogue.ParseOffer(data, schema.Default())
	if err != nil {
		t.Fatal(err)
	}
	o.ID = id
	d, err := n.Catalogue().Offer(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCatalogueRowsNoisedOncePerDay: a row count is drawn once for the
// day and the record types, and stored; asking again, offering again, or
// offering the same records under other ids shows the same figure, so
// that no number of offers averages the noise away; it stays within the
// noise's reach.
func TestCatalogueRowsNoisedOncePerDay(t *testing.T) {
	s, a, _ := space(t)
	ctx := context.Background()
	const datasets = 12
	var figure int64 = -1
	for i := range datasets {
		d := offer(t, a, fmt.Sprintf("grades-%d", i))
		if d.Rows.Mechanism != catalogue.Mechanism || d.Rows.Sigma2 != catalogue.Sigma2 || d.Rows.Rho != catalogue.RhoPerDraw ||
			d.Rows.Day != s.Now.UTC().Format(time.DateOnly) && d.Rows.Day != time.Now().UTC().Format(time.DateOnly) {
			t.Errorf("rows of %s: %+v", d.ID, d.Rows)
		}
		if figure < 0 {
			figure = d.Rows.Noised
		}
		if d.Rows.Noised != figure {
			t.Errorf("%s over the same records as grades-0: rows %d, grades-0's %d (a second draw of one count)", d.ID, d.Rows.Noised, figure)
		}
	}
	// Offering a dataset again keeps the day's figure.
	offer(t, a, "grades-0")
	own, err := a.Catalogue().Own(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range own {
		if d.Rows.Noised != figure {
			t.Errorf("%s: asked again the same day, rows %d, first %d", d.ID, d.Rows.Noised, figure)
		}
	}
	// σ ≈ 22.4: six σ is far beyond any draw a test will see.
	if figure < 0 || figure > nodetest.Grades+135 {
		t.Errorf("rows %d, beyond the noise's reach of %d", figure, nodetest.Grades)
	}
	cfg := s.Configs["uni-a"]
	if k := nodetest.Count(t, cfg, `SELECT count(*) FROM catalogue_rows`); k != 1 {
		t.Errorf("catalogue_rows holds %d draws, want one per set of record types and day", k)
	}
	if k := nodetest.Count(t, cfg, `SELECT count(*) FROM evidence WHERE entry LIKE '%"kind":"catalogue"%' AND entry LIKE '%rows_noised%'`); k != 1 {
		t.Errorf("%d rows_noised evidence entries, want 1", k)
	}
}

// TestCataloguePublished: an offer reaches the other members, who list it
// as uni-a's with its fields, levels and noised count; a withdrawal
// reaches them too.
func TestCataloguePublished(t *testing.T) {
	s, a, b := space(t)
	ctx := context.Background()
	d := offer(t, a, "grades-2026")
	var got catalogue.Entry
	wait.Until(t, 20*time.Second, "uni-b to list uni-a's dataset", func() bool {
		e, err := b.Catalogue().Get(ctx, "grades-2026", "")
		got = e
		return err == nil
	})
	if got.Own || got.Publisher != "uni-a" || got.Institution != "Institution uni-a" || got.Received == nil {
		t.Errorf("at uni-b: own %v, publisher %q, institution %q, received %v", got.Own, got.Publisher, got.Institution, got.Received)
	}
	if got.Rows != d.Rows || len(got.Fields) != 4 || got.Level != "L3" || got.Endpoint != a.DSPURL() || got.Endpoint == "" {
		t.Errorf("at uni-b: rows %+v (uni-a %+v), %d fields, level %s, endpoint %q (uni-a serves %q)",
			got.Rows, d.Rows, len(got.Fields), got.Level, got.Endpoint, a.DSPURL())
	}
	list, err := b.Catalogue().List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("uni-b's list: %+v, %v", list, err)
	}
	own, err := a.Catalogue().List(ctx)
	if err != nil || len(own) != 1 || !own[0].Own {
		t.Fatalf("uni-a's list: %+v, %v", own, err)
	}
	if k := nodetest.Count(t, s.Configs["uni-b"], `SELECT count(*) FROM evidence WHERE entry LIKE '%"kind":"catalogue"%' AND entry LIKE '%"reason":"received"%'`); k < 1 {
		t.Errorf("uni-b: no evidence of the catalogue received")
	}
	if m := nodetest.Scrape(t, b); !strings.Contains(m, "eduspace_catalogue_received_total ") {
		t.Errorf("uni-b's metrics lack eduspace_catalogue_received_total")
	}

	if err := a.Catalogue().Withdraw(ctx, "grades-2026"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "uni-b to drop the withdrawn dataset", func() bool {
		list, err := b.Catalogue().List(ctx)
		return err == nil && len(list) == 0
	})
	if err := a.Catalogue().Withdraw(ctx, "grades-2026"); err == nil {
		t.Error("withdrawing an offer twice: no error")
	}

	// Once the authority revokes uni-a, uni-b lists its offers no more.
	offer(t, a, "grades-2027")
	wait.Until(t, 20*time.Second, "uni-b to list grades-2027", func() bool {
		_, err := b.Catalogue().Get(ctx, "grades-2027", "uni-a")
		return err == nil
	})
	authDir := s.Dir // holds the authority's public key (nodetest)
	_, rl, err := authority.Revoke(s.AK, authDir, nodetest.SpaceID, crypto.Revocation{NodeID: "uni-a", Revoked: time.Now()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishRevocations(ctx, s.JetStream(), nodetest.SpaceID, rl); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "uni-b to drop the revoked member's offers", func() bool {
		list, err := b.Catalogue().List(ctx)
		return err == nil && len(list) == 0
	})
}

// TestCatalogueForgedPublisher: uni-c, a member, signs a catalogue that
// names uni-a as publisher. uni-b refuses it, counts it by reason and
// records it, and lists nothing.
func TestCatalogueForgedPublisher(t *testing.T) {
	s, _, b := space(t)
	ctx := context.Background()
	s.Config("uni-c") // credential and keys; the node need not run
	cKeys, err := keys.LoadKeys(s.Configs["uni-c"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	bKeys, err := keys.LoadKeys(s.Configs["uni-b"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	// uni-c's credential must be in the registry for its signature to
	// verify: publishing it is what a running node does.
	cc := s.Configs["uni-c"]
	tok, err := os.ReadFile(cc.CredentialPath())
	if err != nil {
		t.Fatal(err)
	}
	js := s.JetStream()
	kv, err := js.KeyValue(ctx, bus.Layout{Space: nodetest.SpaceID}.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "uni-c", tok); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	forged := catalogue.Message{Publisher: "uni-c", Published: now, Datasets: []catalogue.Dataset{{ID: "fake", Publisher: "uni-a",
		Title: "uni-a's data, says uni-c", RecordTypes: []string{"course_grade"}, Level: "L1",
		Rows:     catalogue.Rows{Noised: 5, Mechanism: catalogue.Mechanism, Sigma2: catalogue.Sigma2},
		Purposes: nil, Licence: "CC0", RetentionDays: 1, Contact: "a@b.example"}}}
	invalid := catalogue.Message{Publisher: "uni-c", Published: now, Datasets: []catalogue.Dataset{{ID: "Bad Id", Publisher: "uni-c"}}}
	for i, m := range []catalogue.Message{forged, invalid} {
		body, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		bKEM := bKeys.KEM.Public()
		h := crypto.Header{Suite: bKEM.Suite(), Kind: crypto.KindCatalogue, Sender: "uni-c", SenderKeyID: cKeys.Signing.Public().KeyID(),
			Recipient: "uni-b", RecipientKeyID: bKEM.KeyID(), Seq: uint64(i + 1), Created: now, Expires: now.Add(time.Hour), Count: 1}
		if _, err := rand.Read(h.ID[:]); err != nil {
			t.Fatal(err)
		}
		env, err := crypto.Seal(nil, h, bKEM, cKeys.Signing, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, bus.Layout{Space: nodetest.SpaceID}.ControlSubject("uni-b", "uni-c"), env); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 20*time.Second, "uni-b to refuse both catalogues", func() bool {
		m := nodetest.Scrape(t, b)
		return strings.Contains(m, `eduspace_catalogue_refused_total{reason="publisher_mismatch"} 1`) &&
			strings.Contains(m, `eduspace_catalogue_refused_total{reason="invalid"} 1`) &&
			strings.Contains(m, `eduspace_envelopes_refused_total{reason="bad_content"} 2`)
	})
	if k := nodetest.Count(t, s.Configs["uni-b"], `SELECT count(*) FROM evidence WHERE entry LIKE '%"kind":"refuse"%' AND entry LIKE '%"peer":"uni-c"%'`); k != 2 {
		t.Errorf("uni-b: %d refuse entries for uni-c's catalogues, want 2", k)
	}
	if list, err := b.Catalogue().List(ctx); err != nil || len(list) != 0 {
		t.Errorf("uni-b lists %+v after refusing, %v", list, err)
	}
}

// TestCatalogueMessageBounded: offers that would make the node's
// catalogue message larger than one NATS message carries are refused,
// saying what to do; what was offered before stays.
func TestCatalogueMessageBounded(t *testing.T) {
	_, a, _ := space(t)
	ctx := context.Background()
	std := schema.Default()
	offered := 0
	var err error
	for i := range 200 {
		o := &catalogue.Offer{ID: fmt.Sprintf("everything-%d", i), Title: "Every field of every record type",
			Description: strings.Repeat("A dataset with every field. ", 100), RecordTypes: std.Types(),
			Purposes: []policy.Purpose{policy.PurposeResearch}, Licence: "CC0-1.0", RetentionDays: 30, Contact: "data@uni-a.example"}
		if _, err = a.Catalogue().Offer(ctx, o); err != nil {
			break
		}
		offered++
	}
	if err == nil || !strings.Contains(err.Error(), "KiB one message to the members carries") {
		t.Fatalf("after %d offers: %v, want a refusal for size", offered, err)
	}
	own, err := a.Catalogue().Own(ctx)
	if err != nil || len(own) != offered || offered == 0 {
		t.Fatalf("%d datasets held after %d offers: %v", len(own), offered, err)
	}
	data, err := json.Marshal(catalogue.Message{Publisher: "uni-a", Published: time.Now(), Datasets: own})
	if err != nil || len(data) > catalogue.MaxMessage {
		t.Errorf("the catalogue held is %d bytes, above %d", len(data), catalogue.MaxMessage)
	}
}

// TestCatalogueAuditorOffersNothing: an auditor's node, which sends no
// envelope, refuses to offer or publish.
func TestCatalogueAuditorOffersNothing(t *testing.T) {
	s := nodetest.NewSpace(t)
	aud := s.Open(s.Member("aud-1", crypto.RoleAuditor))
	o, err := catalogue.ParseOffer([]byte(`{"id":"x","title":"t","record_types":["course_grade"],"purposes":["research"],
		"licence":"CC0-1.0","retention_days":1,"contact":"a@b.example"}`), schema.Default())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aud.Catalogue().Offer(context.Background(), o); !errors.Is(err, catalogue.ErrAuditor) {
		t.Errorf("auditor's offer: %v, want ErrAuditor", err)
	}
	if _, err := aud.Catalogue().Publish(context.Background()); !errors.Is(err, catalogue.ErrAuditor) {
		t.Errorf("auditor's publication: %v, want ErrAuditor", err)
	}
}
