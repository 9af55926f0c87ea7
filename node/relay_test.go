package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// relaySpace is a space of nodes for the relay's tests: one embedded NATS
// server on loopback, an authority key held here (package authority imports
// node), and the nodes' directories in a temp dir.
type relaySpace struct {
	t   *testing.T
	dir string
	ak  *crypto.AuthorityKey
	pub string // the authority's public key file
	emb *bus.Embedded
	now time.Time
}

const relayTestSpace = "relayspace"

func newRelaySpace(t *testing.T) *relaySpace {
	t.Helper()
	dir := t.TempDir()
	ak, err := crypto.GenerateAuthorityKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "authority.pub.pem")
	if err := crypto.WriteAuthorityPublicKey(pub, ak.Public()); err != nil {
		t.Fatal(err)
	}
	emb, err := bus.StartEmbedded(filepath.Join(dir, "nats"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return &relaySpace{t: t, dir: dir, ak: ak, pub: pub, emb: emb, now: time.Now()}
}

// config creates member id's keys and credential and returns its config,
// fast checkpoints included (the fail-closed tests wait for them).
func (s *relaySpace) config(id string) Config {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	if _, err := keys.InitKeys(nd, id, crypto.SuiteX25519); err != nil {
		s.t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(nd, keys.RequestFile))
	if err != nil {
		s.t.Fatal(err)
	}
	var req keys.Request
	if err := json.Unmarshal(data, &req); err != nil {
		s.t.Fatal(err)
	}
	tok, err := s.ak.Issue(crypto.Credential{Space: relayTestSpace, NodeID: req.NodeID, Institution: "Institution " + id,
		Role: crypto.RoleUniversity, KEMKeys: req.KEMKeys, SigningKeys: req.SigningKeys, CheckpointKeys: req.CheckpointKeys,
		IssuedAt: s.now, Expires: s.now.Add(time.Hour)})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tok), 0o600); err != nil {
		s.t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir, cfg.AuthorityKey = id, relayTestSpace, nd, s.pub
	cfg.NATS.URL = s.emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Suite = crypto.SuiteX25519.String()
	cfg.Batch.MaxRecords = 5
	cfg.Checkpoint.Interval = 100 * time.Millisecond
	cfg.Checkpoint.MaxAge = 400 * time.Millisecond
	return cfg
}

// open opens a node; the test's cleanup closes it (Close runs once).
func (s *relaySpace) open(cfg Config) *Node {
	s.t.Helper()
	n, err := Open(context.Background(), cfg, Env{})
	if err != nil {
		s.t.Fatalf("open %s: %v", cfg.NodeID, err)
	}
	s.t.Cleanup(func() { n.Close() })
	return n
}

// js connects to the space's server as the operator would.
func (s *relaySpace) js() jetstream.JetStream {
	s.t.Helper()
	nc, err := nats.Connect(s.emb.ClientURL())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	return js
}

// pair opens sender uni-a and receiver uni-b, gives uni-a relayRecords'
// records and both the agreement "relay", which permits their grades.
func (s *relaySpace) pair(edit ...func(*Config)) (a, b *Node, ag *policy.Agreement) {
	s.t.Helper()
	ctx := context.Background()
	ca := s.config("uni-a")
	for _, e := range edit {
		e(&ca)
	}
	a, b = s.open(ca), s.open(s.config("uni-b"))
	if _, err := a.Ingest(ctx, strings.NewReader(relayRecords(s.now)), ""); err != nil {
		s.t.Fatal(err)
	}
	ag = &policy.Agreement{ID: "relay", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code"}},
		MaxLevel: schema.L2, RetentionDays: 1, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, n := range []*Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			s.t.Fatal(err)
		}
	}
	return a, b, ag
}

// relayGrades is how many grades relayRecords holds.
const relayGrades = 23

// relayRecords: relayGrades adult students with one grade each.
func relayRecords(now time.Time) string {
	var b strings.Builder
	for i := range relayGrades {
		birth := now.AddDate(-20, 0, -i)
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%04d","name":"Student %d","birth_date":%q,"id_type":"resident_id","id_number":%q}`+"\n",
			i, i, birth.Format("2006-01-02"), relayResidentID("110101"+birth.Format("20060102")+"123"))
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S%04d","course_code":"CS201","course_name":"Data structures","credits":4,"term":"2025-2026-1","score":%d}`+"\n", i, 60+i)
	}
	return b.String()
}

// relayResidentID completes a resident id's 17 digits with its check digit.
func relayResidentID(body17 string) string {
	w := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, c := range body17 {
		sum += int(c-'0') * w[i]
	}
	return body17 + string("10X98765432"[sum%11])
}

