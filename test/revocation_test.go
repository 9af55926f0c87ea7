package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// testClock runs with real time plus an offset the test moves forward.
type testClock struct{ off atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) advance(d time.Duration) { c.off.Add(int64(d)) }

// logBuffer is a slog handler target tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// prepare creates a member's keys and credential (issued at now) and its
// config, without opening it.
func (s *testSpace) prepare(id string, suite crypto.SuiteID, now time.Time) node.Config {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	if _, err := keys.InitKeys(nd, id, suite); err != nil {
		s.t.Fatal(err)
	}
	s.issue(id, now)
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir = id, space, nd
	cfg.AuthorityKey = filepath.Join(s.dir, "authority", authority.PublicKeyFile)
	cfg.NATS.URL = s.emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Suite = suite.String()
	cfg.Batch.MaxRecords = 10
	s.conf[id] = cfg
	return cfg
}

// issue has the authority issue member id a credential from its current
// request file and puts it in the node's data directory.
func (s *testSpace) issue(id string, now time.Time) {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	tok, err := authority.Issue(s.ak, filepath.Join(nd, keys.RequestFile), authority.Member{
		Space: space, Institution: "Institution " + id, Role: crypto.RoleUniversity, Valid: time.Hour}, now)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tok), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// open opens a prepared member with env; the test's cleanup closes it.
func (s *testSpace) open(id string, env node.Env) *node.Node {
	s.t.Helper()
	n, err := node.Open(context.Background(), s.conf[id], env)
	if err != nil {
		s.t.Fatalf("open %s: %v", id, err)
	}
	s.t.Cleanup(func() { n.Close() })
	return n
}

// js connects to the space's server as the operator would.
func (s *testSpace) js() jetstream.JetStream {
	s.t.Helper()
	return nodetest.JetStream(s.t, s.emb.ClientURL())
}

// refusals counts a node's evidence entries of kind refuse by reason.
func refusals(t *testing.T, dir string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, e := range nodetest.Evidence(t, dir) {
		if e["kind"] == "refuse" {
			r, _ := e["reason"].(string)
			got[r]++
		}
	}
	return got
}

// agreeGrades makes gradeAgreement(id) from uni-a to uni-b and adds it at
// both.
func agreeGrades(t *testing.T, id string, now time.Time, a, b *node.Node) *policy.Agreement {
	t.Helper()
	ag := gradeAgreement(id, "uni-a", "uni-b", now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(context.Background(), ag); err != nil {
			t.Fatal(err)
		}
	}
	return ag
}

func gradeAgreement(id, from, to string, now time.Time) *policy.Agreement {
	return &policy.Agreement{
		ID: id, Provider: from, Recipient: to, Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(2 * time.Hour),
	}
}

