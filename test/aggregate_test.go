package test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// aggUnis are the universities of the aggregate tests; aggCenter the center.
var aggUnis = []string{"uni-a", "uni-b", "uni-c"}

const aggCenter = "center"

// memberAs is testSpace.member with a role.
func (s *testSpace) memberAs(id string, role crypto.Role) *node.Node {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	if _, err := keys.InitKeys(nd, id, crypto.DefaultSuite); err != nil {
		s.t.Fatal(err)
	}
	tok, err := authority.Issue(s.ak, filepath.Join(nd, keys.RequestFile), authority.Member{
		Space: space, Institution: "Institution " + id, Role: role, Valid: time.Hour}, s.now)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tok), 0o644); err != nil {
		s.t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir = id, space, nd
	cfg.AuthorityKey = filepath.Join(s.dir, "authority", authority.PublicKeyFile)
	cfg.NATS.URL = s.emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	s.conf[id] = cfg
	n, err := node.Open(context.Background(), cfg, node.Env{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if err := n.Close(); err != nil {
			s.t.Errorf("close %s: %v", id, err)
		}
	})
	return n
}

// aggPlain is one university's exact tables, computed here from the records
// the test writes, independently of the node.
type aggPlain struct {
	gender  map[string]int64    // 女, 男, "" (other)
	enrollN map[[2]string]int64 // (education level, major category) → records
	enrollS map[[2]string]int64 // → sum of program_length
}

var (
	aggLevels = []string{"本科", "硕士"}
	aggCats   = []string{"08", "12"}
)

// aggRecords writes students with a gender (one in seven without) and one
// enrollment each, varying per university so that the tables differ.
func aggRecords(i int) (string, aggPlain) {
	p := aggPlain{gender: map[string]int64{}, enrollN: map[[2]string]int64{}, enrollS: map[[2]string]int64{}}
	var b strings.Builder
	students := 20 + 7*i
	for j := range students {
		id := fmt.Sprintf("U%dS%04d", i, j)
		g := []string{"女", "男"}[(j*(i+2))%2]
		if j%7 == 3 {
			fmt.Fprintf(&b, `{"type":"student","student_id":%q}`+"\n", id)
			p.gender[""]++
		} else {
			fmt.Fprintf(&b, `{"type":"student","student_id":%q,"gender":%q}`+"\n", id, g)
			p.gender[g]++
		}
		level := []string{"本科", "硕士", "博士"}[(j+i)%3]
		major := []string{"080901", "120201", "050101"}[(j*3+i)%3]
		length := 2 + (j+2*i)%5 // 2..6; clamped to [0, 5] by the query
		fmt.Fprintf(&b, `{"type":"enrollment","student_id":%q,"education_level":%q,"major_code":%q,"program_length":%d}`+"\n", id, level, major, length)
		key := [2]string{"", ""}
		if slices.Contains(aggLevels, level) {
			key[0] = level
		}
		if slices.Contains(aggCats, major[:2]) {
			key[1] = major[:2]
		}
		p.enrollN[key]++
		p.enrollS[key] += int64(min(length, 5))
	}
	return b.String(), p
}

type aggFixture struct {
	s      *testSpace
	center *node.Node
	unis   map[string]*node.Node
	plain  map[string]aggPlain
}