// waitUntil polls cond until it holds, failing the test after 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(t *testing.T, n *Node) Status {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// block takes the audit stream away, so that no checkpoint is published,
// and waits until uni-a fails closed; the returned function gives the
// stream back.
func (s *relaySpace) block(a *Node) (unblock func()) {
	s.t.Helper()
	ctx := context.Background()
	js := s.js()
	l := bus.Layout{Space: relayTestSpace}
	if err := js.DeleteStream(ctx, l.AuditStream()); err != nil {
		s.t.Fatal(err)
	}
	waitUntil(s.t, "uni-a to fail closed", a.ckpt.SendingBlocked)
	return func() {
		s.t.Helper()
		if _, err := js.CreateOrUpdateStream(ctx, bus.AuditStreamConfig(l)); err != nil {
			s.t.Fatal(err)
		}
	}
}

// TestRelayFromCache: the relay publishes what was just written to the
// outbox from the envelope cache, without reading outbox_data, and forgets
// each envelope once it is marked sent.
func TestRelayFromCache(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades || sr.Envelopes < 2 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	waitUntil(t, "the grades at uni-b", func() bool { return status(t, b).Received == relayGrades })
	waitUntil(t, "uni-a's outbox sent", func() bool { return status(t, a).OutboxDepth == 0 })
	if got := a.envs.reads.Load(); got != 0 {
		t.Errorf("relay read %d envelopes from outbox_data, want 0", got)
	}
	if got := a.envs.hits.Load(); got < int64(sr.Envelopes) {
		t.Errorf("relay took %d envelopes from the cache, want at least %d", got, sr.Envelopes)
	}
	if k, size := a.envs.held(); k != 0 || size != 0 {
		t.Errorf("cache holds %d envelopes (%d bytes) after all were sent, want none", k, size)
	}
}

// TestRelayAfterRestart: envelopes queued before a restart, which the
// restarted node's cache never held, are read from outbox_data and
// published.
func TestRelayAfterRestart(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()
	unblock := s.block(a)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	if st := status(t, a); st.OutboxDepth != int64(sr.Envelopes) {
		t.Fatalf("outbox holds %d envelopes before the restart, want %d", st.OutboxDepth, sr.Envelopes)
	}
	cfg := a.cfg
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	unblock()
	a = s.open(cfg)
	waitUntil(t, "the grades at uni-b", func() bool { return status(t, b).Received == relayGrades })
	waitUntil(t, "uni-a's outbox sent", func() bool { return status(t, a).OutboxDepth == 0 })
	if got := a.envs.reads.Load(); got != int64(sr.Envelopes) {
		t.Errorf("relay read %d envelopes from outbox_data, want %d", got, sr.Envelopes)
	}
	if got := a.envs.hits.Load(); got != 0 {
		t.Errorf("relay took %d envelopes from the cache of a restarted node, want 0", got)
	}
}

// TestRelayEvicted: with the cache's byte bound lowered under what is
// queued, the oldest envelopes are evicted; the relay takes the rest from
// the cache, reads the evicted ones from outbox_data, and publishes all.
func TestRelayEvicted(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()
	unblock := s.block(a)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades || sr.Envelopes < 3 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	k, size := a.envs.held()
	if k != sr.Envelopes {
		t.Fatalf("cache holds %d envelopes, want the %d queued", k, sr.Envelopes)
	}
	a.envs.setLimit(size / 2)
	kept, _ := a.envs.held()
	if kept == 0 || kept >= k {
		t.Fatalf("cache holds %d of %d envelopes after halving its bound", kept, k)
	}
	unblock()
	waitUntil(t, "the grades at uni-b", func() bool { return status(t, b).Received == relayGrades })
	waitUntil(t, "uni-a's outbox sent", func() bool { return status(t, a).OutboxDepth == 0 })
	if got, want := a.envs.reads.Load(), int64(k-kept); got != want {
		t.Errorf("relay read %d envelopes from outbox_data, want the %d evicted", got, want)
	}
	if got, want := a.envs.hits.Load(), int64(kept); got != want {
		t.Errorf("relay took %d envelopes from the cache, want the %d kept", got, want)
	}
}

