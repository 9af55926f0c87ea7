package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
	"github.com/nats-io/nats.go"
)

// TestJoinedAggregateEndToEnd: a senior high school's cohort and two
// universities, with synthetic records giving the same persons the same
// resident ids, linked through the real linkage (a POPRF evaluator that is
// a fourth university): the progression rates and the mean starting
// salary by hukou_type and gender are each within their stated accuracy of
// the true joined answers; and no resident id or name of the
// school's students appears in any message on the bus.
func TestJoinedAggregateEndToEnd(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	ids := []string{"hs", "uni-a", "uni-b"}
	cfgs := map[string]node.Config{"center": s.Member("center", crypto.RoleCenter)}
	for _, id := range append(ids, "uni-e") {
		cfgs[id] = s.Member(id, crypto.RoleUniversity)
	}
	s.LinkageEvaluator("uni-e")

	// Every message published on the space's subjects, as the broker sees it.
	nc, err := nats.Connect(s.Emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var seen [][]byte
	sub, err := nc.Subscribe("eds.>", func(m *nats.Msg) {
		mu.Lock()
		seen = append(seen, bytes.Clone(m.Data))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	nodes := map[string]*node.Node{}
	for id, cfg := range cfgs {
		nodes[id] = s.Open(cfg)
	}
	var school bytes.Buffer
	unis := make([]bytes.Buffer, 2)
	persons, err := synth.Cohort{Seed: 7, Students: 600, Now: s.Now, School: "HS", Universities: []string{"UA", "UB"}}.
		Write(&school, []io.Writer{&unis[0], &unis[1]})
	if err != nil {
		t.Fatal(err)
	}
	// The school's identifiers, for the scan; and the persons the linkage
	// leaves out (a resident id two students share), out of the truth.
	var secrets []string
	byID := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(school.Bytes()))
	for sc.Scan() {
		var r map[string]string
		if err := json.Unmarshal(sc.Bytes(), &r); err == nil {
			// (student ids are too short to tell from chance in ciphertext)
			secrets = append(secrets, r["id_number"], r["name"])
			byID[r["id_number"]]++
		}
	}
	dup := map[int]bool{}
	for i := range persons {
		var r map[string]string
		json.Unmarshal([]byte(strings.Split(school.String(), "\n")[i]), &r)
		dup[i] = byID[r["id_number"]] > 1
	}
	bodies := map[string]*bytes.Buffer{"hs": &school, "uni-a": &unis[0], "uni-b": &unis[1]}
	for _, id := range ids {
		if res, err := nodes[id].Ingest(ctx, bytes.NewReader(bodies[id].Bytes()), ""); err != nil || res.Invalid != 0 {
			t.Fatalf("ingest at %s: %v %+v", id, err, res)
		}
		a := &policy.Agreement{ID: id + "-center-statistics", Provider: id, Recipient: "center",
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}, "enrollment": {"education_level"},
				"employment": {"employer_region", "starting_salary_cny"}},
			MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: s.Now.Add(-time.Hour), ValidUntil: s.Now.Add(24 * time.Hour)}
		for _, n := range []string{id, "center"} {
			if err := nodes[n].AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The school sends each university its join lists under an agreement
	// between the two, held on both sides (node/aggregate AGGREGATES.md §7).
	for _, u := range []string{"uni-a", "uni-b"} {
		a := &policy.Agreement{ID: "hs-" + u + "-join", Provider: "hs", Recipient: u,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}},
			MaxLevel:    schema.L3, RetentionDays: 30, ValidFrom: s.Now.Add(-time.Hour), ValidUntil: s.Now.Add(24 * time.Hour)}
		for _, n := range []string{"hs", u} {
			if err := nodes[n].AddAgreement(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}

	query := func(id, outcome string, m aggregate.Measure) aggregate.Query {
		return aggregate.Query{ID: id, RecordType: "student", Purpose: policy.PurposeStatistics,
			GroupBy: []aggregate.Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}, {Field: "gender", Values: []string{"女", "男"}}},
			Measure: aggregate.Measure{Kind: "count"}, K: 10, Rho: 0.2, Participants: ids, Threshold: 2,
			// a quarter of it for the commit step, which the linkage is part of
			RoundTimeout: aggregate.Duration(2 * time.Minute),
			Join: &aggregate.Join{LinkPurpose: policy.PurposeStatistics, Epoch: strconv.Itoa(time.Now().UTC().Year()), Population: []string{"hs"}, MinPopulation: 100,
				Outcome: aggregate.JoinOutcome{RecordType: outcome, Participants: []string{"uni-a", "uni-b"}, Measure: m}}}
	}
	// Each interval covers its value with probability 0.999 on its own:
	// at most one cell with a value beyond its interval, none beyond
	// 1.5 times it (node/aggregate TestJoinedAggregateTruth says why).
	beyond, cellBeyond := 0, false // cells with a value beyond its interval
	within := func(what string, got, exact, half float64) {
		t.Helper()
		switch d := math.Abs(got - exact); {
		case d > 1.5*half:
			t.Errorf("%s: %.4f, true %.4f, beyond 1.5 × its interval ±%.4f", what, got, exact, half)
		case d > half:
			cellBeyond = true
			t.Logf("%s: %.4f, true %.4f, beyond its interval ±%.4f", what, got, exact, half)
		default:
			t.Logf("%s: %.4f (true %.4f) ± %.4f", what, got, exact, half)
		}
	}
	defer func() {
		if beyond > 1 {
			t.Errorf("%d cells with a value beyond its interval; at most 1 expected", beyond)
		}
	}()
	for _, c := range []struct {
		outcome string
		measure aggregate.Measure
	}{
		{"enrollment", aggregate.Measure{Kind: "count"}},
		{"employment", aggregate.Measure{Kind: "sum", Field: "starting_salary_cny", Lower: 0, Upper: 15000}},
	} {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		info, err := nodes["center"].Aggregator().Submit(wctx, query("e2e-"+c.outcome, c.outcome, c.measure))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		rel, err := nodes["center"].Aggregator().Wait(wctx, info.Round)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// The truth, per (hukou_type, gender): population, with the
		// outcome, and the sum of salaries.
		truth := map[[2]string][3]float64{}
		for i, p := range persons {
			if dup[i] {
				continue
			}
			k := [2]string{p.Hukou, p.Gender}
			v := truth[k]
			v[0]++
			if p.University >= 0 && (c.outcome == "enrollment" || p.Employed) {
				v[1]++
				v[2] += float64(p.Salary)
			}
			truth[k] = v
		}
		released := 0
		for _, cell := range rel.Joined.Cells {
			if cell.Suppressed {
				continue
			}
			released++
			cellBeyond = false
			want := truth[[2]string{cell.Key[0], cell.Key[1]}]
			a := cell.Accuracy
			within(fmt.Sprintf("%s %q count", c.outcome, cell.Key), float64(*cell.Count), want[1], a.Count)
			ra := a
			if cell.Mean != nil {
				got, exact := *cell.Mean, want[2]/want[1]
				within(fmt.Sprintf("%s %q mean", c.outcome, cell.Key), got, exact, a.HalfWidth)
				ra = cell.RateAccuracy
			}
			within(fmt.Sprintf("%s %q rate", c.outcome, cell.Key), *cell.Rate, want[1]/want[0], ra.HalfWidth)
			if cellBeyond {
				beyond++
			}
		}
		if released != 4 {
			t.Errorf("%s: %d cells released, want the 4 of hukou_type × gender", c.outcome, released)
		}
	}

	// No clear identifier of the school's students left it.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 {
		t.Fatal("no message seen on the bus")
	}
	for _, m := range seen {
		for _, v := range secrets {
			if v != "" && bytes.Contains(m, []byte(v)) {
				t.Fatalf("a message on the bus carries a clear identifier or name of the school's students")
			}
		}
	}
	t.Logf("%d messages scanned for %d identifiers and names", len(seen), len(secrets))
}
