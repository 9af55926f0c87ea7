package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
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
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/test/wait"
)

// The NATS configurations in deploy/nats run here as shipped, with only
// their addresses, store directories and the accounts file replaced.

// hubConf renders deploy/nats/hub-<i>.conf for loopback ports.
func hubConf(t *testing.T, i int, client, route, leaf, monitor []string, store string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "nats", fmt.Sprintf("hub-%d.conf", i)))
	if err != nil {
		t.Fatal(err)
	}
	repl := []string{
		"0.0.0.0:4222", client[i-1],
		"0.0.0.0:6222", route[i-1],
		"0.0.0.0:7422", leaf[i-1],
		"127.0.0.1:8222", monitor[i-1],
		"/var/lib/nats", store,
		"max_file_store: 200GB", "max_file_store: 1GB",
	}
	for j := 1; j <= 3; j++ {
		repl = append(repl, fmt.Sprintf("hub-%d.eduspace.example:6222", j), route[j-1])
	}
	return mustReplace(t, string(data), repl...)
}

// leafConf renders deploy/nats/leaf-university.conf: the leaf's client
// address, its store, and the hub's leaf-node addresses (here the link
// proxies). Without a JetStream domain the leaf runs without JetStream.
func leafConf(t *testing.T, client, monitor string, hubLeaf []string, store string, withJetStream bool) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "nats", "leaf-university.conf"))
	if err != nil {
		t.Fatal(err)
	}
	repl := []string{"127.0.0.1:4222", client, "127.0.0.1:8222", monitor, "/var/lib/nats", store,
		"max_file_store: 50GB", "max_file_store: 1GB"}
	for j := 1; j <= 3; j++ {
		repl = append(repl, fmt.Sprintf("hub-%d.eduspace.example:7422", j), hubLeaf[j-1])
	}
	conf := mustReplace(t, string(data), repl...)
	if !withJetStream {
		// Stand-in for nats.domain in a node that lacks it: no JetStream on
		// the leaf, and the JetStream API mapped to the hub's domain (a
		// leaf link passes JetStream traffic only in domain form).
		conf = regexp.MustCompile(`(?s)\njetstream \{.*?\n\}\n`).ReplaceAllString(conf, "\n")
		conf += "\nmappings {\n  \"$JS.API.>\": \"$JS.hub.API.>\"\n  \"$KV.>\": \"$JS.hub.API.$KV.>\"\n}\n"
	}
	return conf
}

// mustReplace replaces each old string, which must occur, by its new one.
func mustReplace(t *testing.T, s string, oldnew ...string) string {
	t.Helper()
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("deploy config lacks %q: update the test with the config", oldnew[i])
		}
		s = strings.ReplaceAll(s, oldnew[i], oldnew[i+1])
	}
	return s
}

// nodeHasNATSDomain reports whether node.Config has nats.domain, the
// JetStream domain through which a node behind a leaf server reaches the
// hub's streams.
func nodeHasNATSDomain() bool {
	t := reflect.TypeOf(node.NATSConfig{})
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == "domain" {
			return true
		}
	}
	return false
}

// linkProxy forwards TCP connections to target until it is cut: then it
// closes every open connection and refuses new ones until restored. It
// stands for the network between a university's leaf server and a hub
// server.
type linkProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
	closed bool
}

func newLinkProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

func (p *linkProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.cut || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			continue
		}
		for _, dir := range [][2]net.Conn{{c, up}, {up, c}} {
			p.wg.Go(func() {
				io.Copy(dir[0], dir[1])
				dir[0].Close()
				dir[1].Close()
				p.mu.Lock()
				delete(p.conns, dir[0])
				delete(p.conns, dir[1])
				p.mu.Unlock()
			})
		}
	}
}