// newAggSpace opens a center and three universities with statistics
// agreements and records.
func newAggSpace(t *testing.T) *aggFixture {
	t.Helper()
	ctx := context.Background()
	f := &aggFixture{s: newSpace(t), unis: map[string]*node.Node{}, plain: map[string]aggPlain{}}
	f.center = f.s.memberAs(aggCenter, crypto.RoleCenter)
	for i, id := range aggUnis {
		u := f.s.memberAs(id, crypto.RoleUniversity)
		f.unis[id] = u
		recs, plain := aggRecords(i)
		res, err := u.Ingest(ctx, strings.NewReader(recs), "")
		if err != nil || res.Invalid != 0 {
			t.Fatalf("ingest at %s: %v %+v", id, err, res)
		}
		f.plain[id] = plain
		a := &policy.Agreement{ID: id + "-center-statistics", Provider: id, Recipient: aggCenter,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{
				"student":    {"student_id", "gender"},
				"enrollment": {"student_id", "education_level", "major_code", "program_length"},
			},
			MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: f.s.now.Add(-time.Hour), ValidUntil: f.s.now.Add(24 * time.Hour)}
		for _, n := range []*node.Node{u, f.center} {
			if err := n.AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

func genderQuery(id string) aggregate.Query {
	return aggregate.Query{ID: id, RecordType: "student", Purpose: policy.PurposeStatistics,
		GroupBy: []aggregate.Dimension{{Field: "gender", Values: []string{"女", "男"}}},
		Measure: aggregate.Measure{Kind: "count"}, Rho: 0.05, Participants: aggUnis, Threshold: 1,
		RoundTimeout: aggregate.Duration(20 * time.Second)}
}

// metricValue reads one series from a node's /metrics.
func metricValue(t *testing.T, n *node.Node, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(scrape(t, n))
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestAggregateRefusesBadQueries: invalid queries are refused at the center
// with the field named; over the wire, a university refuses and counts an
// unsigned, forged, self-proclaimed or malformed query.
func TestAggregateRefusesBadQueries(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	for field, edit := range map[string]func(*aggregate.Query){
		"group_by[0].field": func(q *aggregate.Query) { q.GroupBy[0].Field = "name" },
		"threshold":         func(q *aggregate.Query) { q.Threshold = 2 },
		"dataset":           func(q *aggregate.Query) { q.Dataset = "everything" },
		"measure.field": func(q *aggregate.Query) {
			q.Measure = aggregate.Measure{Kind: "sum", Field: "gender", Lower: 0, Upper: 1}
		},
		"rho":             func(q *aggregate.Query) { q.Rho = 0 },
		"participants":    func(q *aggregate.Query) { q.Participants = q.Participants[:2] },
		"participants[1]": func(q *aggregate.Query) { q.Participants = []string{"uni-a", "nobody", "uni-c"} },
	} {
		q := genderQuery("bad")
		edit(&q)
		if _, err := f.center.Aggregator().Submit(ctx, q); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want an error naming it", field, err)
		}
	}
	if _, err := f.unis["uni-a"].Aggregator().Submit(ctx, genderQuery("x")); !errors.Is(err, aggregate.ErrNotCenter) {
		t.Errorf("a university submits: %v", err)
	}

	// Over the wire, to uni-b.
	nc, err := nats.Connect(f.s.emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	good := genderQuery("wire")
	good.Center, good.Issued, good.Dataset, good.ContributionBound = aggCenter, time.Now().UTC(), "student", 1
	good.Deadline = good.Issued.Add(time.Hour)
	invalid := good
	invalid.GroupBy = []aggregate.Dimension{{Field: "name", Values: []string{"x"}}}
	selfish := good
	selfish.Center, selfish.Participants = "uni-a", []string{"uni-b", "uni-c", aggCenter}
	raw := func(q aggregate.Query) []byte { b, _ := json.Marshal(q); return b }
	sign := func(from string, data []byte) (string, []byte) {
		k, err := keys.LoadKeys(filepath.Join(f.s.dir, from))
		if err != nil {
			t.Fatal(err)
		}
		return k.Signing.Public().KeyID(), k.Signing.Sign(append([]byte("eduspace aggregate query v1\x00"), data...))
	}
	cases := []struct {
		name, from string
		query      []byte
		signer     string
	}{
		{"unsigned", aggCenter, raw(good), ""},
		{"forged", "uni-a", raw(good), "uni-a"},
		{"self-proclaimed center", "uni-a", raw(selfish), "uni-a"},
		{"malformed", aggCenter, []byte(`{"id":`), aggCenter},
		{"invalid", aggCenter, raw(invalid), aggCenter},
	}
	for i, c := range cases {
		sq := map[string]any{"query": c.query}
		if c.signer != "" {
			sq["key_id"], sq["sig"] = sign(c.signer, c.query)
		}
		body, _ := json.Marshal(map[string]any{"type": "round", "round": fmt.Sprintf("wire-r%d", i+1), "query": sq})
		f.sendRaw(t, nc, c.from, "uni-b", body)
	}
	defer func() {
		if t.Failed() {
			for _, l := range strings.Split(scrape(t, f.unis["uni-b"]), "\n") {
				if strings.Contains(l, "refused") && !strings.HasSuffix(l, " 0") {
					t.Log(l)
				}
			}
		}
	}()
	waitFor(t, "uni-b to refuse five queries", func() bool {
		return metricValue(t, f.unis["uni-b"], `eduspace_aggregate_queries_refused_total{reason="bad_signature"}`) == 3 &&
			metricValue(t, f.unis["uni-b"], `eduspace_aggregate_queries_refused_total{reason="bad_query"}`) == 2
	})
	if v := metricValue(t, f.unis["uni-b"], `eduspace_aggregate_participations_total{event="joined"}`); v != 0 {
		t.Errorf("uni-b joined %v rounds", v)
	}
	if v := metricValue(t, f.unis["uni-b"], `eduspace_envelopes_refused_total{reason="bad_content"}`); v != 5 {
		t.Errorf("envelopes refused: %v, want 5", v)
	}
}

// sendRaw seals body from one member to another as an aggregate envelope
// and publishes it on the control subject, as a misbehaving member could.
func (f *aggFixture) sendRaw(t *testing.T, nc *nats.Conn, from, to string, body []byte) {
	t.Helper()
	k, err := keys.LoadKeys(filepath.Join(f.s.dir, from))
	if err != nil {
		t.Fatal(err)
	}
	root, err := crypto.ReadAuthorityPublicKey(filepath.Join(f.s.dir, "authority", authority.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(f.s.dir, to, "credential.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := crypto.ParseCredential(strings.TrimSpace(string(tok)), root, space, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kem := cred.CurrentKEMKey()
	now := time.Now()
	h := crypto.Header{Suite: kem.Suite(), Sender: from, SenderKeyID: k.Signing.Public().KeyID(), Recipient: to,
		RecipientKeyID: kem.KeyID(), Created: now, Expires: now.Add(time.Hour), Count: 1, Kind: crypto.KindAggregate}
	rand.Read(h.ID[:])
	data, err := crypto.Seal(rand.Reader, h, kem, k.Signing, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jsPublish(nc, bus.Layout{Space: space}.ControlSubject(to, from), data); err != nil {
		t.Fatal(err)
	}
}