// TestRelayDropped: envelopes dropped from the outbox after the relay read
// them, but before it marked them attempted (here: the agreement revoked
// in between), are never published, though the cache holds them.
func TestRelayDropped(t *testing.T) {
	ctx := context.Background()
	s := newRelaySpace(t)
	a, b, ag := s.pair()

	// Watch what uni-a publishes to uni-b: one subscription sees one
	// connection's messages in the order they were published, so once the
	// revocation notice is seen, any envelope published before it was too.
	nc, err := nats.Connect(s.emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l := bus.Layout{Space: relayTestSpace}
	var mu sync.Mutex
	var deliveries, notices int
	sub, err := nc.Subscribe("eds."+relayTestSpace+".*.uni-b.uni-a", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch m.Subject {
		case l.DeliverSubject("uni-b", "uni-a"):
			deliveries++
		case l.ControlSubject("uni-b", "uni-a"):
			notices++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	type revoked struct {
		dropped int
		err     error
	}
	done := make(chan revoked, 1)
	var once sync.Once
	hook := func() {
		once.Do(func() {
			dropped, err := a.RevokeAgreement(ctx, ag.ID) // waits for the share to end
			done <- revoked{dropped, err}
		})
	}
	a.relayPageRead.Store(&hook)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != relayGrades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	var r revoked
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay read no page")
	}
	if r.err != nil || r.dropped != sr.Envelopes {
		t.Fatalf("revoke: dropped %d, %v; want the %d queued dropped", r.dropped, r.err, sr.Envelopes)
	}
	// The revocation notice leaves; what was dropped does not.
	waitUntil(t, "the revocation notice published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return notices > 0
	})
	mu.Lock()
	if deliveries != 0 {
		t.Errorf("uni-a published %d envelopes of records it had dropped", deliveries)
	}
	mu.Unlock()
	waitUntil(t, "uni-a's outbox sent", func() bool { return status(t, a).OutboxDepth == 0 })
	var queued int
	if err := a.db.R.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE kind = ?`, crypto.KindRecords).Scan(&queued); err != nil || queued != 0 {
		t.Errorf("uni-a's outbox holds %d records envelopes (%v), want none", queued, err)
	}
	if got := status(t, b).Received; got != 0 {
		t.Errorf("uni-b received %d records of dropped envelopes", got)
	}
	if got := a.envs.reads.Load(); got != 0 {
		t.Errorf("relay read %d envelopes from outbox_data, want 0", got)
	}
}

// TestEnvelopeCache: the cache's byte bound evicts oldest first, replacing
// an envelope's entry counts it once, an envelope larger than the bound is
// not kept, and removing frees its bytes.
func TestEnvelopeCache(t *testing.T) {
	var c envelopeCache
	c.setLimit(10)
	check := func(step string, want ...string) {
		t.Helper()
		size := 0
		for _, eid := range want {
			data, ok := c.get(eid)
			if !ok {
				t.Errorf("%s: %s not held", step, eid)
			}
			size += len(data)
		}
		if k, got := c.held(); k != len(want) || got != size {
			t.Errorf("%s: holds %d envelopes, %d bytes; want %d, %d", step, k, got, len(want), size)
		}
	}
	c.put("a", []byte("aaaa"))
	c.put("b", []byte("bbbb"))
	check("two put", "a", "b")
	c.put("c", []byte("cccc"))
	check("third put evicts the oldest", "b", "c")
	if _, ok := c.get("a"); ok {
		t.Error("a held after its eviction")
	}
	c.put("b", []byte("BB"))
	check("b replaced", "b", "c")
	if data, _ := c.get("b"); !bytes.Equal(data, []byte("BB")) {
		t.Errorf("b holds %q, want the replacement", data)
	}
	c.put("big", make([]byte, 11))
	check("larger than the bound: not kept, nothing evicted", "b", "c")
	c.put("d", []byte("dddd")) // 2+4+4 = 10: fits
	check("fits exactly", "b", "c", "d")
	c.remove("c", "unknown")
	check("c removed", "b", "d")
	c.setLimit(4)
	check("bound lowered", "d")

	var zero envelopeCache
	zero.put("x", make([]byte, 1<<20))
	if k, size := zero.held(); k != 1 || size != 1<<20 {
		t.Errorf("zero cache holds %d envelopes, %d bytes; want 1, %d", k, size, 1<<20)
	}
}

// TestEnvelopePlaintext: envelopes close at half the server's maximum
// message size, at most 4 MiB; a node on the embedded server (8 MiB) gets
// the most.
func TestEnvelopePlaintext(t *testing.T) {
	for _, c := range []struct {
		maxPayload int64
		want       int
	}{
		{1 << 20, 512 << 10}, // NATS's default
		{8 << 20, 4 << 20},
		{64 << 20, 4 << 20},
		{1, 1}, // an envelope holds a record whatever the server says
		{0, 512 << 10},
	} {
		if got := envelopePlaintextFor(c.maxPayload); got != c.want {
			t.Errorf("max payload %d: envelopes close at %d bytes, want %d", c.maxPayload, got, c.want)
		}
	}
	s := newRelaySpace(t)
	a := s.open(s.config("uni-a"))
	if got := a.envelopePlaintext(); got != 4<<20 {
		t.Errorf("on the embedded server envelopes close at %d bytes, want %d", got, 4<<20)
	}
}

// TestRelayPageBytes: the relay holds at most relayPageBytes of envelopes
// per page (one envelope at least), the rest waiting for the next page.
func TestRelayPageBytes(t *testing.T) {
	n := &Node{}
	n.envs.setLimit(4 * relayPageBytes)
	big := make([]byte, relayPageBytes*5/8) // shared by the entries: memory for one
	page := make([]outboxRow, 3)
	for i := range page {
		page[i] = outboxRow{id: int64(i + 1), eid: fmt.Sprintf("env-%d", i)}
		n.envs.put(page[i].eid, big)
	}
	loaded, err := n.loadEnvelopes(context.Background(), page)
	if err != nil || loaded != 2 {
		t.Fatalf("loaded %d of 3 envelopes of %d bytes each (%v), want 2: the second passes %d bytes", loaded, len(big), err, relayPageBytes)
	}
	loaded, err = n.loadEnvelopes(context.Background(), page[2:])
	if err != nil || loaded != 1 {
		t.Fatalf("loaded %d (%v), want the one envelope left", loaded, err)
	}
}