func (p *linkProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

// setCut cuts the link (closing what is open) or restores it.
func (p *linkProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

func (p *linkProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// clusterNode creates a node's keys, credential and config file, with
// natsYAML as the config's nats section.
func clusterNode(t *testing.T, dir, bin string, ak *crypto.AuthorityKey, space, id, natsYAML string, maxRecords int) *nodeProc {
	t.Helper()
	nd := filepath.Join(dir, id)
	ks, err := keys.InitKeys(nd, id, crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := authority.Issue(ak, filepath.Join(nd, keys.RequestFile), authority.Member{
		Space: space, Institution: id, Role: crypto.RoleUniversity, Valid: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tok), 0o644)
	admin := stableAddr(t)
	cfg := fmt.Sprintf("node_id: %s\nspace: %s\ndata_dir: %s\nauthority_public_key: %s\nnats:\n%sadmin:\n  listen: %s\nbatch:\n  max_records: %d\nlog_level: warn\n",
		id, space, nd, filepath.Join(dir, "authority", authority.PublicKeyFile), natsYAML, admin, maxRecords)
	cfgPath := filepath.Join(dir, id+".yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	return &nodeProc{proc: newProc(t, dir, id, bin, "node", "run", "--config", cfgPath), id: id, dir: nd, admin: admin, token: ks.AdminToken}
}

var stablePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// stableAddr is a free loopback address whose port lies below Linux's
// ephemeral range (32768-60999), so that no outgoing connection takes it
// between now and the moment a server process binds it: a cluster's
// servers dial each other's route ports while their peers are starting.
// A port is handed out once per test binary: the listener is closed at
// once, so without the record two calls could return the same free port.
func stableAddr(t *testing.T) string {
	t.Helper()
	stablePorts.Lock()
	defer stablePorts.Unlock()
	for range 200 {
		port := 20000 + rand.IntN(12000)
		if stablePorts.given[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			stablePorts.given[port] = true
			return addr
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return ""
}

func waitListening(t *testing.T, what, addr string) {
	t.Helper()
	wait.Until(t, 20*time.Second, what, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestClusterLeaf runs the hub of deploy/nats (three nats-server processes
// in one JetStream cluster) and a university's leaf server from the same
// folder. The space's streams and registry are created at the hub with
// replicas 3, as the space operator does. The sender, uni-s, is attached
// through the leaf server; the recipient, uni-r, connects to the hub
// directly. During an exchange of 2,700 records the hub server leading
// the exchange stream is killed (and later restarted), and the leaf's link
// to the hub is cut and restored. Every permitted record must arrive
// exactly once: the sets are compared, and the row count must equal the
// set size.
func TestClusterLeaf(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server NATS cluster with a leaf node, in processes: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>9))
	bin, natsBin := binaries(t)
	dir := t.TempDir()
	const space = "cluster"
	l := bus.Layout{Space: space}

	// The hub.
	var client, route, leafPort, monitor []string
	for range 3 {
		client, route, leafPort, monitor = append(client, stableAddr(t)), append(route, stableAddr(t)),
			append(leafPort, stableAddr(t)), append(monitor, stableAddr(t))
	}
	hubs := map[string]*proc{}
	for i := 1; i <= 3; i++ {
		hd := filepath.Join(dir, fmt.Sprintf("hub-%d", i))
		os.MkdirAll(hd, 0o700)
		conf := hubConf(t, i, client, route, leafPort, monitor, filepath.Join(hd, "js"))
		// No accounts: this test is about faults; TestNATSPermissions covers
		// the generated accounts on a single server.
		os.WriteFile(filepath.Join(hd, "accounts.conf"), []byte("# test: no accounts\n"), 0o644)
		path := filepath.Join(hd, fmt.Sprintf("hub-%d.conf", i))
		os.WriteFile(path, []byte(conf), 0o644)
		name := fmt.Sprintf("hub-%d", i)
		hubs[name] = newProc(t, dir, name, natsBin, "-c", path)
		hubs[name].start()
	}
	for i := range 3 {
		waitListening(t, fmt.Sprintf("hub-%d to listen", i+1), client[i])
	}
	hubURL := "nats://" + strings.Join(client, ",nats://")

	// The operator creates the space's streams and bucket with replicas 3
	// (members' nodes only look them up).
	op, err := nats.Connect(hubURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	opJS, _ := jetstream.New(op)
	streams := []jetstream.StreamConfig{bus.ExchangeStreamConfig(l), bus.AuditStreamConfig(l)}
	for _, cfg := range streams {
		cfg.Replicas = 3
		// Refused while the cluster is still electing its meta leader.
		wait.UntilErr(t, 60*time.Second, "stream "+cfg.Name+" created with replicas 3", func() error {
			cctx, cc := context.WithTimeout(ctx, 5*time.Second)
			defer cc()
			_, err := opJS.CreateStream(cctx, cfg)
			return err
		})
	}
	rc := bus.RegistryConfig(l)
	rc.Replicas = 3
	if _, err := opJS.CreateKeyValue(ctx, rc); err != nil {
		t.Fatalf("create registry bucket with replicas 3: %v", err)
	}

	// The university's leaf server, linked to every hub server through a
	// proxy that can cut the link.
	var proxies []*linkProxy
	var proxied []string
	for i := range 3 {
		p := newLinkProxy(t, leafPort[i])
		proxies = append(proxies, p)
		proxied = append(proxied, p.addr())
	}
	withDomain := nodeHasNATSDomain()
	leafClient := stableAddr(t)
	leafPath := filepath.Join(dir, "leaf-university.conf")
	os.WriteFile(leafPath, []byte(leafConf(t, leafClient, stableAddr(t), proxied, filepath.Join(dir, "leaf-js"), withDomain)), 0o644)
	leaf := newProc(t, dir, "leaf", natsBin, "-c", leafPath)
	leaf.start()
	waitListening(t, "the leaf server to listen", leafClient)
	leafNATS := "  url: nats://" + leafClient + "\n"
	if withDomain {
		leafNATS += "  domain: hub\n"
		t.Log("leaf server with its own JetStream domain; uni-s reaches the hub as domain hub (nats.domain)")
	} else {
		t.Log("node.Config has no nats.domain: the leaf server runs without JetStream and maps $JS.API and $KV to the hub's domain instead (see deploy/README.md)")
	}
	wait.Until(t, 20*time.Second, "the leaf link to the hub", func() bool { return leafLinked(t, proxies) })

	if _, err := authority.Init(filepath.Join(dir, "authority")); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	snd := clusterNode(t, dir, bin, ak, space, "uni-s", leafNATS, 5)
	rcv := clusterNode(t, dir, bin, ak, space, "uni-r", "  url: "+hubURL+"\n", 5)
	snd.startReady()
	rcv.startReady()

	students, data, want := clusterRecords(t)
	ingestStudents(ctx, t, snd, students)
	var ir struct{ Stored, Invalid int }
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", data, &ir); err != nil || ir.Stored != len(want) {
		t.Fatalf("ingest: %+v, %v; want %d stored", ir, err, len(want))
	}
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", faultAgreement(), nil); err != nil {
			t.Fatal(err)
		}
	}
	shareDone := make(chan error, 1)
	go func() {
		var res share.Result
		err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), &res)
		t.Logf("first share: %+v", res)
		shareDone <- err
	}()

	// The faults come at random moments: the test paces them on purpose.
	pace := func(d time.Duration) {
		t.Helper()
		if err := wait.For(ctx, d); err != nil {
			t.Fatalf("pacing the faults: %v", err)
		}
	}

	// Kill the server leading the exchange stream.
	pace(time.Duration(150+rng.IntN(400)) * time.Millisecond)
	victim := ""
	wait.Until(t, 20*time.Second, "the exchange stream's leader", func() bool {
		sctx, sc := context.WithTimeout(ctx, 2*time.Second)
		defer sc()
		st, err := opJS.Stream(sctx, l.ExchangeStream())
		if err == nil && st.CachedInfo().Cluster != nil {
			victim = st.CachedInfo().Cluster.Leader
		}
		return hubs[victim] != nil
	})
	hubs[victim].kill()
	t.Logf("killed %s (exchange stream leader); receiver holds %d of %d", victim, rcv.received(ctx), len(want))

	// Cut the leaf's link while the hub runs on two servers.
	pace(time.Duration(200+rng.IntN(500)) * time.Millisecond)
	for _, p := range proxies {
		p.setCut(true)
	}
	t.Logf("leaf link cut; receiver holds %d", rcv.received(ctx))
	pace(time.Duration(1500+rng.IntN(1500)) * time.Millisecond)
	for _, p := range proxies {
		p.setCut(false)
	}
	t.Logf("leaf link restored; receiver holds %d", rcv.received(ctx))
	pace(time.Duration(500+rng.IntN(1000)) * time.Millisecond)
	hubs[victim].start()
	t.Logf("restarted %s; receiver holds %d", victim, rcv.received(ctx))

	// Whatever the first share could not commit (its registry look-ups may
	// have met the cut link), a second share finds: it shares only records
	// not yet shared.
	select {
	case err := <-shareDone:
		if err != nil {
			t.Logf("first share: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("first share did not answer within 60s")
	}
	wait.Until(t, 20*time.Second, "uni-s ready", func() bool { return snd.call(ctx, http.MethodGet, "/readyz", nil, nil) == nil })
	var res share.Result
	if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), &res); err != nil {
		t.Fatalf("final share: %v", err)
	}
	t.Logf("final share: %+v", res)
	if err := wait.Poll(120*time.Second, "every record at the receiver", func() error {
		if got := rcv.received(ctx); got < int64(len(want)) {
			return fmt.Errorf("receiver holds %d of %d records", got, len(want))
		}
		return nil
	}); err != nil {
		clusterDiagnose(ctx, t, opJS, l)
		t.Fatal(err)
	}
	// Any duplicate still on its way arrives before the count.
	wait.UntilErr(t, 60*time.Second, "the exchange to settle", func() error { return exchangeSettled(snd.admin, rcv.admin) })
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.stop(); err != nil {
			t.Error(err)
		}
	}
	assertExactlyOnce(t, rcv.dir, want)

	// The streams kept three replicas through it all. The restarted server
	// may still be catching up, and the operator's connection reconnecting:
	// ask until the cluster answers (bounded).
	var info *jetstream.StreamInfo
	if err := wait.Poll(60*time.Second, "the exchange stream's info", func() error {
		sctx, sc := context.WithTimeout(ctx, 5*time.Second)
		defer sc()
		st, err := opJS.Stream(sctx, l.ExchangeStream())
		if err == nil {
			info = st.CachedInfo()
		}
		return err
	}); err != nil {
		t.Error(err)
	} else if r := info.Config.Replicas; r != 3 {
		t.Errorf("exchange stream has %d replicas, want 3", r)
	}
}

// clusterRecords are the course grades of faultRecords' first 900
// students (2,700 records): under the volume rule that asks for bulk
// approval from 1,000 subjects at L3 on, so every one is permitted; and
// those students' student records, so that the node knows them.
func clusterRecords(t *testing.T) ([]byte, []byte, map[[2]string]bool) {
	t.Helper()
	known, all, _ := faultRecords(t)
	var out bytes.Buffer
	want := map[[2]string]bool{}
	students := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(all), []byte("\n")) {
		var r struct {
			StudentID  string `json:"student_id"`
			CourseCode string `json:"course_code"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if !students[r.StudentID] && len(students) == 900 {
			continue
		}
		students[r.StudentID] = true
		want[[2]string{r.StudentID, r.CourseCode}] = true
		out.Write(line)
		out.WriteByte('\n')
	}
	return studentsOf(t, known, out.Bytes()), out.Bytes(), want
}

// clusterDiagnose logs the exchange stream's and the consumers' state.
func clusterDiagnose(ctx context.Context, t *testing.T, js jetstream.JetStream, l bus.Layout) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, l.ExchangeStream())
	if err != nil {
		t.Logf("exchange stream: %v", err)
		return
	}
	si := st.CachedInfo()
	t.Logf("exchange stream: %d messages, leader %s, replicas %+v", si.State.Msgs, si.Cluster.Leader, si.Cluster.Replicas)
	for _, name := range []string{l.DeliverConsumer("uni-r"), l.ReceiptConsumer("uni-s")} {
		c, err := st.Consumer(ctx, name)
		if err != nil {
			t.Logf("consumer %s: %v", name, err)
			continue
		}
		ci := c.CachedInfo()
		t.Logf("consumer %s: pending %d, ack pending %d, waiting %d, redelivered %d, leader %s", name,
			ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.NumRedelivered, ci.Cluster.Leader)
	}
}

// leafLinked reports whether some proxy carries a connection to the hub.
func leafLinked(t *testing.T, proxies []*linkProxy) bool {
	for _, p := range proxies {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// TestLeafDomain shows what a node behind a leaf server with its own
// JetStream domain needs: without the hub's domain its JetStream calls are
// answered by the leaf and never find the space's streams; with
// jetstream.NewWithDomain(nc, "hub") the streams, the registry bucket and
// the pull consumers at the hub all work through the leaf.
func TestLeafDomain(t *testing.T) {
	if testing.Short() {
		t.Skip("NATS cluster with a leaf node, in processes: skipped with -short")
	}
	_, natsBin := binaries(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := bus.Layout{Space: "domain"}
	var client, route, leafPort, monitor []string
	for range 3 {
		client, route, leafPort, monitor = append(client, stableAddr(t)), append(route, stableAddr(t)),
			append(leafPort, stableAddr(t)), append(monitor, stableAddr(t))
	}
	for i := 1; i <= 3; i++ {
		hd := filepath.Join(dir, fmt.Sprintf("hub-%d", i))
		os.MkdirAll(hd, 0o700)
		os.WriteFile(filepath.Join(hd, "accounts.conf"), []byte("# test: no accounts\n"), 0o644)
		path := filepath.Join(hd, "hub.conf")
		os.WriteFile(path, []byte(hubConf(t, i, client, route, leafPort, monitor, filepath.Join(hd, "js"))), 0o644)
		newProc(t, dir, fmt.Sprintf("hub-%d", i), natsBin, "-c", path).start()
	}
	leafClient := stableAddr(t)
	leafPath := filepath.Join(dir, "leaf.conf")
	os.WriteFile(leafPath, []byte(leafConf(t, leafClient, stableAddr(t), leafPort, filepath.Join(dir, "leaf-js"), true)), 0o644)
	newProc(t, dir, "leaf", natsBin, "-c", leafPath).start()
	for _, a := range append(client, leafClient) {
		waitListening(t, "nats-server at "+a, a)
	}
	hub, err := nats.Connect("nats://" + strings.Join(client, ",nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	hubJS, _ := jetstream.New(hub)
	cfg := bus.ExchangeStreamConfig(l)
	cfg.Replicas = 3
	// Refused while the cluster is still electing its meta leader.
	wait.UntilErr(t, 60*time.Second, "the exchange stream created with replicas 3", func() error {
		cctx, cc := context.WithTimeout(ctx, 5*time.Second)
		defer cc()
		_, err := hubJS.CreateStream(cctx, cfg)
		return err
	})
	rc := bus.RegistryConfig(l)
	rc.Replicas = 3
	if _, err := hubJS.CreateKeyValue(ctx, rc); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect("nats://"+leafClient, nats.CustomInboxPrefix(l.InboxPrefix("uni-x")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The leaf link may take a moment; the domain's API answers once it is up.
	js, _ := jetstream.NewWithDomain(nc, "hub")
	wait.Until(t, 20*time.Second, "the hub's JetStream through the leaf", func() bool {
		cctx, cc := context.WithTimeout(ctx, time.Second)
		defer cc()
		info, err := js.AccountInfo(cctx)
		return err == nil && info.Domain == "hub"
	})

	// Without the domain the leaf's own JetStream answers.
	local, _ := jetstream.New(nc)
	cctx, cc := context.WithTimeout(ctx, 5*time.Second)
	defer cc()
	if info, err := local.AccountInfo(cctx); err != nil || info.Domain != "uni-example" {
		t.Errorf("plain JetStream through the leaf: domain %v, %v; want the leaf's own, uni-example", info, err)
	}
	if _, err := local.Stream(cctx, l.ExchangeStream()); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("plain JetStream through the leaf found the hub's stream (%v): the domains are not separate", err)
	}

	// With the domain: Ensure finds what the operator made, publishes are
	// deduplicated at the hub, the registry works, and a pull consumer
	// delivers and takes acks.
	kv, err := bus.Ensure(cctx, js, l)
	if err != nil {
		t.Fatalf("Ensure through the leaf with domain hub: %v", err)
	}
	if st, err := js.Stream(cctx, l.ExchangeStream()); err != nil || st.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("stream through the domain: %v", err)
	}
	if _, err := kv.Put(cctx, "uni-x", []byte("credential")); err != nil {
		t.Fatalf("registry put through the domain: %v", err)
	}
	subject := l.DeliverSubject("uni-y", "uni-x")
	for range 2 {
		if _, err := js.Publish(cctx, subject, []byte("envelope"), jetstream.WithMsgID("env-1")); err != nil {
			t.Fatalf("publish through the domain: %v", err)
		}
	}
	cons, err := bus.Consumer(cctx, js, l.ExchangeStream(), l.DeliverConsumer("uni-y"), l.DeliverFilter("uni-y"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(cctx); err != nil {
			t.Errorf("ack through the domain: %v", err)
		}
	}
	if got != 1 {
		t.Errorf("consumer delivered %d messages, want 1 (the second publish is a duplicate)", got)
	}
	if e, err := hubJS.KeyValue(cctx, l.RegistryBucket()); err != nil {
		t.Error(err)
	} else if v, err := e.Get(cctx, "uni-x"); err != nil || string(v.Value()) != "credential" {
		t.Errorf("registry entry at the hub: %v", err)
	}
}

// TestDeployNATSConfigs: nats-server accepts every configuration in
// deploy/nats as shipped, the hub's with the accounts block that
// `eduspace authority nats-config` generates.
func TestDeployNATSConfigs(t *testing.T) {
	bins := map[string]string{}
	if stock, err := exec.LookPath("nats-server"); err == nil {
		bins["debian"] = stock
	}
	if !testing.Short() {
		_, bins["module"] = binaries(t)
	}
	if len(bins) == 0 {
		t.Skip("-short and no nats-server on PATH (apt-get install nats-server; .ci/run does): skipping the NATS configuration check")
	}
	dir := t.TempDir()
	authDir := filepath.Join(dir, "authority")
	if _, err := authority.Init(authDir); err != nil {
		t.Fatal(err)
	}
	gen, err := authority.NATSConfig(authDir, "demo", []string{"uni-a", "uni-b", "center"}, nil, "0.0.0.0:4222", "/var/lib/nats")
	if err != nil {
		t.Fatal(err)
	}
	// What deploy/README.md says to do: keep the accounts block.
	i := strings.Index(gen, "\naccounts {")
	if i < 0 {
		t.Fatalf("generated configuration has no accounts block:\n%s", gen)
	}
	src := filepath.Join(moduleRoot(t), "deploy", "nats")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(src, e.Name()))
		d := filepath.Join(dir, strings.TrimSuffix(e.Name(), ".conf"))
		os.MkdirAll(d, 0o700)
		os.WriteFile(filepath.Join(d, "accounts.conf"), []byte(gen[i+1:]), 0o600)
		path := filepath.Join(d, e.Name())
		os.WriteFile(path, []byte(strings.ReplaceAll(string(data), "/var/lib/nats", filepath.Join(d, "js"))), 0o600)
		for which, b := range bins {
			out, err := exec.Command(b, "-t", "-c", path).CombinedOutput()
			if err != nil {
				t.Errorf("%s nats-server -t %s: %v\n%s", which, e.Name(), err, out)
			}
		}
		checked++
	}
	if checked != 4 {
		t.Errorf("checked %d configurations in deploy/nats, want 4 (three hub servers and a leaf)", checked)
	}
}
