// Package nodetest runs spaces of real nodes for tests: an embedded NATS
// server on loopback, an authority whose key the test holds, and each
// node's keys, credential and database in the test's temporary directory.
// It owns no production state.
//
// It must never be imported by production code: only tests use it.
package nodetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// SpaceID is the id of every space this package runs.
const SpaceID = "testspace"

// Space is a space of nodes on one embedded NATS server.
type Space struct {
	T   testing.TB
	Dir string
	AK  *crypto.AuthorityKey
	Pub string // the authority's public key file
	Emb *bus.Embedded
	Now time.Time
	// Configs are the configs Config made, by node id.
	Configs map[string]node.Config
	// Valid is how long the credentials Config issues are valid: an hour
	// unless a test sets it.
	Valid time.Duration
}

// NewSpace starts an empty space; the test's cleanup stops it.
func NewSpace(t testing.TB) *Space {
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
	return &Space{T: t, Dir: dir, AK: ak, Pub: pub, Emb: emb, Now: time.Now(), Configs: map[string]node.Config{}, Valid: time.Hour}
}

// Member creates member id's keys and a credential for role, valid for
// s.Valid, and returns its config: the daemon's defaults, on the space's
// server, its admin API on a loopback port.
func (s *Space) Member(id string, role crypto.Role) node.Config {
	s.T.Helper()
	nd := filepath.Join(s.Dir, id)
	if _, err := authority.Provision(s.AK, nd, id, crypto.SuiteX25519, authority.Member{
		Space: SpaceID, Institution: "Institution " + id, Role: role, Valid: s.Valid}, s.Now); err != nil {
		s.T.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir, cfg.AuthorityKey = id, SpaceID, nd, s.Pub
	cfg.NATS.URL = s.Emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Suite = crypto.SuiteX25519.String()
	// Spaces of tests have three universities, and their queries tolerate
	// no colluder (t = 2) so that a round survives a dropout.
	cfg.Aggregate.Colluders = 0
	s.Configs[id] = cfg
	return cfg
}

// Config is Member for a university, with small envelopes (5 records) and
// fast checkpoints, which the outbox's fail-closed tests wait for.
func (s *Space) Config(id string) node.Config {
	s.T.Helper()
	cfg := s.Member(id, crypto.RoleUniversity)
	cfg.Batch.MaxRecords = 5
	cfg.Checkpoint.Interval = 100 * time.Millisecond
	cfg.Checkpoint.MaxAge = 400 * time.Millisecond
	s.Configs[id] = cfg
	return cfg
}

// Open opens a node; the test's cleanup closes it (Close runs once).
func (s *Space) Open(cfg node.Config, env ...node.Env) *node.Node {
	s.T.Helper()
	var e node.Env
	if len(env) > 0 {
		e = env[0]
	}
	n, err := node.Open(context.Background(), cfg, e)
	if err != nil {
		s.T.Fatalf("open %s: %v", cfg.NodeID, err)
	}
	s.T.Cleanup(func() { n.Close() })
	return n
}

// LinkageEvaluator makes member id (whose config Member or Config made)
// the space's linkage evaluator: a linkage key in its data directory, and
// a space policy naming it, signed and published. Nodes opened after read
// it at start; running nodes take it as it is published.
func (s *Space) LinkageEvaluator(id string) *crypto.LinkageEvaluator {
	s.T.Helper()
	cfg, ok := s.Configs[id]
	if !ok {
		s.T.Fatalf("linkage evaluator %s: no config; call Member or Config first", id)
	}
	ev, err := linkage.GenerateKey(cfg.DataDir, id)
	if err != nil {
		s.T.Fatal(err)
	}
	s.SignLinkagePolicy(ev)
	return ev
}

// SignLinkagePolicy signs and publishes a space policy naming ev (nil:
// none) as the linkage evaluator.
func (s *Space) SignLinkagePolicy(ev *crypto.LinkageEvaluator) {
	s.T.Helper()
	_, data, err := authority.SetLinkageEvaluator(s.AK, filepath.Join(s.Dir, "authority"), SpaceID, ev, crypto.SuiteX25519, s.Now)
	if err != nil {
		s.T.Fatal(err)
	}
	if err := authority.PublishSpacePolicy(context.Background(), s.JetStream(), SpaceID, data); err != nil {
		s.T.Fatal(err)
	}
}

// JetStream connects to the space's server as an operator would.
func (s *Space) JetStream() jetstream.JetStream {
	s.T.Helper()
	return JetStream(s.T, s.Emb.ClientURL())
}

// JetStream connects to the NATS server at url as an operator would; the
// test's cleanup closes the connection.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Block takes the space's audit stream away, so that no checkpoint is
// published; the returned function gives it back.
func (s *Space) Block() (unblock func()) {
	s.T.Helper()
	ctx := context.Background()
	js := s.JetStream()
	l := bus.Layout{Space: SpaceID}
	if err := js.DeleteStream(ctx, l.AuditStream()); err != nil {
		s.T.Fatal(err)
	}
	return func() {
		s.T.Helper()
		if _, err := js.CreateOrUpdateStream(ctx, bus.AuditStreamConfig(l)); err != nil {
			s.T.Fatal(err)
		}
	}
}

// Pair opens sender uni-a (its config edited by edit) and receiver uni-b,
// with envs[0] and envs[1] when given, gives uni-a Records' records and
// both the agreement "relay", which permits their grades.
func (s *Space) Pair(edit func(*node.Config), envs ...node.Env) (a, b *node.Node, ag *policy.Agreement) {
	s.T.Helper()
	ctx := context.Background()
	ca := s.Config("uni-a")
	if edit != nil {
		edit(&ca)
	}
	env := func(i int) node.Env {
		if i < len(envs) {
			return envs[i]
		}
		return node.Env{}
	}
	a, b = s.Open(ca, env(0)), s.Open(s.Config("uni-b"), env(1))
	if _, err := a.Ingest(ctx, strings.NewReader(Records(s.Now)), ""); err != nil {
		s.T.Fatal(err)
	}
	ag = &policy.Agreement{ID: "relay", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code"}},
		MaxLevel: schema.L2, RetentionDays: 1, ValidFrom: s.Now.Add(-time.Hour), ValidUntil: s.Now.Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			s.T.Fatal(err)
		}
	}
	return a, b, ag
}

