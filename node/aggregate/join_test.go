package aggregate_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Joined aggregates among a senior high school (the population: its
// students by household registration and gender) and two universities
// (the outcome: enrollment, employment with a starting salary). The
// linkage is injected (SetPseudonyms): a keyed hash of the person, which
// the test knows for every subject key; the real linkage is wired in
// node.go and exercised in test/.

var joinLinkKey = []byte("join test linkage key")

// joinPerson is one person of the synthetic cohort.
type joinPerson struct {
	hukou, gender string
	uni           string // "", "uni-a", "uni-b"
	salary        int64  // 0: not employed
}

func joinCohort(n int) []joinPerson {
	var out []joinPerson
	for i := range n {
		p := joinPerson{hukou: []string{"城镇", "农村"}[i%2], gender: []string{"女", "男"}[(i/2)%2]}
		// Progression depends on the cell, so that the rates differ.
		switch {
		case i%5 < 2:
			p.uni = "uni-a"
		case i%5 == 2 && p.hukou == "城镇":
			p.uni = "uni-b"
		}
		if p.uni != "" && i%3 != 0 {
			p.salary = 4000 + int64(i%7)*500
		}
		out = append(out, p)
	}
	return out
}

func joinPseudonym(person int) [32]byte {
	m := hmac.New(sha256.New, joinLinkKey)
	fmt.Fprintf(m, "person %d", person)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

type joinFixture struct {
	s      *nodetest.Space
	center *node.Node
	nodes  map[string]*node.Node
	cohort []joinPerson
}

var joinParts = []string{"hs", "uni-a", "uni-b"}

// newJoinSpace opens the center, the school and two universities with
// their records and statistics agreements; noise off when exact.
func newJoinSpace(t *testing.T, people int, exact bool) *joinFixture {
	t.Helper()
	return newJoinSpaceWithout(t, people, exact, nil)
}

// joinPairAgreement is the agreement under which the school sends uni its
// join lists: statistics, the population's record type with the fields of
// its cells (AGGREGATES.md §7).
func joinPairAgreement(now time.Time, uni string) *policy.Agreement {
	return &policy.Agreement{ID: "hs-" + uni + "-join", Provider: "hs", Recipient: uni,
		Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
		RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}},
		MaxLevel:    schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour)}
}

