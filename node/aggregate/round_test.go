package aggregate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
	"github.com/nats-io/nats.go"
)

// The tests of whole rounds among nodes, each with its own database, on one
// embedded NATS server. They set the aggregator's test knobs
// (export_test.go): noise off, so that a release equals the plain sum
// exactly, and dropouts.

// aggUnis are the universities of the aggregate tests; aggCenter the center.
var aggUnis = []string{"uni-a", "uni-b", "uni-c"}

const aggCenter = "center"

// memberAs opens member id of the space with role.
func memberAs(s *nodetest.Space, id string, role crypto.Role) *node.Node {
	s.T.Helper()
	return s.Open(s.Member(id, role))
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
	students := 60 + 7*i // every cell of the tests' queries reaches the dimensions' minimum cell size (10)
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
	s      *nodetest.Space
	center *node.Node
	unis   map[string]*node.Node
	plain  map[string]aggPlain
}

// newAggSpace opens a center and three universities with statistics
// agreements and records; the universities add no noise.
func newAggSpace(t *testing.T) *aggFixture {
	t.Helper()
	return newAggSpaceWith(t, func(string, *node.Config) {})
}

// newAggSpaceWith is newAggSpace with each node's configuration edited
// before it opens.
func newAggSpaceWith(t *testing.T, edit func(id string, cfg *node.Config)) *aggFixture {
	t.Helper()
	ctx := context.Background()
	f := &aggFixture{s: nodetest.NewSpace(t), unis: map[string]*node.Node{}, plain: map[string]aggPlain{}}
	open := func(id string, role crypto.Role) *node.Node {
		cfg := f.s.Member(id, role)
		edit(id, &cfg)
		f.s.Configs[id] = cfg
		return f.s.Open(cfg)
	}
	f.center = open(aggCenter, crypto.RoleCenter)
	for i, id := range aggUnis {
		u := open(id, crypto.RoleUniversity)
		u.Aggregator().SetTestKnobs(true, "")
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
			MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: f.s.Now.Add(-time.Hour), ValidUntil: f.s.Now.Add(24 * time.Hour)}
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
		Measure: aggregate.Measure{Kind: "count"}, Rho: 0.05, Participants: aggUnis, Threshold: 2,
		RoundTimeout: aggregate.Duration(20 * time.Second)}
}