// Grades is how many grades Records holds.
const Grades = 23

// Records are Grades adult students with one grade each, as NDJSON.
func Records(now time.Time) string {
	var b strings.Builder
	for i := range Grades {
		birth := now.AddDate(-20, 0, -i)
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%04d","name":"Student %d","birth_date":%q,"id_type":"resident_id","id_number":%q}`+"\n",
			i, i, birth.Format("2006-01-02"), ResidentID("110101"+birth.Format("20060102")+"123"))
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S%04d","course_code":"CS201","course_name":"Data structures","credits":4,"term":"2025-2026-1","score":%d}`+"\n", i, 60+i)
	}
	return b.String()
}

// ResidentID completes a resident id's 17 digits with its check digit.
func ResidentID(body17 string) string {
	w := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, c := range body17 {
		sum += int(c-'0') * w[i]
	}
	return body17 + string("10X98765432"[sum%11])
}

// Status is n's status; it fails the test when n cannot say.
func Status(t testing.TB, n *node.Node) admin.Status {
	t.Helper()
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Count runs a query returning one number on a read-only view of the
// database of the node whose config is cfg: for tests that look at what a
// node stored.
func Count(t testing.TB, cfg node.Config, query string, args ...any) int64 {
	t.Helper()
	db, err := store.OpenReadOnly(filepath.Join(cfg.DataDir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var k int64
	if err := db.QueryRow(query, args...).Scan(&k); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return k
}

// Scrape reads n's metrics over its admin listener.
func Scrape(t testing.TB, n *node.Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// Evidence reads the entries of the evidence log of the node whose data
// directory is dir, in order, from a read-only view beside the running
// node.
func Evidence(t testing.TB, dir string) []map[string]any {
	t.Helper()
	db, err := store.OpenReadOnly(filepath.Join(dir, "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT entry FROM evidence ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
