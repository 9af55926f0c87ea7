package aggregate_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// BenchmarkJoinedAggregate20: one joined round among 20 institutions (10
// schools holding the population, 300 students each, and 10 universities
// holding the outcome), each a node with its own database, on one
// embedded NATS server, noise on: from submitting the query to the
// release. The linkage is the injected keyed hash (the real one is
// measured in node/linkage); everything else is the real round.
func BenchmarkJoinedAggregate20(b *testing.B) {
	const schools, unis, per = 10, 10, 300
	ctx := context.Background()
	s := nodetest.NewSpace(b)
	center := s.Open(s.Member(aggCenter, crypto.RoleCenter))
	var pop, out []string
	recs := map[string]*strings.Builder{}
	ps := map[string]map[string][32]byte{}
	for i := range schools {
		pop = append(pop, fmt.Sprintf("school-%02d", i))
	}
	for i := range unis {
		out = append(out, fmt.Sprintf("uni-%02d", i))
	}
	all := append(append([]string{}, pop...), out...)
	for _, id := range all {
		recs[id], ps[id] = &strings.Builder{}, map[string][32]byte{}
	}
	for si, sch := range pop {
		for j := range per {
			person := si*per + j
			sid := fmt.Sprintf("S%06d", person)
			fmt.Fprintf(recs[sch], `{"type":"student","student_id":%q,"gender":%q,"hukou_type":%q}`+"\n", sid,
				[]string{"女", "男"}[j%2], []string{"城镇", "农村"}[(j/2)%2])
			ps[sch][sid] = joinPseudonym(person)
			if j%3 != 0 {
				u := out[person%unis]
				usid := fmt.Sprintf("U%06d", person)
				fmt.Fprintf(recs[u], `{"type":"student","student_id":%q}`+"\n", usid)
				fmt.Fprintf(recs[u], `{"type":"enrollment","student_id":%q,"education_level":"本科"}`+"\n", usid)
				ps[u][usid] = joinPseudonym(person)
			}
		}
	}
	nodes := map[string]*node.Node{}
	for _, id := range all {
		n := s.Open(s.Member(id, crypto.RoleUniversity))
		nodes[id] = n
		mine := ps[id]
		n.Aggregator().SetPseudonyms(func(context.Context, policy.Purpose, string) (map[string][32]byte, error) { return mine, nil })
		if _, err := n.Ingest(ctx, strings.NewReader(recs[id].String()), ""); err != nil {
			b.Fatal(err)
		}
		a := &policy.Agreement{ID: id + "-center-statistics", Provider: id, Recipient: aggCenter,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}, "enrollment": {"education_level"}},
			MaxLevel:    schema.L3, RetentionDays: 30, ValidFrom: s.Now.Add(-time.Hour), ValidUntil: s.Now.Add(24 * time.Hour)}
		for _, m := range []*node.Node{n, center} {
			if err := m.AddAgreement(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
		if err := n.Aggregator().SetBudget(ctx, aggCenter, "student_id", 10); err != nil {
			b.Fatal(err)
		}
	}
	// Each school sends its list to each university under an agreement
	// between the two (AGGREGATES.md §7), held on both sides.
	for _, sch := range pop {
		for _, u := range out {
			a := &policy.Agreement{ID: sch + "-" + u + "-join", Provider: sch, Recipient: u,
				Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
				RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}},
				MaxLevel:    schema.L3, RetentionDays: 30, ValidFrom: s.Now.Add(-time.Hour), ValidUntil: s.Now.Add(24 * time.Hour)}
			for _, id := range []string{sch, u} {
				if err := nodes[id].AddAgreement(ctx, a); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		q := aggregate.Query{ID: fmt.Sprintf("bench-%d", i), RecordType: "student", Purpose: policy.PurposeStatistics,
			GroupBy: []aggregate.Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}, {Field: "gender", Values: []string{"女", "男"}}},
			Measure: aggregate.Measure{Kind: "count"}, K: 10, Rho: 0.05, Participants: all, Threshold: 11, Colluders: 1,
			RoundTimeout: aggregate.Duration(30 * time.Second),
			Join: &aggregate.Join{LinkPurpose: policy.PurposeStatistics, Epoch: strconv.Itoa(time.Now().UTC().Year()), Population: pop,
				Outcome: aggregate.JoinOutcome{RecordType: "enrollment", Participants: out, Measure: aggregate.Measure{Kind: "count"}}}}
		info, err := center.Aggregator().Submit(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		rel, err := center.Aggregator().Wait(wctx, info.Round)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if len(rel.Survivors) != 20 || rel.CellsReleased < 4 {
			b.Fatalf("release: %d survivors, %d cells released", len(rel.Survivors), rel.CellsReleased)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/round")
	b.ReportMetric(float64(schools*per)*float64(b.N)/b.Elapsed().Seconds(), "persons/s")
}