// run submits q and waits for its first round.
func (f *aggFixture) run(t *testing.T, q aggregate.Query) *aggregate.Release {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := f.center.Aggregator().Submit(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := f.center.Aggregator().Wait(ctx, info.Round)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// checkGender compares a count-by-gender release with the plain sum over
// the universities named.
func (f *aggFixture) checkGender(t *testing.T, rel *aggregate.Release, unis ...string) {
	t.Helper()
	if !slices.Equal(rel.Survivors, unis) {
		t.Errorf("survivors %v, want %v", rel.Survivors, unis)
	}
	if len(rel.Cells) != 3 {
		t.Fatalf("%d cells, want 3", len(rel.Cells))
	}
	for _, c := range rel.Cells {
		var want int64
		for _, u := range unis {
			want += f.plain[u].gender[c.Key[0]]
		}
		if c.Suppressed || c.Count == nil || *c.Count != want {
			t.Errorf("cell %q: got %+v, want the exact sum %d", c.Key, c, want)
		}
	}
}

// aggEvidence is the aggregate entries of a node's evidence log.
func aggEvidence(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range nodetest.Evidence(t, dir) {
		if e["kind"] == "aggregate" {
			out = append(out, e)
		}
	}
	return out
}

func hasEntry(entries []map[string]any, round, reason string) map[string]any {
	for _, e := range entries {
		if e["envelope"] == round && e["reason"] == reason {
			return e
		}
	}
	return nil
}

// metricValue reads one series from a node's /metrics.
func metricValue(t *testing.T, n *node.Node, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(nodetest.Scrape(t, n))
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// admin sends a request to n's admin API with its token (body, when not
// nil, as JSON) and returns the status and the body of the answer.
func admin(t *testing.T, n *node.Node, method, path string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.AdminAddr()+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.AdminToken())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestAggregateSecureSumExact: with noise off, the secure sum of a count
// and of a bounded sum equals the plain sum over the universities exactly;
// the release is served as JSON and CSV and is in every evidence log.
func TestAggregateSecureSumExact(t *testing.T) {
	f := newAggSpace(t)
	start := time.Now()
	rel := f.run(t, genderQuery("gender-count"))
	t.Logf("count round: %v", time.Since(start))
	f.checkGender(t, rel, aggUnis...)
	if rel.Rho <= 0 || rel.Rho > 0.05 || rel.Epsilon <= 0 {
		t.Errorf("release ρ = %v, ε = %v; want 0 < ρ ≤ 0.05", rel.Rho, rel.Epsilon)
	}

	q := aggregate.Query{ID: "enrol-sum", RecordType: "enrollment", Purpose: policy.PurposeStatistics,
		GroupBy: []aggregate.Dimension{{Field: "education_level", Values: aggLevels}, {Field: "major_category", Values: aggCats}},
		Measure: aggregate.Measure{Kind: "sum", Field: "program_length", Lower: 0, Upper: 5},
		Rho:     0.1, Participants: aggUnis, Threshold: 2, RoundTimeout: aggregate.Duration(20 * time.Second)}
	start = time.Now()
	rel = f.run(t, q)
	t.Logf("sum round: %v", time.Since(start))
	if len(rel.Cells) != 9 || rel.CellsSuppressed != 0 {
		t.Fatalf("%d cells, %d suppressed; want 9, 0", len(rel.Cells), rel.CellsSuppressed)
	}
	for _, c := range rel.Cells {
		key := [2]string{c.Key[0], c.Key[1]}
		var wn, ws int64
		for _, u := range aggUnis {
			wn += f.plain[u].enrollN[key]
			ws += f.plain[u].enrollS[key]
		}
		if c.Count == nil || c.Sum == nil || *c.Count != wn || *c.Sum != ws {
			t.Errorf("cell %q: count %v sum %v, want %d %d", c.Key, c.Count, c.Sum, wn, ws)
		}
	}

	// Served over the admin API as JSON and CSV.
	get := func(path string) (int, string) {
		code, b := admin(t, f.center, http.MethodGet, path, nil)
		return code, string(b)
	}
	if code, body := get("/v1/aggregates"); code != 200 || !strings.Contains(body, `"enrol-sum-r1"`) || !strings.Contains(body, `"gender-count-r1"`) {
		t.Errorf("GET /v1/aggregates: %d %s", code, body)
	}
	if code, body := get("/v1/aggregates/gender-count-r1"); code != 200 || !strings.Contains(body, `"cells_released":3`) {
		t.Errorf("GET /v1/aggregates/gender-count-r1: %d %s", code, body)
	}
	code, body := get("/v1/aggregates/enrol-sum-r1.csv")
	if code != 200 || !strings.HasPrefix(body, "education_level,major_category,count,sum_program_length,suppressed\n") ||
		strings.Count(body, "\n") != 10 {
		t.Errorf("GET /v1/aggregates/enrol-sum-r1.csv: %d\n%s", code, body)
	}
	if code2, body2 := get("/v1/aggregates/enrol-sum-r1?format=csv"); code2 != 200 || body2 != body {
		t.Errorf("?format=csv differs from .csv: %d", code2)
	}
	if code, _ := get("/v1/aggregates/nope"); code != 404 {
		t.Errorf("unknown aggregate: %d, want 404", code)
	}

	// In the evidence logs of the center and every contributor.
	if e := hasEntry(aggEvidence(t, f.s.Configs[aggCenter].DataDir), "gender-count-r1", "released"); e == nil {
		t.Error("center's evidence lacks the release")
	} else if d := e["detail"].(map[string]any); d["survivors"] != 3.0 || d["rho_nano"] == nil || d["survivor:uni-b"] != 1.0 {
		t.Errorf("center's release entry: %v", e)
	}
	for _, u := range aggUnis {
		ev := aggEvidence(t, f.s.Configs[u].DataDir)
		for _, reason := range []string{"joined", "contributed", "unmasked"} {
			if hasEntry(ev, "enrol-sum-r1", reason) == nil {
				t.Errorf("%s's evidence lacks %s", u, reason)
			}
		}
		if _, err := f.unis[u].VerifyEvidence(context.Background()); err != nil {
			t.Errorf("%s evidence: %v", u, err)
		}
	}
	if v := metricValue(t, f.center, `eduspace_aggregate_rounds_total{event="completed"}`); v != 2 {
		t.Errorf("rounds completed: %v, want 2", v)
	}
	if v := metricValue(t, f.center, `eduspace_aggregate_cells_total{outcome="released"}`); v != 12 {
		t.Errorf("cells released: %v, want 12", v)
	}
	if v := metricValue(t, f.unis["uni-a"], `eduspace_aggregate_participations_total{event="contributed"}`); v != 2 {
		t.Errorf("uni-a contributions: %v, want 2", v)
	}
}

// TestAggregateDropout: a university that stops answering after it
// committed, or after it sent its share bundles, does not stop the round;
// the sum is exactly that of the others.
func TestAggregateDropout(t *testing.T) {
	f := newAggSpace(t)
	for _, step := range []string{"commit", "shares"} {
		t.Run("after "+step, func(t *testing.T) {
			f.unis["uni-c"].Aggregator().SetTestKnobs(true, step)
			q := genderQuery("drop-" + step)
			q.RoundTimeout = aggregate.Duration(2 * time.Second)
			start := time.Now()
			rel := f.run(t, q)
			t.Logf("round with a dropout after %s: %v", step, time.Since(start))
			f.checkGender(t, rel, "uni-a", "uni-b")
			ev := aggEvidence(t, f.s.Configs["uni-c"].DataDir)
			if hasEntry(ev, q.ID+"-r1", "joined") == nil || hasEntry(ev, q.ID+"-r1", "contributed") != nil {
				t.Errorf("uni-c's evidence: want joined, not contributed: %v", ev)
			}
		})
	}
	// A university in U3 that stops before signing it, or after signing it
	// and before answering: the others' signatures are enough (t = 2), its
	// self-mask seed is recovered from their shares, and the release is the
	// sum over U3, all three.
	for _, step := range []string{"masked", "signed"} {
		t.Run("after "+step, func(t *testing.T) {
			f.unis["uni-c"].Aggregator().SetTestKnobs(true, step)
			q := genderQuery("drop-" + step)
			q.RoundTimeout = aggregate.Duration(2 * time.Second)
			rel := f.run(t, q)
			f.checkGender(t, rel, aggUnis...)
			ev := aggEvidence(t, f.s.Configs["uni-c"].DataDir)
			if hasEntry(ev, q.ID+"-r1", "contributed") == nil || hasEntry(ev, q.ID+"-r1", "unmasked") != nil {
				t.Errorf("uni-c's evidence: want contributed, not unmasked: %v", ev)
			}
			signed := hasEntry(aggEvidence(t, f.s.Configs[aggCenter].DataDir), q.ID+"-r1", "survivors_signed")
			want := map[string]float64{"masked": 2, "signed": 3}[step]
			if signed == nil || signed["detail"].(map[string]any)["signers"] != want {
				t.Errorf("center's survivors_signed entry %v, want %v signers", signed, want)
			}
		})
	}
	// Two dropouts of three: the round fails rather than release less noise.
	f.unis["uni-b"].Aggregator().SetTestKnobs(true, "commit")
	q := genderQuery("drop-two")
	q.RoundTimeout = aggregate.Duration(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	info, err := f.center.Aggregator().Submit(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.center.Aggregator().Wait(ctx, info.Round); err == nil || !strings.Contains(err.Error(), "too_few_survivors") {
		t.Errorf("two dropouts: %v, want too_few_survivors", err)
	}
	if v := metricValue(t, f.center, `eduspace_aggregate_rounds_total{event="failed"}`); v != 1 {
		t.Errorf("rounds failed: %v, want 1", v)
	}
}

// TestAggregateFailedRoundRefunds: when the center aborts a round, a
// university that sent its masked table and has not answered a survivor
// list gets back what it debited, in one transaction with a refunded entry;
// one that answered the survivor list keeps its debit.
func TestAggregateFailedRoundRefunds(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	spent := func(u string) (float64, uint64) {
		t.Helper()
		budgets, err := f.unis[u].Aggregator().Budgets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range budgets {
			if b.Recipient == aggCenter && b.Population == "student_id" {
				return b.Spent, b.Releases
			}
		}
		return 0, 0
	}
	// failRound runs q to its failure, with uni-b and uni-c stopping after
	// step, and waits until every node has handled the center's abort.
	failRound := func(q aggregate.Query, step string, refunded ...string) {
		t.Helper()
		for _, u := range []string{"uni-b", "uni-c"} {
			f.unis[u].Aggregator().SetTestKnobs(true, step)
		}
		// Long enough that no answer but the stopped ones comes late,
		// even under the race detector: which nodes are survivors is
		// what the test is about.
		q.RoundTimeout = aggregate.Duration(4 * time.Second)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		info, err := f.center.Aggregator().Submit(wctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.center.Aggregator().Wait(wctx, info.Round); err == nil || !strings.Contains(err.Error(), "too_few_survivors") {
			t.Fatalf("round with two stopping after %s: %v, want too_few_survivors", step, err)
		}
		for _, u := range refunded {
			wait.Until(t, 20*time.Second, u+" to refund "+info.Round, func() bool {
				return hasEntry(aggEvidence(t, f.s.Configs[u].DataDir), info.Round, "refunded") != nil
			})
		}
	}

	// uni-b and uni-c stop after sharing: only uni-a masks, the round fails
	// before any survivor list, and uni-a's debit comes back.
	failRound(genderQuery("fails-masked"), "shares", "uni-a")
	if s, r := spent("uni-a"); s != 0 || r != 0 {
		t.Errorf("uni-a after a refunded round: spent %v in %d releases, want nothing", s, r)
	}
	ev := aggEvidence(t, f.s.Configs["uni-a"].DataDir)
	c, rf := hasEntry(ev, "fails-masked-r1", "contributed"), hasEntry(ev, "fails-masked-r1", "refunded")
	if c == nil || rf == nil {
		t.Fatalf("uni-a's evidence: want contributed and refunded: %v", ev)
	}
	if cd, rd := c["detail"].(map[string]any), rf["detail"].(map[string]any); rd["rho_nano"] == nil || rd["rho_nano"] != cd["rho_nano"] ||
		rf["peer"] != aggCenter || rf["agreement"] != "uni-a-center-statistics" {
		t.Errorf("uni-a's refunded entry %v does not give back what %v debited", rf, c)
	}
	if v := metricValue(t, f.unis["uni-a"], `eduspace_aggregate_participations_total{event="refunded"}`); v != 1 {
		t.Errorf("uni-a refunds: %v, want 1", v)
	}

	// uni-b and uni-c stop after signing the survivor list: uni-a alone
	// answers it, the round fails for want of a second answer. uni-a
	// answered, so it keeps its debit; uni-b and uni-c signed the list but
	// revealed nothing, and get theirs back.
	failRound(genderQuery("fails-unmask"), "signed", "uni-b", "uni-c")
	if s, r := spent("uni-a"); s <= 0 || r != 1 {
		t.Errorf("uni-a after answering the survivor list of a failed round: spent %v in %d releases, want one debit kept", s, r)
	}
	if hasEntry(aggEvidence(t, f.s.Configs["uni-a"].DataDir), "fails-unmask-r1", "refunded") != nil {
		t.Error("uni-a refunded a round whose survivor list it answered")
	}
	for _, u := range []string{"uni-b", "uni-c"} {
		if s, r := spent(u); s != 0 || r != 0 {
			t.Errorf("%s after a refunded round: spent %v in %d releases, want nothing", u, s, r)
		}
	}
	for _, u := range aggUnis {
		if _, err := f.unis[u].VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", u, err)
		}
	}
}

// TestAggregateBudget: a university refuses a round that would overspend
// its ledger for the center, records why, and the round goes on without it.
func TestAggregateBudget(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	if err := f.unis["uni-c"].Aggregator().SetBudget(ctx, aggCenter, "student", 0.07); err == nil {
		t.Error("budget set on a record type, not a population")
	}
	if err := f.unis["uni-c"].Aggregator().SetBudget(ctx, aggCenter, "student_id", 0.07); err != nil {
		t.Fatal(err)
	}
	// The budget_set entry names the account: the recipient and the population.
	var set map[string]any
	for _, e := range aggEvidence(t, f.s.Configs["uni-c"].DataDir) {
		if e["reason"] == "budget_set" {
			set = e
		}
	}
	if set == nil || set["peer"] != aggCenter || set["rule"] != "population:student_id" {
		t.Errorf("uni-c's budget_set entry: %v, want peer %s and rule population:student_id", set, aggCenter)
	} else if d, _ := set["detail"].(map[string]any); d == nil || d["budget_nano_rho"] != 7e7 {
		t.Errorf("uni-c's budget_set entry: detail %v, want budget_nano_rho 70000000", set["detail"])
	}
	f.checkGender(t, f.run(t, genderQuery("budget-1")), aggUnis...)
	rel := f.run(t, genderQuery("budget-2"))
	f.checkGender(t, rel, "uni-a", "uni-b")
	ev := aggEvidence(t, f.s.Configs["uni-c"].DataDir)
	if hasEntry(ev, "budget-2-r1", "budget_exceeded") == nil {
		t.Errorf("uni-c's evidence lacks the budget refusal: %v", ev)
	}
	if hasEntry(aggEvidence(t, f.s.Configs[aggCenter].DataDir), "budget-2-r1", "budget_exceeded") == nil {
		t.Error("the center's evidence lacks uni-c's refusal")
	}
	if v := metricValue(t, f.unis["uni-c"], `eduspace_aggregate_queries_refused_total{reason="budget_exceeded"}`); v != 1 {
		t.Errorf("budget refusals: %v, want 1", v)
	}
	budgets, err := f.unis["uni-c"].Aggregator().Budgets(ctx)
	if err != nil || len(budgets) != 1 || budgets[0].Releases != 1 || budgets[0].Spent > 0.05 {
		t.Errorf("uni-c's ledger: %+v %v; want one release of at most 0.05", budgets, err)
	}
	// The others opened their account at the default budget.
	budgets, err = f.unis["uni-a"].Aggregator().Budgets(ctx)
	if err != nil || len(budgets) != 1 || budgets[0].Budget != aggregate.DefaultPrivacyBudget || budgets[0].Releases != 2 {
		t.Errorf("uni-a's ledger: %+v", budgets)
	}
}

// TestAggregatePersonBudget: the budget is per population of persons, not
// per record type: queries over student and enrollment records, both about
// the students (keyed by student_id), draw on one account, and once it is
// spent every query about those students is refused, whatever the record
// type. The account is spent per calendar year.
func TestAggregatePersonBudget(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	// Over the admin API: PUT /v1/budgets names the population, or a record
	// type as "dataset" (the body of ledgers per record type) for the
	// population it is about; a type about no person is refused.
	putBudget := func(body string) (int, []map[string]any) {
		t.Helper()
		code, b := admin(t, f.unis["uni-c"], http.MethodPut, "/v1/budgets", strings.NewReader(body))
		var list []map[string]any
		if code == http.StatusOK {
			if err := json.Unmarshal(b, &list); err != nil {
				t.Fatal(err)
			}
		}
		return code, list
	}
	if code, list := putBudget(`{"recipient":"center","dataset":"enrollment","budget_rho":0.3}`); code != http.StatusOK ||
		len(list) != 1 || list[0]["population"] != "student_id" || list[0]["budget_rho"] != 0.3 {
		t.Errorf("PUT with the dataset enrollment: %d %v, want the student_id account at 0.3", code, list)
	}
	for _, bad := range []string{`{"recipient":"center","dataset":"course","budget_rho":0.3}`,
		`{"recipient":"center","population":"enrollment","budget_rho":0.3}`} {
		if code, _ := putBudget(bad); code != http.StatusUnprocessableEntity {
			t.Errorf("PUT %s: %d, want 422", bad, code)
		}
	}
	// Three releases of at most 0.05 fit in 0.15, a fourth does not.
	if code, list := putBudget(`{"recipient":"center","population":"student_id","budget_rho":0.15}`); code != http.StatusOK ||
		len(list) != 1 || list[0]["budget_rho"] != 0.15 {
		t.Fatalf("PUT with the population student_id: %d %v", code, list)
	}
	enrolQuery := func(id string) aggregate.Query {
		q := genderQuery(id)
		q.RecordType = "enrollment"
		q.GroupBy = []aggregate.Dimension{{Field: "education_level", Values: aggLevels}}
		return q
	}
	queries := []aggregate.Query{genderQuery("p-1"), enrolQuery("p-2"), genderQuery("p-3"), enrolQuery("p-4"), genderQuery("p-5")}
	for i, q := range queries {
		rel := f.run(t, q)
		want := aggUnis
		if i >= 3 {
			want = []string{"uni-a", "uni-b"}
		}
		if !slices.Equal(rel.Survivors, want) {
			t.Errorf("%s (%s): survivors %v, want %v", q.ID, q.RecordType, rel.Survivors, want)
		}
	}
	ev := aggEvidence(t, f.s.Configs["uni-c"].DataDir)
	for i, q := range queries {
		refused := hasEntry(ev, q.ID+"-r1", "budget_exceeded") != nil
		if refused != (i >= 3) {
			t.Errorf("uni-c on %s (%s): refused %v, want %v", q.ID, q.RecordType, refused, i >= 3)
		}
	}
	year := strconv.Itoa(time.Now().UTC().Year())
	budgets, err := f.unis["uni-c"].Aggregator().Budgets(ctx)
	if err != nil || len(budgets) != 1 {
		t.Fatalf("uni-c's ledger: %+v %v; want one account", budgets, err)
	}
	if b := budgets[0]; b.Population != "student_id" || b.Releases != 3 || b.Spent > 0.15 || b.Budget != 0.15 || b.Window != year {
		t.Errorf("uni-c's account %+v, want student_id in %s: three releases of the 0.15", b, year)
	}
	// The others, at the default budget, hold one account for the
	// students too, with all five releases.
	budgets, err = f.unis["uni-a"].Aggregator().Budgets(ctx)
	if err != nil || len(budgets) != 1 || budgets[0].Population != "student_id" || budgets[0].Releases != 5 {
		t.Errorf("uni-a's ledger: %+v %v; want one student_id account with five releases", budgets, err)
	}
}

// TestAggregateLedgerMigration: a ledger stored in version 1, with one
// account per record type, is read as one account per population, the
// spends of the record types about the students summed into the year of
// its last change; the next debit stores it in the present version.
func TestAggregateLedgerMigration(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	agg := f.unis["uni-c"].Aggregator()
	v1 := `{"version":1,"accounts":[` +
		`{"recipient":"center","dataset":"enrollment","budget_nano_rho":500000000,"spent_nano_rho":200000000,"releases":4},` +
		`{"recipient":"center","dataset":"student","budget_nano_rho":500000000,"spent_nano_rho":250000000,"releases":5}]}`
	last := time.Now().UTC()
	if err := agg.StoreLedgerBody(ctx, []byte(v1), last); err != nil {
		t.Fatal(err)
	}
	year := strconv.Itoa(last.Year())
	budgets, err := agg.Budgets(ctx)
	if err != nil || len(budgets) != 1 {
		t.Fatalf("migrated ledger: %+v %v; want one account", budgets, err)
	}
	if b := budgets[0]; b.Population != "student_id" || b.Window != year || b.Releases != 9 || b.Spent != 0.45 || b.Budget != 0.5 {
		t.Errorf("migrated account %+v, want student_id in %s: 0.45 of 0.5 in nine releases", b, year)
	}
	// 0.05 is left: one more release, then uni-c declines.
	f.checkGender(t, f.run(t, genderQuery("m-1")), aggUnis...)
	f.checkGender(t, f.run(t, genderQuery("m-2")), "uni-a", "uni-b")
	body, err := agg.LedgerBody(ctx)
	if err != nil || !strings.HasPrefix(string(body), `{"version":2,`) {
		t.Errorf("stored ledger after a debit: %s %v; want version 2", body, err)
	}
	budgets, err = agg.Budgets(ctx)
	if err != nil || len(budgets) != 1 || budgets[0].Releases != 10 || budgets[0].Spent > 0.5 {
		t.Errorf("ledger after the debit: %+v %v; want ten releases within 0.5", budgets, err)
	}
}

// TestAggregateStanding: a standing query gets a new round every interval
// until its deadline.
func TestAggregateStanding(t *testing.T) {
	f := newAggSpace(t)
	q := genderQuery("standing")
	q.RoundTimeout = aggregate.Duration(time.Second)
	q.Interval = aggregate.Duration(time.Second)
	q.Issued = time.Now().UTC()
	q.Deadline = q.Issued.Add(2500 * time.Millisecond)
	if _, err := f.center.Aggregator().Submit(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, r := range []string{"standing-r1", "standing-r2", "standing-r3"} {
		var rel *aggregate.Release
		wait.UntilErr(t, 15*time.Second, r+" released", func() error {
			var err error
			rel, err = f.center.Aggregator().Wait(ctx, r)
			if err != nil && !errors.Is(err, aggregate.ErrUnknownRelease) {
				t.Fatalf("%s: %v", r, err)
			}
			return err
		})
		f.checkGender(t, rel, aggUnis...)
	}
	// r3 started too close to the deadline for another round: the query is
	// done, and no round follows.
	wait.UntilErr(t, 15*time.Second, "the standing query done", func() error {
		state, err := f.center.Aggregator().QueryState(ctx, "standing")
		if err != nil {
			t.Fatal(err)
		}
		if state != "done" {
			return fmt.Errorf("state %s", state)
		}
		return nil
	})
	if _, err := f.center.Aggregator().Release(ctx, "standing-r4"); !errors.Is(err, aggregate.ErrUnknownRelease) {
		t.Errorf("a round after the deadline: %v", err)
	}
}

// TestAggregateRefusesBadQueries: invalid queries are refused at the center
// with the field named; over the wire, a university refuses and counts an
// unsigned, forged, self-proclaimed or malformed query.
func TestAggregateRefusesBadQueries(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	for field, edit := range map[string]func(*aggregate.Query){
		"group_by[0].field": func(q *aggregate.Query) { q.GroupBy[0].Field = "name" },
		"threshold":         func(q *aggregate.Query) { q.Threshold = 1 },
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
	// Over the admin API: problem type undeclared-dimension.
	body, err := json.Marshal(map[string]any{"id": "undeclared", "record_type": "student", "purpose": "statistics",
		"group_by": []map[string]any{{"field": "religion", "values": []string{"x"}}}, "measure": map[string]any{"kind": "count"},
		"rho": 0.05, "participants": aggUnis, "threshold": 2, "colluders": 0})
	if err != nil {
		t.Fatal(err)
	}
	code, problem := admin(t, f.center, http.MethodPost, "/v1/aggregate-queries", bytes.NewReader(body))
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(problem), "undeclared-dimension") ||
		!strings.Contains(string(problem), "group_by[0].field") {
		t.Errorf("POST a query grouping by religion: %d %s", code, problem)
	}
	if v := metricValue(t, f.center, `eduspace_aggregate_queries_refused_total{reason="undeclared_dimension"}`); v != 2 {
		t.Errorf("center: queries refused for an undeclared dimension: %v, want 2", v)
	}
	if _, err := f.unis["uni-a"].Aggregator().Submit(ctx, genderQuery("x")); !errors.Is(err, aggregate.ErrNotCenter) {
		t.Errorf("a university submits: %v", err)
	}

	// Over the wire, to uni-b.
	nc, err := nats.Connect(f.s.Emb.ClientURL())
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
	raw := func(q aggregate.Query) []byte {
		b, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sign := func(from string, data []byte) (string, []byte) {
		k, err := keys.LoadKeys(filepath.Join(f.s.Dir, from))
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
		body, err := json.Marshal(map[string]any{"type": "round", "round": fmt.Sprintf("wire-r%d", i+1), "query": sq})
		if err != nil {
			t.Fatal(err)
		}
		f.sendRaw(t, nc, c.from, "uni-b", body)
	}
	defer func() {
		if t.Failed() {
			for _, l := range strings.Split(nodetest.Scrape(t, f.unis["uni-b"]), "\n") {
				if strings.Contains(l, "refused") && !strings.HasSuffix(l, " 0") {
					t.Log(l)
				}
			}
		}
	}()
	wait.Until(t, 20*time.Second, "uni-b to refuse five queries", func() bool {
		return metricValue(t, f.unis["uni-b"], `eduspace_aggregate_queries_refused_total{reason="bad_signature"}`) == 3 &&
			metricValue(t, f.unis["uni-b"], `eduspace_aggregate_queries_refused_total{reason="bad_query"}`) == 1 &&
			metricValue(t, f.unis["uni-b"], `eduspace_aggregate_queries_refused_total{reason="undeclared_dimension"}`) == 1
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
	k, err := keys.LoadKeys(filepath.Join(f.s.Dir, from))
	if err != nil {
		t.Fatal(err)
	}
	root, err := crypto.ReadAuthorityPublicKey(f.s.Pub)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(f.s.Dir, to, "credential.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := crypto.ParseCredential(strings.TrimSpace(string(tok)), root, nodetest.SpaceID, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kem := cred.CurrentKEMKey()
	now := time.Now()
	h := crypto.Header{Suite: kem.Suite(), Sender: from, SenderKeyID: k.Signing.Public().KeyID(), Recipient: to,
		RecipientKeyID: kem.KeyID(), Created: now, Expires: now.Add(time.Hour), Count: 1, Kind: crypto.KindAggregate}
	if _, err := rand.Read(h.ID[:]); err != nil {
		t.Fatal(err)
	}
	data, err := crypto.Seal(rand.Reader, h, kem, k.Signing, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Request(bus.Layout{Space: nodetest.SpaceID}.ControlSubject(to, from), data, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAggregateRevokedMemberLeftOut: a participant the authority revoked
// is left out of the rounds from the start (nothing sealed to it, counted
// as revoked in the center's evidence), and the others' round completes.
func TestAggregateRevokedMemberLeftOut(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	_, list, err := authority.Revoke(f.s.AK, f.s.Dir, nodetest.SpaceID, crypto.Revocation{NodeID: "uni-c", Revoked: time.Now().Add(-time.Second)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := authority.PublishRevocations(ctx, nodetest.JetStream(t, f.s.Emb.ClientURL()), nodetest.SpaceID, list); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the center to hold the revocation list", func() bool { return f.center.RevocationSerial() == 1 })
	q := genderQuery("without-revoked")
	rel := f.run(t, q)
	f.checkGender(t, rel, "uni-a", "uni-b")
	if rel.Declined["uni-c"] != "revoked" {
		t.Errorf("release declined: %v, want uni-c revoked", rel.Declined)
	}
	e := hasEntry(aggEvidence(t, f.s.Configs[aggCenter].DataDir), q.ID+"-r1", "round_started")
	if d, _ := e["detail"].(map[string]any); d == nil || d["revoked"] != float64(1) {
		t.Errorf("the center's round_started entry: %v, want one participant revoked", e)
	}
}

// TestAggregateQueryCancel: a standing query is listed, cancelled (no
// round starts after it, evidence kept), and cannot be cancelled twice;
// the center's rounds list what each released, over the admin API too.
func TestAggregateQueryCancel(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	agg := f.center.Aggregator()
	q := genderQuery("cancel-me")
	q.RoundTimeout = aggregate.Duration(time.Second)
	q.Interval = aggregate.Duration(time.Second)
	q.Issued = time.Now().UTC()
	q.Deadline = q.Issued.Add(time.Minute)
	if _, err := agg.Submit(ctx, q); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := agg.Wait(wctx, "cancel-me-r1"); err != nil {
		t.Fatal(err)
	}
	list, err := agg.Queries(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "cancel-me" || list[0].State != "active" || list[0].Next == nil {
		t.Fatalf("queries: %+v, %v; want cancel-me active with a next round", list, err)
	}
	qs, err := agg.Cancel(ctx, "cancel-me")
	if err != nil || qs.State != "cancelled" || qs.Next != nil {
		t.Fatalf("cancel: %+v, %v", qs, err)
	}
	cancelled := time.Now()
	if _, err := agg.Cancel(ctx, "cancel-me"); !errors.Is(err, aggregate.ErrQueryNotActive) {
		t.Errorf("cancel twice: %v, want ErrQueryNotActive", err)
	}
	if _, err := agg.Cancel(ctx, "no-such-query"); !errors.Is(err, aggregate.ErrUnknownQuery) {
		t.Errorf("cancel an unknown query: %v, want ErrUnknownQuery", err)
	}
	// Two intervals on, no round has started since.
	if err := wait.For(wctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	rounds, err := agg.Rounds(ctx)
	if err != nil || len(rounds) == 0 {
		t.Fatalf("rounds: %+v, %v", rounds, err)
	}
	for _, r := range rounds {
		if r.Started.After(cancelled) {
			t.Errorf("round %s started after the query was cancelled", r.ID)
		}
	}
	if hasEntry(aggEvidence(t, f.s.Configs[aggCenter].DataDir), "cancel-me", "query_cancelled") == nil {
		t.Error("the cancellation is not in the center's evidence")
	}
	// Over the admin API.
	tok, err := os.ReadFile(filepath.Join(f.s.Configs[aggCenter].DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+f.center.AdminAddr()+"/v1/aggregate-rounds", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got []aggregate.RoundInfo
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(got) != len(rounds) || got[len(got)-1].ID != "cancel-me-r1" || got[len(got)-1].State != "released" {
		t.Errorf("GET /v1/aggregate-rounds: %s, %+v", resp.Status, got)
	}
}

// TestAggregateDeviatingCenter: the lists U2 and U3 are in the evidence on
// both sides under the same digests; a center that sends a university a
// list U2 shorter than t, or a second survivor list that flips a peer
// between survivor and dropped, is refused with evidence, and the round
// fails rather than anyone's table being unmasked.
func TestAggregateDeviatingCenter(t *testing.T) {
	f := newAggSpace(t)
	centerDir := f.s.Configs[aggCenter].DataDir

	rel := f.run(t, genderQuery("lists"))
	f.checkGender(t, rel, aggUnis...)
	cev := aggEvidence(t, centerDir)
	u2, u3 := hasEntry(cev, "lists-r1", "shared_list"), hasEntry(cev, "lists-r1", "survivors_list")
	if u2 == nil || u3 == nil || u2["digest"] == nil || u3["digest"] == nil {
		t.Fatalf("center's evidence: want shared_list and survivors_list with digests: %v", cev)
	}
	for _, u := range aggUnis {
		ev := aggEvidence(t, f.s.Configs[u].DataDir)
		c, un := hasEntry(ev, "lists-r1", "contributed"), hasEntry(ev, "lists-r1", "unmasked")
		if c == nil || un == nil {
			t.Fatalf("%s: want contributed and unmasked: %v", u, ev)
		}
		if c["digest"] != u2["digest"] || un["digest"] != u3["digest"] {
			t.Errorf("%s: digests U2 %v, U3 %v; the center recorded %v, %v", u, c["digest"], un["digest"], u2["digest"], u3["digest"])
		}
	}

	fails := func(t *testing.T, id string) {
		t.Helper()
		q := genderQuery(id)
		q.RoundTimeout = aggregate.Duration(2 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		info, err := f.center.Aggregator().Submit(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if rel, err := f.center.Aggregator().Wait(ctx, info.Round); err == nil {
			t.Fatalf("round released %+v", rel)
		}
	}

	t.Run("short U2", func(t *testing.T) {
		f.center.Aggregator().SetDeviation("short_u2")
		defer f.center.Aggregator().SetDeviation("")
		fails(t, "short-u2")
		for _, u := range aggUnis {
			ev := aggEvidence(t, f.s.Configs[u].DataDir)
			e := hasEntry(ev, "short-u2-r1", aggregate.ListShort)
			if e == nil || hasEntry(ev, "short-u2-r1", "contributed") != nil {
				t.Errorf("%s: want %s and no contributed entry: %v", u, aggregate.ListShort, ev)
				continue
			}
			d := e["detail"].(map[string]any)
			if d["members"] != 1.0 || d["threshold"] != 2.0 || d["member:"+u] != 1.0 {
				t.Errorf("%s: detail %v, want one member (itself), threshold 2", u, d)
			}
		}
	})

	t.Run("conflicting U3", func(t *testing.T) {
		f.center.Aggregator().SetDeviation("equivocate_u3")
		defer f.center.Aggregator().SetDeviation("")
		fails(t, "conflict")
		for _, u := range aggUnis {
			// The round fails at the center as soon as it gives up; the
			// second, conflicting list may still be on its way to u.
			var ev, unmasked, refused []map[string]any
			wait.Until(t, 20*time.Second, u+" to refuse the conflicting list", func() bool {
				ev, unmasked, refused = aggEvidence(t, f.s.Configs[u].DataDir), nil, nil
				for _, e := range ev {
					if e["envelope"] != "conflict-r1" {
						continue
					}
					switch e["reason"] {
					case "unmasked":
						unmasked = append(unmasked, e)
					case aggregate.ListConflict:
						refused = append(refused, e)
					}
				}
				return len(refused) > 0
			})
			// u signed the first list and refuses the second: it reveals
			// no share at all.
			if len(unmasked) != 0 || len(refused) != 1 {
				t.Errorf("%s: %d unmasked and %d %s entries, want 0 and 1: %v", u, len(unmasked), len(refused), aggregate.ListConflict, ev)
				continue
			}
			// The refused list is the true U3; the one peer the first list
			// left out is named as flipped.
			d := refused[0]["detail"].(map[string]any)
			var flipped []string
			for _, p := range aggUnis {
				if d["member:"+p] != 1.0 {
					t.Errorf("%s: the second list lacks %s: %v", u, p, d)
				}
				if d["flipped:"+p] == 1.0 {
					flipped = append(flipped, p)
				}
			}
			if len(flipped) != 1 || flipped[0] == u || d["flipped"] != 1.0 {
				t.Errorf("%s: flipped %v (%v), want one peer other than itself", u, flipped, d["flipped"])
			}
		}
	})
}

// TestAggregateConsistencyRound: a center that gives one survivor a
// different list U3 than the others (telling it that a peer dropped) gets
// no unmask response from the university that saw the other list: each
// survivor signs the list it saw, and reveals its shares only over t valid
// signatures of members of U3 on that same list. Relaying every signature,
// the center gets no answer at all; relaying to each only the signatures
// on its own list, it gets answers from the majority that saw the true U3
// and releases the sum over it, nothing else.
func TestAggregateConsistencyRound(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	run := func(t *testing.T, id string) (*aggregate.Release, error) {
		t.Helper()
		q := genderQuery(id)
		q.RoundTimeout = aggregate.Duration(2 * time.Second)
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		info, err := f.center.Aggregator().Submit(wctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return f.center.Aggregator().Wait(wctx, info.Round)
	}
	// inconsistent returns u's inconsistent_survivors entry of round and
	// checks that u answered nothing.
	inconsistent := func(t *testing.T, u, round string) map[string]any {
		t.Helper()
		var e map[string]any
		wait.Until(t, 20*time.Second, u+" to refuse the signatures of "+round, func() bool {
			e = hasEntry(aggEvidence(t, f.s.Configs[u].DataDir), round, aggregate.ListInconsistent)
			return e != nil
		})
		if un := hasEntry(aggEvidence(t, f.s.Configs[u].DataDir), round, "unmasked"); un != nil {
			t.Errorf("%s answered the unmask step of %s: %v", u, round, un)
		}
		return e["detail"].(map[string]any)
	}

	t.Run("every signature relayed", func(t *testing.T) {
		f.center.Aggregator().SetDeviation("split_u3")
		defer f.center.Aggregator().SetDeviation("")
		rel, err := run(t, "split")
		if err == nil || !strings.Contains(err.Error(), "0 unmask responses") {
			t.Fatalf("round: %+v, %v; want it failed with no unmask response", rel, err)
		}
		// uni-a was told {uni-a, uni-b}; uni-b and uni-c the true U3.
		d := inconsistent(t, "uni-a", "split-r1")
		if d["members"] != 2.0 || d["member:uni-c"] != nil || d["invalid:uni-b"] != 1.0 || d["invalid:uni-c"] != 1.0 || d["valid"] != 1.0 {
			t.Errorf("uni-a: detail %v, want its list of two, uni-b's and uni-c's signatures invalid on it", d)
		}
		for _, u := range []string{"uni-b", "uni-c"} {
			d := inconsistent(t, u, "split-r1")
			if d["members"] != 3.0 || d["invalid"] != 1.0 || d["invalid:uni-a"] != 1.0 || d["valid"] != 2.0 {
				t.Errorf("%s: detail %v, want the list of three, uni-a's signature alone invalid on it", u, d)
			}
		}
	})

	t.Run("signatures filtered", func(t *testing.T) {
		f.center.Aggregator().SetDeviation("split_u3_filter")
		defer f.center.Aggregator().SetDeviation("")
		rel, err := run(t, "filter")
		if err != nil {
			t.Fatal(err)
		}
		// The release is the sum over the U3 the majority signed.
		f.checkGender(t, rel, aggUnis...)
		d := inconsistent(t, "uni-a", "filter-r1")
		if d["valid"] != 1.0 || d["invalid"] != 0.0 || d["threshold"] != 2.0 {
			t.Errorf("uni-a: detail %v, want its own signature alone, under the threshold 2", d)
		}
		for _, u := range []string{"uni-b", "uni-c"} {
			un := hasEntry(aggEvidence(t, f.s.Configs[u].DataDir), "filter-r1", "unmasked")
			if un == nil || un["detail"].(map[string]any)["signatures"] != 2.0 {
				t.Errorf("%s: unmasked entry %v, want one over two signatures", u, un)
			}
		}
	})

	// The deviations are over: an honest round completes.
	f.checkGender(t, f.run(t, genderQuery("honest")), aggUnis...)
	for _, u := range aggUnis {
		if _, err := f.unis[u].VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", u, err)
		}
	}
}

// TestAggregateColludersFloor: aggregate.colluders is the fewest colluders
// a query must tolerate: the center refuses to submit one below its own,
// and a university declines one below its own (too_few_colluders).
func TestAggregateColludersFloor(t *testing.T) {
	f := newAggSpaceWith(t, func(id string, cfg *node.Config) {
		switch id {
		case aggCenter:
			cfg.Aggregate.Colluders = 1
		case "uni-c":
			cfg.Aggregate.Colluders = 2
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := f.center.Aggregator().Submit(ctx, genderQuery("no-colluder"))
	if err == nil || !strings.Contains(err.Error(), "aggregate query: colluders: 0, this node requires at least 1") {
		t.Fatalf("c = 0 at a center requiring 1: %v", err)
	}
	q := genderQuery("one-colluder")
	q.Threshold, q.Colluders = 3, 1
	q.RoundTimeout = aggregate.Duration(2 * time.Second)
	info, err := f.center.Aggregator().Submit(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.center.Aggregator().Wait(ctx, info.Round); err == nil || !strings.Contains(err.Error(), "too_few_survivors") {
		t.Errorf("uni-c declining a round with t = 3 of 3: %v, want too_few_survivors", err)
	}
	if hasEntry(aggEvidence(t, f.s.Configs["uni-c"].DataDir), "one-colluder-r1", aggregate.RefuseColluders) == nil {
		t.Errorf("uni-c's evidence has no %s entry", aggregate.RefuseColluders)
	}
	if v := metricValue(t, f.unis["uni-c"], `eduspace_aggregate_queries_refused_total{reason="too_few_colluders"}`); v != 1 {
		t.Errorf("uni-c refused %v queries for too few colluders, want 1", v)
	}
	if hasEntry(aggEvidence(t, f.s.Configs["uni-a"].DataDir), "one-colluder-r1", "joined") == nil {
		t.Error("uni-a (no floor above 1) did not join")
	}
}

// TestAggregateDimensionMinimumCell: a cell under the minimum cell size
// the standard declares for a dimension is suppressed even when the
// query's k is lower; the release states the k applied.
func TestAggregateDimensionMinimumCell(t *testing.T) {
	f := newAggSpace(t)
	ctx := context.Background()
	for i, id := range aggUnis {
		var b strings.Builder
		for j := range 8 {
			hukou := []string{"城镇", "非农业户口", "农业户口"}[min(j/3, 2)] // 3 城镇, 3 非农业户口, 2 农业户口
			fmt.Fprintf(&b, `{"type":"student","student_id":"H%d%02d","hukou_type":%q}`+"\n", i, j, hukou)
		}
		if res, err := f.unis[id].Ingest(ctx, strings.NewReader(b.String()), ""); err != nil || res.Invalid != 0 {
			t.Fatalf("ingest at %s: %v %+v", id, err, res)
		}
		a := &policy.Agreement{ID: id + "-center-hukou", Provider: id, Recipient: aggCenter,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"student_id", "hukou_type"}},
			MaxLevel:    schema.L3, RetentionDays: 30, ValidFrom: f.s.Now.Add(-time.Hour), ValidUntil: f.s.Now.Add(24 * time.Hour)}
		for _, n := range []*node.Node{f.unis[id], f.center} {
			if err := n.AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	q := genderQuery("hukou")
	q.GroupBy = []aggregate.Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}}
	q.K = 2
	rel := f.run(t, q)
	if rel.K != 10 {
		t.Errorf("release k = %d, want 10 (the hukou_type dimension's minimum, above the query's 2)", rel.K)
	}
	var students int64
	for _, u := range aggUnis {
		students += f.plain[u].gender["女"] + f.plain[u].gender["男"] + f.plain[u].gender[""]
	}
	want := map[string]int64{"城镇": 18, "农村": -1, "": students} // -1: suppressed (6 < 10)
	if len(rel.Cells) != 3 || rel.CellsSuppressed != 1 {
		t.Fatalf("%d cells, %d suppressed; want 3, 1: %+v", len(rel.Cells), rel.CellsSuppressed, rel.Cells)
	}
	for _, c := range rel.Cells {
		w := want[c.Key[0]]
		switch {
		case w < 0 && (!c.Suppressed || c.Count != nil):
			t.Errorf("cell %q: %+v, want suppressed", c.Key, c)
		case w >= 0 && (c.Suppressed || c.Count == nil || *c.Count != w):
			t.Errorf("cell %q: %+v, want %d", c.Key, c, w)
		}
	}
}
