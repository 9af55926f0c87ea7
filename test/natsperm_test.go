package test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestNATSPermissions runs a stock nats-server (Debian's package, which
// .ci/run installs) with the configuration `eduspace authority nats-config`
// generates: the exchange between two members works, and a third member
// can neither publish as another, nor to an addressee that is no member,
// nor read another's deliveries.
func TestNATSPermissions(t *testing.T) {
	natsBin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("nats-server not on PATH (apt-get install nats-server; .ci/run does): skipping the stock-server permission test")
	}
	ctx := context.Background()
	dir := t.TempDir()
	authDir := filepath.Join(dir, "authority")
	if _, err := authority.Init(authDir); err != nil {
		t.Fatal(err)
	}
	addr := stableAddr(t)
	conf, err := authority.NATSConfig(authDir, space, []string{"uni-a", "uni-b", "uni-c"}, []string{"aud-1"}, addr, filepath.Join(dir, "js"))
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nats-server.conf")
	os.WriteFile(confPath, []byte(conf), 0o644)
	srv := newProc(t, dir, "stock-nats-server", natsBin, "-c", confPath)
	srv.start()
	wait.Until(t, 20*time.Second, "nats-server to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	url := "nats://" + addr
	l := bus.Layout{Space: space}

	// A member may not create the space's stream; the operator does.
	asMember, err := bus.Connect(bus.ConnectOptions{URL: url, Credentials: authority.NATSSeedPath(authDir, "uni-a"), InboxPrefix: l.InboxPrefix("uni-a")})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(asMember)
	if _, err := bus.Ensure(ctx, js, l); err == nil {
		t.Error("a member created the space's stream")
	}
	asMember.Close()
	op, err := bus.Connect(bus.ConnectOptions{URL: url, Credentials: authority.NATSSeedPath(authDir, authority.OperatorNATSUser)})
	if err != nil {
		t.Fatal(err)
	}
	opJS, _ := jetstream.New(op)
	if _, err := bus.Ensure(ctx, opJS, l); err != nil {
		t.Fatalf("operator setup: %v", err)
	}
	op.Close()

	// The exchange works between uni-a and uni-b.
	ak, _ := authority.Load(authDir)
	openAs := func(id string, role crypto.Role) *node.Node {
		nd := filepath.Join(dir, id)
		if _, err := authority.Provision(ak, nd, id, crypto.DefaultSuite, authority.Member{Space: space, Institution: id,
			Role: role, Valid: time.Hour}, time.Now()); err != nil {
			t.Fatal(err)
		}
		cfg := node.DefaultConfig()
		cfg.NodeID, cfg.Space, cfg.DataDir = id, space, nd
		cfg.AuthorityKey = filepath.Join(authDir, authority.PublicKeyFile)
		cfg.NATS.URL, cfg.NATS.Credentials = url, authority.NATSSeedPath(authDir, id)
		cfg.Admin.Listen = "127.0.0.1:0"
		cfg.Checkpoint.Interval, cfg.Checkpoint.MaxAge = 200*time.Millisecond, time.Hour
		n, err := node.Open(ctx, cfg, node.Env{})
		if err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	open := func(id string) *node.Node { return openAs(id, crypto.RoleUniversity) }
	a, b := open("uni-a"), open("uni-b")
	data, _ := records(time.Now())
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "perm", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code"}},
		MaxLevel: schema.L2, RetentionDays: 1, ValidFrom: time.Now().Add(-time.Hour), ValidUntil: time.Now().Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 27 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b through the stock server", func() bool {
		st, _ := b.Status(ctx)
		return st.Received == 27
	})

	// uni-a's catalogue reaches uni-b: uni-a lists the members from the
	// registry's stream state and sends on the control subjects
	// (node/catalogue/CATALOGUE.md §7).
	o, err := catalogue.ParseOffer([]byte(`{"id":"perm-grades","title":"Grades","record_types":["course_grade"],
		"purposes":["learning_analytics"],"licence":"CC0-1.0","retention_days":30,"contact":"data@uni-a.example"}`), schema.Default())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Catalogue().Offer(ctx, o); err != nil {
		t.Fatal(err)
	}
	wait.UntilErr(t, 20*time.Second, "uni-a's catalogue at uni-b through the stock server", func() error {
		_, err := b.Catalogue().Get(ctx, "perm-grades", "uni-a")
		return err
	})

	// uni-a reads its own newest checkpoint back (as a node does at start,
	// to tell a restore from an older copy).
	asA, err := bus.Dial(bus.DialOptions{ConnectOptions: bus.ConnectOptions{URL: url,
		Credentials: authority.NATSSeedPath(authDir, "uni-a"), InboxPrefix: l.InboxPrefix("uni-a")}})
	if err != nil {
		t.Fatal(err)
	}
	defer asA.Close()
	wait.UntilErr(t, 20*time.Second, "uni-a's own checkpoint read back", func() error {
		last, err := asA.LastMessage(ctx, l.AuditStream(), l.AuditSubject("uni-a"))
		if err == nil && last == nil {
			err = errors.New("none yet")
		}
		return err
	})

	// uni-c, authenticated as itself, tries to act as others.
	mallory, saw := watchedConn(t, url, authDir, "uni-c")
	sawViolation := func(_, subject string) { t.Helper(); saw(subject) }
	// Publish as uni-a.
	forged := l.DeliverSubject("uni-b", "uni-a")
	mallory.Publish(forged, []byte("forged"))
	mallory.Flush()
	sawViolation("publishing as uni-a", forged)
	// Park messages for an addressee that is no member, which no consumer
	// would ever take off the stream.
	parked := l.DeliverSubject("uni-away", "uni-c")
	mallory.Publish(parked, []byte("parked"))
	mallory.Flush()
	sawViolation("publishing to an addressee that is no member", parked)
	// Read uni-b's replies (where pulled deliveries arrive).
	mallory.Subscribe(l.InboxPrefix("uni-b")+".>", func(*nats.Msg) {})
	mallory.Flush()
	sawViolation("subscribing to uni-b's inbox", l.InboxPrefix("uni-b"))
	// Write uni-a's registry entry.
	regKey := "$KV." + l.RegistryBucket() + ".uni-a"
	mallory.Publish(regKey, []byte("x"))
	mallory.Flush()
	sawViolation("overwriting uni-a's credential", regKey)
	// Create a consumer over uni-b's deliveries, under either name.
	mjs, _ := jetstream.New(mallory)
	for _, name := range []string{l.DeliverConsumer("uni-b"), l.DeliverConsumer("uni-c")} {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := mjs.CreateOrUpdateConsumer(cctx, l.ExchangeStream(), jetstream.ConsumerConfig{
			Durable: name, FilterSubject: l.DeliverFilter("uni-b"), AckPolicy: jetstream.AckExplicitPolicy})
		cancel()
		if err == nil {
			t.Errorf("uni-c created consumer %s over uni-b's deliveries", name)
		}
	}
	// uni-c's own consumer works: permissions are not simply closed.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := mjs.CreateOrUpdateConsumer(cctx, l.ExchangeStream(), jetstream.ConsumerConfig{
		Durable: l.DeliverConsumer("uni-c"), FilterSubject: l.DeliverFilter("uni-c"), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Errorf("uni-c cannot create its own consumer: %v", err)
	}
	// Read uni-a's checkpoints by direct get (its own only are for it).
	peek := "$JS.API.DIRECT.GET." + l.AuditStream() + "." + l.AuditSubject("uni-a")
	mallory.Publish(peek, nil)
	mallory.Flush()
	sawViolation("reading uni-a's checkpoints by direct get", peek)
	// Look into the exchange stream: its state per subject is who sends
	// how much to whom.
	info := "$JS.API.STREAM.INFO." + l.ExchangeStream()
	mallory.Publish(info, []byte(`{"subjects_filter":">"}`))
	mallory.Flush()
	sawViolation("reading the exchange stream's state", info)
	// Wipe the registry: a rollup of every subject on its own key.
	rollup := nats.NewMsg("$KV." + l.RegistryBucket() + ".uni-c")
	rollup.Header.Set("Nats-Rollup", "all")
	rollup.Data = []byte("x")
	if _, err := mjs.PublishMsg(ctx, rollup); err == nil {
		t.Error("uni-c's rollup of the registry was accepted")
	}
	reg, err := mjs.KeyValue(ctx, l.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"uni-a", "uni-b"} {
		if _, err := reg.Get(ctx, id); err != nil {
			t.Errorf("%s's registry entry after uni-c's rollup: %v", id, err)
		}
	}
	if st, _ := b.Status(ctx); st.Received != 27 {
		t.Errorf("uni-b holds %d records after the attempts, want 27", st.Received)
	}

	// An auditor's node runs on its credential: it reads the members'
	// checkpoints, and its NATS user is refused every envelope.
	aud := openAs("aud-1", crypto.RoleAuditor)
	wait.Until(t, 20*time.Second, "the auditor to hold uni-a's checkpoints", func() bool {
		held, err := aud.CheckpointHeld(ctx, "uni-a")
		return err == nil && held > 0
	})
	auditor, sawAud := watchedConn(t, url, authDir, "aud-1")
	for _, subject := range []string{l.DeliverSubject("uni-b", "aud-1"), l.ControlSubject("uni-a", "aud-1"),
		"$JS.API.STREAM.INFO." + l.ExchangeStream()} {
		auditor.Publish(subject, []byte("x"))
		auditor.Flush()
		sawAud(subject)
	}
	ajs, _ := jetstream.New(auditor)
	for _, filter := range []string{l.DeliverFilter("aud-1"), l.DeliverFilter("uni-b")} {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := ajs.CreateOrUpdateConsumer(cctx, l.ExchangeStream(), jetstream.ConsumerConfig{
			Durable: l.DeliverConsumer("aud-1"), FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy})
		cancel()
		if err == nil {
			t.Errorf("the auditor created a consumer of the exchange stream over %s", filter)
		}
	}
	// Nor may a member send it envelopes: it is no addressee.
	toAuditor := l.DeliverSubject("aud-1", "uni-c")
	mallory.Publish(toAuditor, []byte("x"))
	mallory.Flush()
	sawViolation("sending an envelope to the auditor", toAuditor)
}