// TestRevocation: the authority revokes a sender's signing key, then a
// whole recipient node, publishing each list on the space. The receiving
// node refuses the revoked sender's envelopes (counted as `revoked`, in
// the evidence log, never stored), the sender may not share to the
// revoked recipient, and lists that are older or not signed by the root
// key are ignored.
func TestRevocation(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	logs := map[string]*logBuffer{}
	nodes := map[string]*node.Node{}
	for _, id := range []string{"uni-a", "uni-b"} {
		s.prepare(id, crypto.SuiteX25519, s.now)
		logs[id] = &logBuffer{}
		nodes[id] = s.open(id, node.Env{Logger: logs[id].logger()})
	}
	a, b := nodes["uni-a"], nodes["uni-b"]
	if a.RevocationSerial() != 0 {
		t.Fatalf("a fresh space holds revocation list %d", a.RevocationSerial())
	}
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	for _, n := range nodes {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	js := s.js()
	authDir := filepath.Join(s.dir, "authority")
	publish := func(data []byte) {
		t.Helper()
		if err := authority.PublishRevocations(ctx, js, space, data); err != nil {
			t.Fatal(err)
		}
	}
	waitSerial := func(want uint64) {
		t.Helper()
		wait.Until(t, 20*time.Second, fmt.Sprintf("every node to hold revocation list %d", want), func() bool {
			return a.RevocationSerial() == want && b.RevocationSerial() == want
		})
	}

	// 1. uni-a's signing key is revoked (the key, not the node).
	aKeys, err := keys.LoadKeys(s.conf["uni-a"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	sigID := aKeys.Signing.Public().KeyID()
	rl1, list1, err := authority.Revoke(s.ak, authDir, space, crypto.Revocation{
		NodeID: "uni-a", KeyID: sigID, Revoked: time.Now().Add(-time.Minute), Reason: "key compromised"}, time.Now())
	if err != nil || rl1.Serial != 1 {
		t.Fatalf("revoke: serial %v, %v", rl1, err)
	}
	publish(list1)
	waitSerial(1)

	// uni-a shares nothing under its revoked key, and says why.
	if _, err := a.Share(ctx, ag.ID); !errors.Is(err, registry.ErrRevoked) || !strings.Contains(err.Error(), "this node") {
		t.Fatalf("share from a node whose signing key is revoked: got %v, want ErrRevoked naming this node", err)
	}
	// An envelope signed with the revoked key all the same (by a copy of
	// the key, say) is refused by uni-b, counted and recorded.
	bKeys, err := keys.LoadKeys(s.conf["uni-b"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := crypto.Header{Suite: crypto.SuiteX25519, Kind: crypto.KindRecords, Sender: "uni-a", SenderKeyID: sigID,
		Recipient: "uni-b", RecipientKeyID: bKeys.KEM.Public().KeyID(), Seq: 1, Created: now, Expires: now.Add(time.Hour),
		Agreement: ag.ID, Purpose: string(ag.Purpose), RecordType: "course_grade", Count: 1, Level: "L2"}
	rand.Read(h.ID[:])
	env, err := crypto.Seal(nil, h, bKeys.KEM.Public(), aKeys.Signing, []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdefghijkl"}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a"), env); err != nil {
		t.Fatal(err)
	}
	want := `eduspace_envelopes_refused_total{reason="revoked"} 1` + "\n"
	wait.Until(t, 20*time.Second, "uni-b to refuse the envelope as revoked", func() bool { return strings.Contains(nodetest.Scrape(t, b), want) })
	if st, _ := b.Status(ctx); st.Received != 0 {
		t.Errorf("uni-b stored %d records from a revoked key", st.Received)
	}
	if got := refusals(t, s.conf["uni-b"].DataDir)["revoked"]; got != 1 {
		t.Errorf("uni-b's evidence log records %d revoked refusals, want 1", got)
	}

	// 2. The whole of uni-b is revoked: uni-a refuses to seal to it.
	rl2, list2, err := authority.Revoke(s.ak, authDir, space, crypto.Revocation{
		NodeID: "uni-b", Revoked: time.Now().Add(-time.Second), Reason: "left the space"}, time.Now())
	if err != nil || rl2.Serial != 2 || len(rl2.Entries) != 2 {
		t.Fatalf("revoke: %+v, %v; want serial 2 carrying both entries", rl2, err)
	}
	if _, _, err := authority.Revoke(s.ak, authDir, space, crypto.Revocation{NodeID: "uni-b", Revoked: time.Now()}, time.Now()); err == nil {
		t.Error("revoking uni-b twice was not refused")
	}
	publish(list2)
	waitSerial(2)
	if _, err := a.Share(ctx, ag.ID); !errors.Is(err, registry.ErrRevoked) {
		t.Fatalf("share to a revoked recipient: got %v, want ErrRevoked", err)
	}
	// uni-b, revoked, shares nothing itself, says why, and is not ready.
	back := gradeAgreement("b-to-a", "uni-b", "uni-a", time.Now())
	if err := b.AddAgreement(ctx, back); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Share(ctx, back.ID); !errors.Is(err, registry.ErrRevoked) || !strings.Contains(err.Error(), "this node") {
		t.Fatalf("share by the revoked node: got %v, want ErrRevoked naming this node", err)
	}
	if p := b.Problems(); len(p) == 0 || !strings.Contains(strings.Join(p, "; "), "revoked") {
		t.Errorf("the revoked node's problems: %q, want its revocation", p)
	}
	// uni-a's status page shows uni-b revoked, not valid.
	resp, err := http.Get("http://" + a.AdminAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "revoked by the space authority") {
		t.Error("uni-a's status page does not show uni-b revoked")
	}

	// 3. An older list (a replay) and a list signed by another root key are
	// ignored: the nodes keep list 2.
	otherRoot, err := crypto.GenerateAuthorityKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := otherRoot.SignRevocations(crypto.RevocationList{Space: space, Serial: 99, Issued: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(list2)
	tampered[len(tampered)-1] ^= 1
	for _, l := range [][]byte{list1, forged, tampered} {
		publish(l)
	}
	wait.Until(t, 20*time.Second, "three ignored lists logged at each node", func() bool {
		return logs["uni-a"].count("revocation list ignored") == 3 && logs["uni-b"].count("revocation list ignored") == 3
	})
	if a.RevocationSerial() != 2 || b.RevocationSerial() != 2 {
		t.Fatalf("serials after ignored lists: a %d, b %d; want 2", a.RevocationSerial(), b.RevocationSerial())
	}
	if _, err := a.Share(ctx, ag.ID); !errors.Is(err, registry.ErrRevoked) {
		t.Fatalf("share to a revoked recipient after a replayed older list: got %v, want ErrRevoked", err)
	}
	if strings.Contains(logs["uni-b"].buf.String(), "key compromised") {
		t.Error("a revocation reason reached the log")
	}

	// 4. The newest list is kept in the data directory: a restarted node
	// holds it before it reads the space, and never goes back to an older
	// one (the bucket now holds the tampered list last).
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2 := s.open("uni-a", node.Env{})
	if a2.RevocationSerial() != 2 {
		t.Fatalf("restarted node holds list %d, want 2", a2.RevocationSerial())
	}
	if _, err := a2.Share(ctx, ag.ID); !errors.Is(err, registry.ErrRevoked) {
		t.Fatalf("share to a revoked recipient after restart: got %v, want ErrRevoked", err)
	}
}

// TestRevocationPermissions runs a stock nats-server with the generated
// configuration: the operator publishes the revocation list, a member
// reads and watches it (as a node does, through its own watcher) but
// cannot write it; another member can neither delete that watcher, nor
// take over its name, nor open watchers of other names.
func TestRevocationPermissions(t *testing.T) {
	natsBin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("nats-server not on PATH: skipping the stock-server permission test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	authDir := filepath.Join(dir, "authority")
	if _, err := authority.Init(authDir); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(authDir)
	if err != nil {
		t.Fatal(err)
	}
	addr := stableAddr(t)
	conf, err := authority.NATSConfig(authDir, space, []string{"uni-a", "uni-b"}, nil, addr, filepath.Join(dir, "js"))
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nats-server.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	srv := newProc(t, dir, "stock-nats-server", natsBin, "-c", confPath)
	srv.start()
	url := "nats://" + addr
	l := bus.Layout{Space: space}
	var op *nats.Conn
	wait.Until(t, 20*time.Second, "nats-server to accept the operator", func() bool {
		op, err = bus.Connect(bus.ConnectOptions{URL: url, Credentials: authority.NATSSeedPath(authDir, authority.OperatorNATSUser)})
		return err == nil
	})
	defer op.Close()
	opJS, _ := jetstream.New(op)
	if _, err := bus.Ensure(ctx, opJS, l); err != nil {
		t.Fatalf("operator setup: %v", err)
	}
	_, list1, err := authority.Revoke(ak, authDir, space, crypto.Revocation{NodeID: "uni-z", Revoked: time.Now()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishRevocations(ctx, opJS, space, list1); err != nil {
		t.Fatalf("operator publishes the list: %v", err)
	}

	member, memberSaw := watchedConn(t, url, authDir, "uni-a")
	mjs, _ := jetstream.New(member)
	kv, err := bus.Revocations(ctx, mjs, l)
	if err != nil {
		t.Fatalf("member looks up the revocation bucket: %v", err)
	}
	e, err := kv.Get(ctx, bus.RevocationKey)
	if err != nil || !bytes.Equal(e.Value(), list1) {
		t.Fatalf("member reads the list: %v", err)
	}
	// uni-a watches the bucket as its node does, through its own watcher.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan bus.KVChange, 8)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- bus.Watch(wctx, mjs, l.RevocationBucket(), l.Watcher("uni-a"), "", func(c bus.KVChange) { updates <- c })
	}()
	next := func(what string) bus.KVChange {
		t.Helper()
		select {
		case c := <-updates:
			return c
		case err := <-watchDone:
			t.Fatalf("watch ended before %s: %v", what, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("watch: %s did not arrive", what)
		}
		return bus.KVChange{}
	}
	if c := next("list 1"); c.Key != bus.RevocationKey || !bytes.Equal(c.Value, list1) {
		t.Fatalf("watch: first update is %q, not list 1", c.Key)
	}

	// uni-b can neither delete uni-a's watcher, nor take over its name,
	// nor open watchers of other names; its own works.
	mallory, sawViolation := watchedConn(t, url, authDir, "uni-b")
	bjs, _ := jetstream.New(mallory)
	rstream := "KV_" + l.RevocationBucket()
	attempt := func(what string, do func(context.Context) error) {
		t.Helper()
		actx, acancel := context.WithTimeout(ctx, time.Second)
		defer acancel()
		if err := do(actx); err == nil {
			t.Errorf("uni-b could %s", what)
		}
	}
	attempt("delete uni-a's watcher", func(ctx context.Context) error {
		return bjs.DeleteConsumer(ctx, rstream, l.Watcher("uni-a"))
	})
	for _, name := range []string{l.Watcher("uni-a"), "watch_x"} {
		attempt("create watcher "+name, func(ctx context.Context) error {
			_, err := bjs.CreateOrUpdateConsumer(ctx, rstream, jetstream.ConsumerConfig{Name: name,
				FilterSubject: "$KV." + l.RevocationBucket() + ".>", AckPolicy: jetstream.AckExplicitPolicy})
			return err
		})
	}
	sawViolation("$JS.API.CONSUMER.DELETE." + rstream + "." + l.Watcher("uni-a"))
	sawViolation("$JS.API.CONSUMER.CREATE." + rstream + ".watch_x.")
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	if _, err := bjs.CreateConsumer(bctx, rstream, jetstream.ConsumerConfig{Name: l.Watcher("uni-b"),
		FilterSubject: "$KV." + l.RevocationBucket() + ".>", AckPolicy: jetstream.AckExplicitPolicy,
		InactiveThreshold: time.Minute}); err != nil {
		t.Errorf("uni-b cannot open its own watcher: %v", err)
	}

	// uni-a's watcher, untouched, takes the next list.
	_, list2, err := authority.Revoke(ak, authDir, space, crypto.Revocation{NodeID: "uni-y", Revoked: time.Now()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishRevocations(ctx, opJS, space, list2); err != nil {
		t.Fatal(err)
	}
	if c := next("list 2"); c.Key != bus.RevocationKey || !bytes.Equal(c.Value, list2) {
		t.Fatalf("watch: second update is %q, not list 2", c.Key)
	}

	// The member cannot write the list.
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if _, err := kv.Put(pctx, bus.RevocationKey, []byte("forged")); err == nil {
		t.Error("a member wrote the revocation list")
	}
	memberSaw("$KV." + l.RevocationBucket())
	if e, err := kv.Get(ctx, bus.RevocationKey); err != nil || !bytes.Equal(e.Value(), list2) {
		t.Fatalf("after the member's attempt the bucket does not hold list 2: %v", err)
	}
}
