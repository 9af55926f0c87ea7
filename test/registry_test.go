package test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/test/wait"
)

// TestRegistryEntryRestored: a member deletes, then overwrites, another
// member's registry entry (the embedded server enforces no permissions;
// TestNATSPermissions shows a stock server refusing both, and the rollup
// that would wipe every entry). The member whose entry it is puts it back,
// and records still reach it.
func TestRegistryEntryRestored(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	js := s.js()
	reg, err := js.KeyValue(ctx, bus.Layout{Space: space}.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	orig, err := reg.Get(ctx, "uni-b")
	if err != nil {
		t.Fatal(err)
	}
	restored := func(what string) {
		t.Helper()
		wait.Until(t, 20*time.Second, "uni-b to put its entry back after "+what, func() bool {
			e, err := reg.Get(ctx, "uni-b")
			return err == nil && string(e.Value()) == string(orig.Value())
		})
	}
	if err := reg.Delete(ctx, "uni-b"); err != nil {
		t.Fatal(err)
	}
	restored("a delete")
	if _, err := reg.Put(ctx, "uni-b", []byte("not a credential")); err != nil {
		t.Fatal(err)
	}
	restored("an overwrite")

	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted == 0 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == int64(sr.Permitted)
	})
}

// TestAuditStreamBounded: a member cannot fill the hub's disk through the
// audit stream, which every member may publish its checkpoints to: a
// message larger than a checkpoint is refused, and each node's subject
// keeps its newest bus.AuditPerNode messages only.
func TestAuditStreamBounded(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	s.member("uni-a", crypto.SuiteX25519)
	js := s.js()
	l := bus.Layout{Space: space}
	if _, err := js.Publish(ctx, l.AuditSubject("uni-c"), make([]byte, bus.AuditMaxMsg+1)); err == nil {
		t.Error("a message larger than a checkpoint reached the audit stream")
	}
	if _, err := js.Publish(ctx, l.AuditSubject("uni-c"), make([]byte, 4<<10)); err != nil {
		t.Errorf("a checkpoint-sized message: %v", err)
	}
	st, err := js.Stream(ctx, l.AuditStream())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxMsgsPerSubject != bus.AuditPerNode || cfg.MaxMsgSize != bus.AuditMaxMsg {
		t.Errorf("audit stream keeps %d messages per subject of at most %d bytes, want %d of %d",
			cfg.MaxMsgsPerSubject, cfg.MaxMsgSize, bus.AuditPerNode, bus.AuditMaxMsg)
	}
}

// TestExchangeStreamBounded: a member cannot grow the hub's store without
// end through the exchange stream either. The stream holds at most
// bus.ExchangePerPair messages under one subject (one sender, one
// addressee) and refuses the next rather than drop one waiting; other
// pairs are not held up. The bound is a million: the test lowers it on the
// stream to a hundred to see it work. TestNATSPermissions shows the stock
// server refusing subjects of addressees that are no members.
func TestExchangeStreamBounded(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	s.member("uni-a", crypto.SuiteX25519)
	js := s.js()
	l := bus.Layout{Space: space}
	st, err := js.Stream(ctx, l.ExchangeStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxMsgsPerSubject != bus.ExchangePerPair || !cfg.DiscardNewPerSubject || cfg.Discard != jetstream.DiscardNew {
		t.Fatalf("exchange stream keeps %d messages per subject (discard %v, new per subject %v), want %d, refusing new ones",
			cfg.MaxMsgsPerSubject, cfg.Discard, cfg.DiscardNewPerSubject, bus.ExchangePerPair)
	}
	const bound = 100
	cfg.MaxMsgsPerSubject = bound
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	parked := l.DeliverSubject("uni-away", "uni-c")
	for i := range bound {
		if _, err := js.Publish(ctx, parked, []byte("x"), jetstream.WithMsgID(fmt.Sprintf("parked-%d", i))); err != nil {
			t.Fatalf("message %d of %d under one subject refused: %v", i+1, bound, err)
		}
	}
	if _, err := js.Publish(ctx, parked, []byte("one more")); err == nil {
		t.Errorf("message %d under one subject accepted", bound+1)
	}
	if _, err := js.Publish(ctx, l.DeliverSubject("uni-a", "uni-c"), []byte("x")); err != nil {
		t.Errorf("another pair held up: %v", err)
	}
}

// TestSpacePolicyMinimumSuite: once the authority's signed space policy
// sets X-Wing as the weakest suite (taken by a running node as it is
// published), a member's envelope sealed with the classical X25519 suite
// is refused (`suite_below_minimum`), counted and
// recorded, and a node configured for X25519 no longer starts.
func TestSpacePolicyMinimumSuite(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteXWing)
	js := s.js()
	_, data, err := authority.SetSpacePolicy(s.ak, filepath.Join(s.dir, "authority"), space, crypto.SuiteXWing, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishSpacePolicy(ctx, js, space, data); err != nil {
		t.Fatal(err)
	}

	// uni-b, running, takes the policy as it is published; uni-a,
	// classical, sends it an envelope sealed with X25519.
	wait.UntilErr(t, 20*time.Second, "uni-b to take the space policy", func() error {
		st, err := b.Status(ctx)
		if err != nil {
			return err
		}
		if st.SpacePolicy != 1 || st.MinSuite != crypto.SuiteXWing.String() {
			return fmt.Errorf("uni-b holds space policy %d (minimum %q)", st.SpacePolicy, st.MinSuite)
		}
		return nil
	})
	aKeys, err := keys.LoadKeys(s.conf["uni-a"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	classic, err := crypto.GenerateKEMKey(crypto.SuiteX25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := crypto.Header{Suite: crypto.SuiteX25519, Kind: crypto.KindRecords, Sender: "uni-a", SenderKeyID: aKeys.Signing.Public().KeyID(),
		Recipient: "uni-b", RecipientKeyID: classic.Public().KeyID(), Seq: 1, Created: now, Expires: now.Add(time.Hour),
		Agreement: "any", Purpose: "research", RecordType: "course_grade", Count: 1, Level: "L2"}
	if _, err := rand.Read(h.ID[:]); err != nil {
		t.Fatal(err)
	}
	env, err := crypto.Seal(nil, h, classic.Public(), aKeys.Signing, []byte(`{"type":"course_grade","student_id":"tk_x"}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a"), env); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{envelope.RefuseWeakSuite: 1}
	wait.Until(t, 20*time.Second, "uni-b to refuse the classical envelope", func() bool {
		return sameCounts(refusedCounts(t, b), want)
	})
	if got := refusals(t, s.conf["uni-b"].DataDir); !sameCounts(got, want) {
		t.Errorf("uni-b's evidence of refusals: %v, want %v", got, want)
	}

	// uni-a, configured for X25519, does not start again.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := node.Open(ctx, s.conf["uni-a"], node.Env{}); err == nil {
		n.Close()
		t.Fatal("a node configured for a suite below the space's minimum started")
	} else if !strings.Contains(err.Error(), "below the space's minimum") {
		t.Errorf("got %v, want an error naming the space's minimum", err)
	}
}
