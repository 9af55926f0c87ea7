package test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/test/wait"
)

// outboxKeys returns the recipient KEM key id of every records envelope in
// a node's outbox, oldest first.
func outboxKeys(t *testing.T, dir string) []string {
	t.Helper()
	var ids []string
	for _, data := range outboxRecordEnvelopes(t, dir) {
		env, err := crypto.ParseEnvelope(data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, env.Header.RecipientKeyID)
	}
	return ids
}

// gradeRecords are n course grades of students S<from>…, valid records of
// the grading standard, each after its student's record (an adult's).
func gradeRecords(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		b.WriteString(knownStudents(fmt.Sprintf("S%04d", i)))
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S%04d","course_code":"CS301","course_name":"编译原理","credits":3,"term":"2025-2026-2","score":%d}`+"\n", i, 70+i%30)
	}
	return b.String()
}

// TestKeyRotation rotates uni-b's keys in the three steps of
// CREDENTIALS.md §5 while uni-a sends to it: envelopes sealed to the old
// KEM key before the switch still open after the new credential is in the
// registry; after the switch uni-a seals to the new key, uni-b signs its
// receipts with its new signing key, and retiring leaves only the new keys
// in the request.
func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	var clk testClock
	env := node.Env{Now: clk.now}
	s.prepare("uni-a", crypto.DefaultSuite, s.now)
	cfgB := s.prepare("uni-b", crypto.DefaultSuite, s.now)
	a := s.open("uni-a", env)
	b := s.open("uni-b", env)
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	k1, err := keys.LoadKeys(cfgB.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	oldKEM := k1.KEM.Public().KeyID()

	// uni-b is down while uni-a shares: the envelopes, sealed to uni-b's
	// current (generation 1) key, wait in the stream.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ingest(ctx, strings.NewReader(gradeRecords(0, 15)), ""); err != nil {
		t.Fatal(err)
	}
	sr1, err := a.Share(ctx, ag.ID)
	if err != nil || sr1.Permitted != 15 {
		t.Fatalf("share before rotation: %+v, %v", sr1, err)
	}
	wait.Until(t, 20*time.Second, "uni-a to publish", func() bool { return strings.Contains(nodetest.Scrape(t, a), "eduspace_outbox_depth 0\n") })

	// Step 1, announce: generation 2 is created; the request lists [1, 2].
	rot, err := node.RotateKeys(cfgB, keys.RotateAnnounce, clk.now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Created != 2 || !slices.Equal(rot.Listed, []int{1, 2}) {
		t.Fatalf("announce: %+v, want generation 2 created and [1 2] listed", rot)
	}
	if again, err := node.RotateKeys(cfgB, keys.RotateAnnounce, clk.now(), false); err != nil || again.Created != 0 || !slices.Equal(again.Listed, []int{1, 2}) {
		t.Fatalf("announce again before the credential changed: %+v, %v; want no new keys", again, err)
	}
	for _, f := range keys.GenerationFiles(cfgB.DataDir, 2) {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}
	s.issue("uni-b", clk.now())
	// Step 2, switch: the request lists [2, 1].
	rot, err = node.RotateKeys(cfgB, keys.RotateSwitch, clk.now(), false)
	if err != nil || !slices.Equal(rot.Listed, []int{2, 1}) {
		t.Fatalf("switch: %+v, %v; want [2 1]", rot, err)
	}
	s.issue("uni-b", clk.now())
	k2, err := keys.LoadKeys(cfgB.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k2.Generations) != 2 {
		t.Fatalf("uni-b holds %d generations, want 2", len(k2.Generations))
	}
	newKEM := k2.Generations[1].KEM.Public().KeyID()

	// uni-b restarts with credential [2, 1] (and publishes it in the
	// registry): the waiting envelopes, sealed to generation 1, open.
	clk.advance(10 * time.Second)
	b = s.open("uni-b", env)
	wait.Until(t, 20*time.Second, "the 15 records sealed to the old key at uni-b", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 15
	})
	// Its receipts are signed with the new signing key, which uni-a's
	// cached copy of the credential does not list yet: uni-a reads the
	// registry again rather than refusing them.
	wait.Until(t, 20*time.Second, "receipts for the old envelopes at uni-a", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), fmt.Sprintf("eduspace_receipts_received_total %d\n", sr1.Envelopes))
	})
	// Once its cached copy has expired, uni-a seals to the new current key.
	clk.advance(2 * time.Minute)

	// New envelopes go to the new key.
	if _, err := a.Ingest(ctx, strings.NewReader(gradeRecords(100, 12)), ""); err != nil {
		t.Fatal(err)
	}
	sr2, err := a.Share(ctx, ag.ID)
	if err != nil || sr2.Permitted != 12 {
		t.Fatalf("share after rotation: %+v, %v", sr2, err)
	}
	wait.Until(t, 20*time.Second, "all 27 records at uni-b", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 27
	})
	outKeys := outboxKeys(t, s.conf["uni-a"].DataDir)
	if len(outKeys) != sr1.Envelopes+sr2.Envelopes {
		t.Fatalf("uni-a's outbox holds %d envelopes, want %d", len(outKeys), sr1.Envelopes+sr2.Envelopes)
	}
	for i, id := range outKeys {
		want := oldKEM
		if i >= sr1.Envelopes {
			want = newKEM
		}
		if id != want {
			t.Errorf("envelope %d sealed to %s, want %s", i, id, want)
		}
	}
	wait.Until(t, 20*time.Second, "every receipt at uni-a", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), fmt.Sprintf("eduspace_receipts_received_total %d\n", sr1.Envelopes+sr2.Envelopes))
	})
	for name, n := range map[string]*node.Node{"uni-a": a, "uni-b": b} {
		for _, line := range strings.Split(nodetest.Scrape(t, n), "\n") {
			if strings.HasPrefix(line, "eduspace_envelopes_refused_total{") && !strings.HasSuffix(line, " 0") {
				t.Errorf("%s refused envelopes during the rotation: %s", name, line)
			}
		}
	}

	// Step 3, retire: the request lists generation 2 alone; generation 1's
	// files are named for deletion, not deleted.
	// Not before the envelopes sealed to generation 1 may have expired:
	// refused, with the time it is allowed.
	if _, err := node.RotateKeys(cfgB, keys.RotateRetire, clk.now(), false); err == nil || !strings.Contains(err.Error(), "retire refused") {
		t.Fatalf("retire within the overlap: %v, want it refused with the time left", err)
	}
	// (A space whose envelopes live ten minutes, so that the credential,
	// valid for an hour, is still valid then.)
	cfgB.EnvelopeTTL, cfgB.ClockSkew = 10*time.Minute, time.Minute
	clk.advance(cfgB.EnvelopeTTL + cfgB.ClockSkew + 2*time.Minute)
	rot, err = node.RotateKeys(cfgB, keys.RotateRetire, clk.now(), false)
	if err != nil || !slices.Equal(rot.Listed, []int{2}) || !slices.Equal(rot.Unlisted, []int{1}) {
		t.Fatalf("retire: %+v, %v; want [2] listed, [1] unlisted", rot, err)
	}
	if _, err := os.Stat(keys.GenerationFiles(cfgB.DataDir, 1)[0]); err != nil {
		t.Errorf("retire deleted generation 1's key: %v", err)
	}
	// A node refuses to start on a key file others can read.
	if err := os.Chmod(keys.GenerationFiles(cfgB.DataDir, 2)[1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.LoadKeys(cfgB.DataDir); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Errorf("LoadKeys with a readable signing key of generation 2: %v, want refused", err)
	}
}
