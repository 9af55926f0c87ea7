package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// The demo's joined aggregates (node/aggregate/AGGREGATES.md §7): a senior
// high school's graduating cohort (the population, by household
// registration and gender) linked, through linkage pseudonyms, to
// enrollment and employment records at two universities (the outcome).
// The school is a member with the university role: a member that holds
// student records.

// School is the demo's senior high school.
const School = "school-donghai"

// joinedUnis are the universities of the joined aggregates.
var joinedUnis = []string{"uni-beihu", "uni-nanshan"}

// JoinedResult is one joined aggregate of the demo: the query, the
// participants, the ρ each participant's budget was debited, and per cell
// (household registration, gender) the noised population and outcome
// counts and the rate with its accuracy, or suppressed.
type JoinedResult struct {
	Query        aggregate.Query        `json:"query"`
	Round        string                 `json:"round"`
	Participants []string               `json:"participants"`
	Survivors    int                    `json:"survivors"`
	RhoSpent     float64                `json:"rho_spent"`
	EpsilonSpent float64                `json:"epsilon_spent"`
	Delta        float64                `json:"delta"`
	Cells        []aggregate.JoinedCell `json:"cells"`
	Seconds      float64                `json:"seconds"`
	Employment   *JoinedResult          `json:"employment,omitempty"`
}

// joinedCohort ingests the cohort at the school and the universities,
// gives the center a statistics agreement with each of the three for the
// fields the joined queries read, and installs the school's agreement
// with each university (joinAgreements) on both sides.
func joinedCohort(ctx context.Context, nodes map[string]*node.Node, students int, now time.Time) (ingested, invalid int, err error) {
	var school bytes.Buffer
	unis := make([]bytes.Buffer, len(joinedUnis))
	c := synth.Cohort{Seed: 42, Students: students, Now: now, School: "2026SH", Universities: []string{"2026BH", "2026NS"}}
	if _, err := c.Write(&school, []io.Writer{&unis[0], &unis[1]}); err != nil {
		return 0, 0, err
	}
	for i, id := range append([]string{School}, joinedUnis...) {
		buf := &school
		if i > 0 {
			buf = &unis[i-1]
		}
		ir, err := nodes[id].Ingest(ctx, buf, "")
		if err != nil {
			return ingested, invalid, err
		}
		ingested, invalid = ingested+ir.Stored, invalid+ir.Invalid
		a := &policy.Agreement{ID: id + "-center-joined", Provider: id, Recipient: "edu-center",
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{
				"student":    {"gender", "hukou_type"},
				"enrollment": {"education_level"},
				"employment": {"employer_region", "starting_salary_cny"},
			},
			MaxLevel: schema.L3, RetentionDays: 365, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(365 * 24 * time.Hour)}
		for _, n := range []string{id, "edu-center"} {
			if err := nodes[n].AddAgreement(ctx, a); err != nil {
				return ingested, invalid, err
			}
		}
	}
	for _, a := range joinAgreements(now) {
		for _, n := range []string{a.Provider, a.Recipient} {
			if err := nodes[n].AddAgreement(ctx, a); err != nil {
				return ingested, invalid, err
			}
		}
	}
	return ingested, invalid, nil
}

// joinAgreements are the agreements under which the school sends each
// university its join lists (AGGREGATES.md §7): the school provides,
// the university receives, for the joined queries' purpose (statistics),
// naming the population's record type (student) with the fields its cells
// are made of. No field leaves the school as a record under them: only the
// per-round tags of its linked students and their masked cells.
func joinAgreements(now time.Time) []*policy.Agreement {
	var out []*policy.Agreement
	for _, u := range joinedUnis {
		out = append(out, &policy.Agreement{ID: School + "-" + u + "-join", Provider: School, Recipient: u,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest,
			RecordTypes: map[string][]string{"student": {"gender", "hukou_type"}},
			MaxLevel:    schema.L3, RetentionDays: 365, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(365 * 24 * time.Hour)})
	}
	return out
}

// joinedQuery is the progression (enrollment) or employment rate of the
// school's cohort by hukou_type and gender; with a sum of the starting
// salary, the mean salary too. With three participants and
// one colluder tolerated, t = 3.
func joinedQuery(id, outcome string, measure aggregate.Measure, rho float64) aggregate.Query {
	return aggregate.Query{ID: id, RecordType: "student", Purpose: policy.PurposeStatistics,
		GroupBy: []aggregate.Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}, {Field: "gender", Values: []string{"女", "男"}}},
		Measure: aggregate.Measure{Kind: "count"}, K: 10, Rho: rho, Participants: append([]string{School}, joinedUnis...),
		// The commit step (a quarter of the round timeout) includes the
		// linkage; steps end as soon as every participant answered.
		Threshold: 3, Colluders: 1, RoundTimeout: aggregate.Duration(2 * time.Minute),
		Join: &aggregate.Join{LinkPurpose: policy.PurposeStatistics, Epoch: fmt.Sprint(time.Now().UTC().Year()),
			Population: []string{School}, MinPopulation: 50,
			Outcome: aggregate.JoinOutcome{RecordType: outcome, Participants: joinedUnis, Measure: measure}}}
}

// joinedRound runs one joined query at the center and waits for its
// release.
func joinedRound(ctx context.Context, center *node.Node, q aggregate.Query) (*JoinedResult, error) {
	start := time.Now()
	info, err := center.Aggregator().Submit(ctx, q)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	rel, err := center.Aggregator().Wait(wctx, info.Round)
	if err != nil {
		return nil, err
	}
	return &JoinedResult{Query: q, Round: rel.ID, Participants: rel.Participants, Survivors: len(rel.Survivors),
		RhoSpent: rel.Rho, EpsilonSpent: rel.Epsilon, Delta: rel.Delta, Cells: rel.Joined.Cells,
		Seconds: time.Since(start).Seconds()}, nil
}

// joinedAggregates runs the progression rates, and the employment rates
// with the mean starting salary. Each participant's (center, student_id)
// account is debited 0.35 of its 0.5 a year (the universities 0.05 more
// for the gender round).
func joinedAggregates(ctx context.Context, nodes map[string]*node.Node) (*JoinedResult, error) {
	center := nodes["edu-center"]
	prog, err := joinedRound(ctx, center, joinedQuery("demo-progression", "enrollment", aggregate.Measure{Kind: "count"}, 0.15))
	if err != nil {
		return nil, fmt.Errorf("demo: progression rates: %w", err)
	}
	salary := aggregate.Measure{Kind: "sum", Field: "starting_salary_cny", Lower: 0, Upper: 15000}
	if prog.Employment, err = joinedRound(ctx, center, joinedQuery("demo-employment", "employment", salary, 0.2)); err != nil {
		return nil, fmt.Errorf("demo: employment rates: %w", err)
	}
	return prog, nil
}

// Evaluator is the demo's linkage evaluator: a university that takes no
// part in the joined aggregates, so that it sees only blinded elements of
// the others' students.
const Evaluator = "uni-xijiang"

// publishLinkage makes the evaluator's linkage key in its data directory
// and publishes a space policy naming it.
func publishLinkage(ctx context.Context, ak *crypto.AuthorityKey, authDir, evDir string, suite crypto.SuiteID, emb *bus.Embedded, now time.Time) error {
	ev, err := linkage.GenerateKey(evDir, Evaluator)
	if err != nil {
		return err
	}
	_, data, err := authority.SetLinkageEvaluator(ak, authDir, Space, ev, suite, now)
	if err != nil {
		return err
	}
	return publishSpacePolicy(ctx, emb, data)
}