// watchedConn connects to url as the member id, with its nkey seed from the
// authority directory and its inbox prefix, recording every permissions
// violation the server reports; sawViolation waits until one names
// subject.
func watchedConn(t *testing.T, url, authDir, id string) (nc *nats.Conn, sawViolation func(subject string)) {
	t.Helper()
	var mu sync.Mutex
	var violations []string
	nc, err := nats.Connect(url, mustNkey(t, authority.NATSSeedPath(authDir, id)),
		nats.CustomInboxPrefix(bus.Layout{Space: space}.InboxPrefix(id)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, func(subject string) {
		t.Helper()
		wait.Until(t, 20*time.Second, "a permissions violation for "+subject, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range violations {
				if strings.Contains(v, "Permissions Violation") && strings.Contains(v, subject) {
					return true
				}
			}
			return false
		})
	}
}

func mustNkey(t *testing.T, path string) nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// TestEmbeddedNATSLoopbackOnly: the embedded server has no accounts, so it
// refuses to listen beyond loopback, where anyone who reached it could
// publish and read as any member; a node configured so does not start.
func TestEmbeddedNATSLoopbackOnly(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.7:0"} {
		emb, err := bus.StartEmbedded(t.TempDir(), listen)
		if err == nil {
			emb.Shutdown()
		}
		if !errors.Is(err, bus.ErrEmbeddedNotLoopback) {
			t.Errorf("embedded server on %s: %v, want ErrEmbeddedNotLoopback", listen, err)
		}
	}
	emb, err := bus.StartEmbedded(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("embedded server on loopback: %v", err)
	}
	emb.Shutdown()

	s := newSpace(t)
	cfg := s.prepare("uni-a", crypto.SuiteX25519, s.now)
	cfg.NATS.URL, cfg.NATS.Listen = "", "0.0.0.0:0"
	if n, err := node.Open(context.Background(), cfg, node.Env{}); err == nil {
		n.Close()
		t.Fatal("a node with its embedded server on every address started")
	} else if !strings.Contains(err.Error(), "nats.listen") {
		t.Errorf("got %v, want an error naming nats.listen", err)
	}
}