// newJoinSpaceWithout is newJoinSpace with the school–university
// agreements installed on both sides except at the "node:agreement id"
// pairs of skip.
func newJoinSpaceWithout(t *testing.T, people int, exact bool, skip map[string]bool) *joinFixture {
	t.Helper()
	ctx := context.Background()
	f := &joinFixture{s: nodetest.NewSpace(t), nodes: map[string]*node.Node{}, cohort: joinCohort(people)}
	f.center = f.s.Open(f.s.Member(aggCenter, crypto.RoleCenter))
	recs := map[string]*strings.Builder{}
	ps := map[string]map[string][32]byte{}
	for _, id := range joinParts {
		recs[id], ps[id] = &strings.Builder{}, map[string][32]byte{}
	}
	for i, p := range f.cohort {
		sid := fmt.Sprintf("H%05d", i)
		fmt.Fprintf(recs["hs"], `{"type":"student","student_id":%q,"gender":%q,"hukou_type":%q}`+"\n", sid, p.gender, p.hukou)
		ps["hs"][sid] = joinPseudonym(i)
		if p.uni != "" {
			usid := fmt.Sprintf("%s-%05d", p.uni, i)
			fmt.Fprintf(recs[p.uni], `{"type":"student","student_id":%q}`+"\n", usid)
			fmt.Fprintf(recs[p.uni], `{"type":"enrollment","student_id":%q,"education_level":"本科"}`+"\n", usid)
			if p.salary > 0 {
				fmt.Fprintf(recs[p.uni], `{"type":"employment","student_id":%q,"employer_region":"440300","starting_salary_cny":%d}`+"\n", usid, p.salary)
			}
			ps[p.uni][usid] = joinPseudonym(i)
		}
	}
	// Persons at the universities who were not at the school: never counted.
	for _, u := range []string{"uni-a", "uni-b"} {
		for j := range 25 {
			usid := fmt.Sprintf("%s-x%04d", u, j)
			fmt.Fprintf(recs[u], `{"type":"student","student_id":%q}`+"\n", usid)
			fmt.Fprintf(recs[u], `{"type":"enrollment","student_id":%q}`+"\n", usid)
			fmt.Fprintf(recs[u], `{"type":"employment","student_id":%q,"starting_salary_cny":9000}`+"\n", usid)
			ps[u][usid] = joinPseudonym(100000 + j)
		}
	}
	for _, id := range joinParts {
		n := f.s.Open(f.s.Member(id, crypto.RoleUniversity))
		f.nodes[id] = n
		n.Aggregator().SetTestKnobs(exact, "")
		mine := ps[id]
		n.Aggregator().SetPseudonyms(func(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, error) {
			out := map[string][32]byte{}
			for s, p := range mine {
				// per purpose and epoch, as the linkage makes them
				m := hmac.New(sha256.New, p[:])
				fmt.Fprintf(m, "%s|%s", purpose, epoch)
				var v [32]byte
				m.Sum(v[:0])
				out[s] = v
			}
			return out, nil
		})
		res, err := n.Ingest(ctx, strings.NewReader(recs[id].String()), "")
		if err != nil || res.Invalid != 0 {
			t.Fatalf("ingest at %s: %v %+v", id, err, res)
		}
		a := &policy.Agreement{ID: id + "-center-statistics", Provider: id, Recipient: aggCenter,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{
				"student":    {"student_id", "gender", "hukou_type"},
				"enrollment": {"student_id", "education_level"},
				"employment": {"student_id", "employer_region", "starting_salary_cny"},
			},
			MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: f.s.Now.Add(-time.Hour), ValidUntil: f.s.Now.Add(24 * time.Hour)}
		for _, n := range []*node.Node{n, f.center} {
			if err := n.AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, u := range []string{"uni-a", "uni-b"} {
		a := joinPairAgreement(f.s.Now, u)
		for _, id := range []string{"hs", u} {
			if skip[id+":"+a.ID] {
				continue
			}
			if err := f.nodes[id].AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

// joinQuery: the school's students by hukou_type and gender, linked to an
// outcome record at either university.
func joinQuery(id, outcome string, measure aggregate.Measure) aggregate.Query {
	return aggregate.Query{ID: id, RecordType: "student", Purpose: policy.PurposeStatistics,
		GroupBy: []aggregate.Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}, {Field: "gender", Values: []string{"女", "男"}}},
		Measure: aggregate.Measure{Kind: "count"}, K: 10, Rho: 0.2, Participants: joinParts, Threshold: 3, Colluders: 1,
		RoundTimeout: aggregate.Duration(20 * time.Second),
		Join: &aggregate.Join{LinkPurpose: policy.PurposeStatistics, Epoch: strconv.Itoa(time.Now().UTC().Year()), Population: []string{"hs"},
			Outcome: aggregate.JoinOutcome{RecordType: outcome, Participants: []string{"uni-a", "uni-b"}, Measure: measure}}}
}

// truth is the exact joined answer per population cell (hukou, gender):
// population, persons with the outcome, and the sum of salaries.
func (f *joinFixture) truth(outcome string) map[[2]string][3]int64 {
	out := map[[2]string][3]int64{}
	for _, p := range f.cohort {
		k := [2]string{p.hukou, p.gender}
		v := out[k]
		v[0]++
		if p.uni != "" && (outcome == "enrollment" || p.salary > 0) {
			v[1]++
			v[2] += p.salary
		}
		out[k] = v
	}
	return out
}

func (f *joinFixture) run(t *testing.T, q aggregate.Query) (*aggregate.Release, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	info, err := f.center.Aggregator().Submit(ctx, q)
	if err != nil {
		return nil, err
	}
	rel, err := f.center.Aggregator().Wait(ctx, info.Round)
	if err != nil {
		rounds, _ := f.center.Aggregator().Rounds(ctx)
		for _, r := range rounds {
			if r.ID == info.Round {
				t.Logf("round %s: declined %v", r.ID, r.Declined)
			}
		}
	}
	return rel, err
}

// joinOutcomes are the outcomes the joined tests count: enrollments, and
// the bounded sum of starting salaries.
var joinOutcomes = []struct {
	outcome string
	measure aggregate.Measure
}{
	{"enrollment", aggregate.Measure{Kind: "count"}},
	{"employment", aggregate.Measure{Kind: "sum", Field: "starting_salary_cny", Lower: 0, Upper: 20000}},
}

// TestJoinedAggregateExact: with noise off, the joined counts and sums
// equal the true joined answers exactly; persons at the universities who
// were not in the school's population are not counted.
func TestJoinedAggregateExact(t *testing.T) {
	f := newJoinSpace(t, 200, true)
	for _, c := range joinOutcomes {
		rel, err := f.run(t, joinQuery("join-"+c.outcome, c.outcome, c.measure))
		if err != nil {
			t.Fatal(err)
		}
		if rel.Joined == nil || len(rel.Joined.Cells) != 9 {
			t.Fatalf("%s: joined release %+v", c.outcome, rel.Joined)
		}
		truth := f.truth(c.outcome)
		for _, cell := range rel.Joined.Cells {
			want := truth[[2]string{cell.Key[0], cell.Key[1]}]
			if want[0] == 0 || want[1] < 10 {
				if !cell.Suppressed {
					t.Errorf("%s %q: released %+v, want suppressed (true %v)", c.outcome, cell.Key, cell, want)
				}
				continue
			}
			if cell.Suppressed || *cell.Population != want[0] || *cell.Count != want[1] {
				t.Errorf("%s %q: got %+v, want population %d count %d", c.outcome, cell.Key, cell, want[0], want[1])
				continue
			}
			if c.measure.Kind == "sum" {
				if *cell.Sum != want[2] || cell.Mean == nil || math.Abs(*cell.Mean-float64(want[2])/float64(want[1])) > 1e-9 || cell.RateAccuracy == nil {
					t.Errorf("%s %q: sum %v mean %v, want %d", c.outcome, cell.Key, *cell.Sum, cell.Mean, want[2])
				}
			}
			if cell.Rate == nil || math.Abs(*cell.Rate-float64(want[1])/float64(want[0])) > 1e-9 {
				t.Errorf("%s %q: rate %v, want %d/%d", c.outcome, cell.Key, cell.Rate, want[1], want[0])
			}
			if cell.Accuracy == nil || !(cell.Accuracy.HalfWidth > 0) {
				t.Errorf("%s %q: no accuracy", c.outcome, cell.Key)
			}
		}
		t.Logf("%s: %d cells released, %d suppressed, ρ = %.4f", c.outcome, rel.CellsReleased, rel.CellsSuppressed, rel.Rho)
	}
	// Grouped by an outcome dimension too: every employment record of the
	// cohort is in region 440300, so the other region's cells are empty.
	q := joinQuery("join-region", "employment", aggregate.Measure{Kind: "count"})
	q.Join.Outcome.GroupBy = []aggregate.Dimension{{Field: "employer_region", Values: []string{"440300"}}}
	q.Rho = 0.05 // what is left of the year's 0.5
	rel, err := f.run(t, q)
	if err != nil {
		t.Fatal(err)
	}
	truth := f.truth("employment")
	if len(rel.Joined.Cells) != 18 || !slices.Equal(rel.Joined.OutcomeGroupBy, []string{"employer_region"}) {
		t.Fatalf("by region: %d cells, outcome group_by %v; want 18, [employer_region]", len(rel.Joined.Cells), rel.Joined.OutcomeGroupBy)
	}
	for _, cell := range rel.Joined.Cells {
		want := truth[[2]string{cell.Key[0], cell.Key[1]}]
		if cell.Key[2] == "" || want[1] < 10 {
			if !cell.Suppressed {
				t.Errorf("by region %q: released %+v, want suppressed", cell.Key, cell)
			}
		} else if cell.Suppressed || *cell.Count != want[1] || *cell.Population != want[0] {
			t.Errorf("by region %q: %+v, want count %d of %d", cell.Key, cell, want[1], want[0])
		}
	}

	// Served as CSV over the admin API: one row per joined cell.
	code, body := admin(t, f.center, http.MethodGet, "/v1/aggregates/join-enrollment-r1.csv", nil)
	if code != 200 || !strings.HasPrefix(string(body), "hukou_type,gender,population,count,rate,level,lower,upper,suppressed\n") ||
		strings.Count(string(body), "\n") != 10 {
		t.Errorf("joined CSV: %d\n%s", code, body)
	}
	// Both sides debited their population's account (student_id).
	for _, id := range joinParts {
		acc, err := f.nodes[id].Aggregator().Budgets(context.Background())
		if err != nil || len(acc) != 1 || acc[0].Population != "student_id" || !(acc[0].Spent > 0) {
			t.Errorf("%s ledger: %+v %v", id, acc, err)
		}
	}
}

// TestJoinedAggregateTruth: with noise on, every released rate and mean
// is within its stated accuracy of the true joined answer.
func TestJoinedAggregateTruth(t *testing.T) {
	f := newJoinSpace(t, 400, false)
	// Each stated interval covers its value with probability 0.999 on its
	// own; over the ~20 values checked here one outside is expected in
	// about 2 % of runs. So: at most one cell with a value beyond its
	// interval (a count and the rate made from it are one event; two such
	// cells happen in well under 0.1 % of runs), and none beyond 1.5 times it (a z of 4.9:
	// about one in a million) — a wrong variance fails either at once.
	checked, beyond, cellBeyond := 0, 0, false // cells with a value beyond its interval
	within := func(what string, got, exact, half float64) {
		t.Helper()
		checked++
		d := math.Abs(got - exact)
		switch {
		case d > 1.5*half:
			t.Errorf("%s: %.4f, true %.4f, beyond 1.5 × its interval ±%.4f", what, got, exact, half)
		case d > half:
			cellBeyond = true
			t.Logf("%s: %.4f, true %.4f, beyond its interval ±%.4f", what, got, exact, half)
		}
	}
	for _, c := range []struct {
		outcome string
		measure aggregate.Measure
	}{
		{"enrollment", aggregate.Measure{Kind: "count"}},
		{"employment", aggregate.Measure{Kind: "sum", Field: "starting_salary_cny", Lower: 0, Upper: 20000}},
	} {
		rel, err := f.run(t, joinQuery("truth-"+c.outcome, c.outcome, c.measure))
		if err != nil {
			t.Fatal(err)
		}
		truth := f.truth(c.outcome)
		released := 0
		for _, cell := range rel.Joined.Cells {
			if cell.Suppressed {
				continue
			}
			released++
			cellBeyond = false
			want := truth[[2]string{cell.Key[0], cell.Key[1]}]
			a := cell.Accuracy
			if a.Level != aggregate.AccuracyLevel {
				t.Errorf("%s %q: accuracy at level %v, want %v", c.outcome, cell.Key, a.Level, aggregate.AccuracyLevel)
			}
			within(fmt.Sprintf("%s %q count", c.outcome, cell.Key), float64(*cell.Count), float64(want[1]), a.Count)
			ra := a
			if c.measure.Kind == "sum" {
				got, exact := *cell.Mean, float64(want[2])/float64(want[1])
				within(fmt.Sprintf("%s %q mean", c.outcome, cell.Key), got, exact, a.HalfWidth)
				t.Logf("%s %q: mean %.1f (true %.1f) ± %.1f at %.1f%%", c.outcome, cell.Key, got, exact, a.HalfWidth, 100*a.Level)
				ra = cell.RateAccuracy
			}
			got, exact := *cell.Rate, float64(want[1])/float64(want[0])
			within(fmt.Sprintf("%s %q rate", c.outcome, cell.Key), got, exact, ra.HalfWidth)
			if cellBeyond {
				beyond++
			}
			t.Logf("%s %q: rate %.4f (true %.4f) ± %.4f at %.1f%%", c.outcome, cell.Key, got, exact, ra.HalfWidth, 100*ra.Level)
		}
		if released < 4 {
			t.Errorf("%s: %d cells released, want the 4 main ones at least", c.outcome, released)
		}
	}
	if beyond > 1 {
		t.Errorf("%d cells with a value beyond its %.1f %% interval (of %d values checked); at most 1 expected", beyond, 100*aggregate.AccuracyLevel, checked)
	}
}

// TestJoinedAggregateRefusals: a joined query grouping by an undeclared
// dimension is refused at submission; one whose population is below the
// minimum, or past the budget, is declined by the school before it commits
// (the reason in the round's declines), and no round runs; so is one at a
// university whose linkage fails.
func TestJoinedAggregateRefusals(t *testing.T) {
	f := newJoinSpace(t, 60, true)
	ctx := context.Background()

	q := joinQuery("undeclared", "enrollment", aggregate.Measure{Kind: "count"})
	q.Join.Outcome.GroupBy = []aggregate.Dimension{{Field: "gender", Values: []string{"女"}}} // declared for student, not enrollment
	_, err := f.center.Aggregator().Submit(ctx, q)
	var de *aggregate.DimensionError
	if !errors.As(err, &de) || de.Reason() != aggregate.RefuseDimension {
		t.Errorf("outcome grouped by gender: %v, want undeclared_dimension", err)
	}
	q = joinQuery("undeclared2", "enrollment", aggregate.Measure{Kind: "count"})
	q.Join.Filter = []aggregate.Dimension{{Field: "shoe_size", Values: []string{"42"}}}
	if _, err := f.center.Aggregator().Submit(ctx, q); !errors.As(err, &de) {
		t.Errorf("filter by an undeclared dimension: %v, want undeclared_dimension", err)
	}

	declined := func(id string) map[string]string {
		t.Helper()
		rounds, err := f.center.Aggregator().Rounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rounds {
			if r.ID == id {
				return r.Declined
			}
		}
		return nil
	}
	q = joinQuery("small", "enrollment", aggregate.Measure{Kind: "count"})
	q.Join.MinPopulation = 61
	if _, err := f.run(t, q); err == nil {
		t.Error("a population of 60 with minimum 61: released")
	}
	if d := declined("small-r1"); d["hs"] != aggregate.RefusePopulation {
		t.Errorf("small population: declines %v, want hs %s", d, aggregate.RefusePopulation)
	}
	for _, e := range aggEvidence(t, f.s.Configs["hs"].DataDir) {
		if e["envelope"] == "small-r1" && e["reason"] != aggregate.RefusePopulation {
			t.Errorf("school took a step in the refused round: %v", e["reason"])
		}
	}

	// An epoch other than this year's or last year's is declined before
	// any linkage (bad_query): a center must not make every participant
	// link all its students again for epochs it names at will.
	q = joinQuery("old-epoch", "enrollment", aggregate.Measure{Kind: "count"})
	q.Join.Epoch = strconv.Itoa(time.Now().UTC().Year() - 2)
	if _, err := f.run(t, q); err == nil {
		t.Error("a joined query for an epoch two years back: released")
	}
	if d := declined("old-epoch-r1"); d["hs"] != aggregate.RefuseBadQuery || d["uni-a"] != aggregate.RefuseBadQuery {
		t.Errorf("epoch two years back: declines %v, want %s from every participant", d, aggregate.RefuseBadQuery)
	}

	// A university whose linkage fails declines (no_linkage).
	f.nodes["uni-b"].Aggregator().SetPseudonyms(func(context.Context, policy.Purpose, string) (map[string][32]byte, error) {
		return nil, errors.New("the space policy names no linkage evaluator")
	})
	if _, err := f.run(t, joinQuery("unlinked", "enrollment", aggregate.Measure{Kind: "count"})); err == nil {
		t.Error("a university without linkage: released")
	}
	if d := declined("unlinked-r1"); d["uni-b"] != aggregate.RefuseNoLinkage {
		t.Errorf("no linkage: declines %v, want uni-b %s", d, aggregate.RefuseNoLinkage)
	}

	if err := f.nodes["hs"].Aggregator().SetBudget(ctx, aggCenter, "student_id", 0.05); err != nil {
		t.Fatal(err)
	}
	if _, err := f.run(t, joinQuery("over-budget", "enrollment", aggregate.Measure{Kind: "count"})); err == nil {
		t.Error("a query past the school's budget: released")
	}
	if d := declined("over-budget-r1"); d["hs"] != aggregate.RefuseBudget {
		t.Errorf("past the budget: declines %v, want hs %s", d, aggregate.RefuseBudget)
	}
	if v := metricValue(t, f.nodes["hs"], `eduspace_aggregate_queries_refused_total{reason="population_too_small"}`); v != 1 {
		t.Errorf("population_too_small refusals: %v, want 1", v)
	}
}

// TestJoinedAggregateNoPairAgreement: a population participant without an
// agreement with an outcome participant declines (no_agreement) before it
// links or sends a list; an outcome participant refuses the join messages
// of a population participant it holds no agreement from (no_agreement,
// counted, an evidence refuse entry) and never counts them.
func TestJoinedAggregateNoPairAgreement(t *testing.T) {
	t.Run("population", func(t *testing.T) {
		f := newJoinSpaceWithout(t, 60, true, map[string]bool{"hs:hs-uni-b-join": true})
		var linked atomic.Bool
		f.nodes["hs"].Aggregator().SetPseudonyms(func(context.Context, policy.Purpose, string) (map[string][32]byte, error) {
			linked.Store(true)
			return nil, errors.New("linked although it declines")
		})
		if _, err := f.run(t, joinQuery("no-pair", "enrollment", aggregate.Measure{Kind: "count"})); err == nil {
			t.Fatal("a school without an agreement with uni-b: released")
		}
		rounds, err := f.center.Aggregator().Rounds(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rounds {
			if r.ID == "no-pair-r1" && r.Declined["hs"] != aggregate.RefuseNoAgreement {
				t.Errorf("declines %v, want hs %s", r.Declined, aggregate.RefuseNoAgreement)
			}
		}
		if linked.Load() {
			t.Error("the school linked its students for a round it declines")
		}
		ev := aggEvidence(t, f.s.Configs["hs"].DataDir)
		if hasEntry(ev, "no-pair-r1", aggregate.RefuseNoAgreement) == nil {
			t.Error("no no_agreement decline in the school's evidence")
		}
		for _, e := range ev {
			if e["envelope"] == "no-pair-r1" && e["reason"] != aggregate.RefuseNoAgreement {
				t.Errorf("school took a step in the declined round: %v", e["reason"])
			}
		}
		if v := metricValue(t, f.nodes["hs"], `eduspace_aggregate_queries_refused_total{reason="no_agreement"}`); v != 1 {
			t.Errorf("no_agreement refusals at the school: %v, want 1", v)
		}
	})
	t.Run("outcome", func(t *testing.T) {
		// The school holds its side of the agreement with uni-b; uni-b does
		// not: the school sends, uni-b refuses what arrives.
		f := newJoinSpaceWithout(t, 60, true, map[string]bool{"uni-b:hs-uni-b-join": true})
		if _, err := f.run(t, joinQuery("one-sided", "enrollment", aggregate.Measure{Kind: "count"})); err == nil {
			t.Fatal("uni-b took the school's list without an agreement: released")
		}
		ev := aggEvidence(t, f.s.Configs["hs"].DataDir)
		for _, u := range []string{"uni-a", "uni-b"} {
			found := false
			for _, e := range ev {
				found = found || e["envelope"] == "one-sided-r1" && e["reason"] == "join_sent" && e["peer"] == u && e["agreement"] == "hs-"+u+"-join"
			}
			if !found {
				t.Errorf("no join_sent entry naming %s and its agreement in the school's evidence", u)
			}
		}
		refused := false
		for _, e := range nodetest.Evidence(t, f.s.Configs["uni-b"].DataDir) {
			refused = refused || e["peer"] == "hs" && e["reason"] == aggregate.RefuseNoAgreement
		}
		if !refused {
			t.Error("uni-b's evidence has no no_agreement refusal of the school's join messages")
		}
		if v := metricValue(t, f.nodes["uni-b"], `eduspace_aggregate_queries_refused_total{reason="no_agreement"}`); v < 1 {
			t.Errorf("no_agreement refusals at uni-b: %v, want at least 1", v)
		}
		if hasEntry(aggEvidence(t, f.s.Configs["uni-b"].DataDir), "one-sided-r1", "contributed") != nil {
			t.Error("uni-b contributed a table counting a list it refused")
		}
		if v := metricValue(t, f.nodes["uni-a"], `eduspace_aggregate_queries_refused_total{reason="no_agreement"}`); v > 0 {
			t.Errorf("uni-a, which holds the agreement, refused %v join messages", v)
		}
	})
}
