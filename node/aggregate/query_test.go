package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

func testQuery() Query {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	return Query{ID: "q1", Center: "center", Issued: now, RecordType: "enrollment", Dataset: "enrollment",
		Purpose: policy.PurposeStatistics,
		GroupBy: []Dimension{{Field: "education_level", Values: []string{"本科", "硕士"}}, {Field: "major_category", Values: []string{"08"}}},
		Measure: Measure{Kind: "sum", Field: "program_length", Lower: 0, Upper: 6}, ContributionBound: 1, K: 5, Rho: 0.05,
		Participants: []string{"a", "b", "c", "d"}, Threshold: 3, Deadline: now.Add(time.Hour), RoundTimeout: Duration(time.Minute)}
}

// TestAggregateQueryValidate: a good query passes; every error names its
// field.
func TestAggregateQueryValidate(t *testing.T) {
	std := schema.Default()
	q := testQuery()
	if err := q.Validate(std); err != nil {
		t.Fatal(err)
	}
	for field, edit := range map[string]func(*Query){
		"id":                    func(q *Query) { q.ID = "Bad ID" },
		"record_type":           func(q *Query) { q.RecordType = "nope" },
		"dataset":               func(q *Query) { q.Dataset = "student" },
		"purpose":               func(q *Query) { q.Purpose = policy.PurposeResearch },
		"group_by[0].field":     func(q *Query) { q.GroupBy[0].Field = "gender" }, // not in enrollment
		"group_by[1].values":    func(q *Query) { q.GroupBy[1].Values = nil },
		"group_by[0].values[1]": func(q *Query) { q.GroupBy[0].Values[1] = "本科" },
		"measure.field":         func(q *Query) { q.Measure.Field = "major_name" },
		"measure.lower":         func(q *Query) { q.Measure.Lower = 7 },
		"measure.kind":          func(q *Query) { q.Measure.Kind = "mean" },
		"contribution_bound":    func(q *Query) { q.ContributionBound = 0 },
		"k":                     func(q *Query) { q.K = -1 },
		"rho":                   func(q *Query) { q.Rho = 11 },
		"participants[1]":       func(q *Query) { q.Participants[1] = "center" },
		"threshold":             func(q *Query) { q.Threshold = 2 },
		"colluders":             func(q *Query) { q.Colluders = 4 },
		"deadline":              func(q *Query) { q.Deadline = q.Issued },
		"round_timeout":         func(q *Query) { q.RoundTimeout = 0 },
		"interval":              func(q *Query) { q.Interval = Duration(time.Second) },
	} {
		q := testQuery()
		q.GroupBy = slices.Clone(q.GroupBy)
		q.GroupBy[0].Values = slices.Clone(q.GroupBy[0].Values)
		q.Participants = slices.Clone(q.Participants)
		edit(&q)
		err := q.Validate(std)
		if err == nil || !strings.Contains(err.Error(), "aggregate query: "+field+":") {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

// TestAggregateCells: cell indices and keys agree, "other" last per
// dimension; the plan's worst ρ stays within the target.
func TestAggregateCells(t *testing.T) {
	q := testQuery()
	if q.cells() != 3*2 || q.vectorLen() != 12 {
		t.Fatalf("cells %d, vector %d", q.cells(), q.vectorLen())
	}
	want := [][]string{{"本科", "08"}, {"本科", ""}, {"硕士", "08"}, {"硕士", ""}, {"", "08"}, {"", ""}}
	for i, w := range want {
		if got := q.cellKey(i); !slices.Equal(got, w) {
			t.Errorf("cell %d: %q, want %q", i, got, w)
		}
	}
	p, err := planQuery(&q)
	if err != nil || p.rho > q.Rho || p.rho < q.Rho*0.9 || p.sumVar == nil {
		t.Errorf("plan: %+v %v", p, err)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"1m30s"`), &d); err != nil || time.Duration(d) != 90*time.Second {
		t.Errorf("duration: %v %v", d, err)
	}
}

// TestAggregateQueryNeedsPersonSubject: a record type that concerns no
// person (the course catalogue) cannot be counted: the contribution bound
// and the budget are per data subject, and course records have none.
func TestAggregateQueryNeedsPersonSubject(t *testing.T) {
	q := testQuery()
	q.RecordType, q.Dataset, q.GroupBy = "course", "course", nil
	q.Measure = Measure{Kind: "sum", Field: "credits", Lower: 0, Upper: 10}
	err := q.Validate(schema.Default())
	if err == nil || !strings.Contains(err.Error(), "aggregate query: record_type:") {
		t.Errorf("a query over course records: got %v, want an error naming record_type", err)
	}
	q.Measure = Measure{Kind: "count"}
	if err := q.Validate(schema.Default()); err == nil {
		t.Error("a count of course records accepted")
	}
}

// TestAggregateTableBoundsEachSubject: at most contribution_bound records
// of each subject count, the first ones; a record without a subject fails
// the table rather than share one bound with every other such record.
func TestAggregateTableBoundsEachSubject(t *testing.T) {
	records := []struct{ subject, body string }{
		{"S1", `{"type":"student","student_id":"S1","gender":"女"}`},
		{"S1", `{"type":"student","student_id":"S1","gender":"男"}`},
		{"S1", `{"type":"student","student_id":"S1","gender":"男"}`},
		{"S2", `{"type":"student","student_id":"S2","gender":"男"}`},
		{"S3", `{"type":"student","student_id":"S3"}`},
	}
	scan := func(extra ...struct{ subject, body string }) func(context.Context, string, func(string, []byte) error) error {
		return func(_ context.Context, typ string, fn func(string, []byte) error) error {
			for _, r := range append(slices.Clone(records), extra...) {
				if err := fn(r.subject, []byte(r.body)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	q := Query{RecordType: "student", GroupBy: []Dimension{{Field: "gender", Values: []string{"女", "男"}}},
		Measure: Measure{Kind: "count"}, ContributionBound: 2}
	a := &Aggregator{std: schema.Default(), scanRecords: scan()}
	x, err := a.aggregateTable(context.Background(), &q)
	if err != nil || !slices.Equal(x, []int64{1, 2, 1}) {
		t.Errorf("bound 2: table %v, %v; want [1 2 1] (女, 男, other)", x, err)
	}
	a.scanRecords = scan(struct{ subject, body string }{"", `{"type":"student","gender":"女"}`})
	if x, err := a.aggregateTable(context.Background(), &q); err == nil {
		t.Errorf("a record without a subject counted: table %v", x)
	}
}

// TestAggregateThresholdAgainstColluders: t must exceed (n + c)/2, and the
// refusal shows the arithmetic.
func TestAggregateThresholdAgainstColluders(t *testing.T) {
	for _, c := range []struct {
		t, n, c int
		want    string // "" when accepted
	}{
		{3, 10, 1, "threshold 3 for 10 universities and 1 colluder: need t > (10 + 1)/2 = 5.5, so t ≥ 6"},
		{5, 10, 0, "threshold 5 for 10 universities and 0 colluders: need t > (10 + 0)/2 = 5, so t ≥ 6"},
		{6, 10, 1, ""},
		{6, 10, 2, "threshold 6 for 10 universities and 2 colluders: need t > (10 + 2)/2 = 6, so t ≥ 7"},
		{1, 4, 0, "threshold 1 for 4 universities and 0 colluders: need t > (4 + 0)/2 = 2, so t ≥ 3"},
		{2, 4, 1, "threshold 2 for 4 universities and 1 colluder: need t > (4 + 1)/2 = 2.5, so t ≥ 3"},
		{3, 4, 1, ""},
		{2, 3, 0, ""},
		{3, 3, 1, ""},
		{2, 3, 1, "threshold 2 for 3 universities and 1 colluder: need t > (3 + 1)/2 = 2, so t ≥ 3"},
	} {
		err := CheckThreshold(c.t, c.n, c.c)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("t=%d n=%d c=%d: got %q, want %q", c.t, c.n, c.c, got, c.want)
		}
	}
	// through Validate, with the query's own participants (n = 4)
	q := testQuery()
	q.Threshold, q.Colluders = 2, 1
	err := q.Validate(schema.Default())
	if err == nil || !strings.Contains(err.Error(), "aggregate query: threshold: threshold 2 for 4 universities and 1 colluder: need t > (4 + 1)/2 = 2.5, so t ≥ 3") {
		t.Errorf("t=2 n=4 c=1: %v", err)
	}
	q.Threshold = 3
	if err := q.Validate(schema.Default()); err != nil {
		t.Errorf("t=3 n=4 c=1: %v", err)
	}
}

// TestAggregateNoiseForHonestOnly: the noise plan protects the release
// with the t − c honest survivors' shares alone: the σᵢ² each university
// draws grows with c, and the accountant's ρ for t − c shares of it meets
// the query's ρ, which the plan for c = 0 does not.
func TestAggregateNoiseForHonestOnly(t *testing.T) {
	q := testQuery()
	q.Participants = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	q.Measure = Measure{Kind: "count"}
	sens := privacy.Sensitivity{L1: 1, L2: 1}
	var prev *big.Rat
	prevHonest := 0
	for _, c := range []struct{ t, c int }{{6, 0}, {6, 1}, {7, 2}, {8, 3}} {
		q.Threshold, q.Colluders = c.t, c.c
		if err := q.Validate(schema.Default()); err != nil {
			t.Fatal(err)
		}
		plan, err := planQuery(&q)
		if err != nil {
			t.Fatal(err)
		}
		honest := c.t - c.c
		r, err := privacy.DistributedRho(plan.countVar, honest, plan.cells, sens)
		if err != nil {
			t.Fatal(err)
		}
		if r > q.Rho {
			t.Errorf("t=%d c=%d: σᵢ² = %s gives ρ = %v with %d honest shares, want ≤ %v", c.t, c.c, plan.countVar.FloatString(3), r, honest, q.Rho)
		}
		if prev != nil && honest < prevHonest && plan.countVar.Cmp(prev) <= 0 {
			t.Errorf("t=%d c=%d: σᵢ² = %s, not above %s planned for more honest shares", c.t, c.c, plan.countVar.FloatString(3), prev.FloatString(3))
		}
		if c.c > 0 {
			// the plan for the same t without colluders falls short with t − c honest shares
			q0 := q
			q0.Colluders = 0
			p0, err := planQuery(&q0)
			if err != nil {
				t.Fatal(err)
			}
			r0, err := privacy.DistributedRho(p0.countVar, honest, p0.cells, sens)
			if err != nil {
				t.Fatal(err)
			}
			if r0 <= q.Rho {
				t.Errorf("t=%d: the plan for no colluder already gives ρ = %v ≤ %v with %d shares", c.t, r0, q.Rho, honest)
			}
		}
		t.Logf("n=10 t=%d c=%d: σᵢ² = %s, ρ with %d honest shares = %.4f", c.t, c.c, plan.countVar.FloatString(3), honest, r)
		prev, prevHonest = plan.countVar, honest
	}
}

// TestAggregateQueryDimensions: a query groups only by dimensions the
// standard declares for its record type, with groupings the standard
// allows; anything else is refused with reason undeclared_dimension or an
// error naming the value.
func TestAggregateQueryDimensions(t *testing.T) {
	std := schema.Default()
	student := func(dims ...Dimension) Query {
		q := testQuery()
		q.RecordType, q.Dataset, q.GroupBy, q.Measure = "student", "student", dims, Measure{Kind: "count"}
		return q
	}
	for _, c := range []struct {
		name string
		q    Query
	}{
		{"not declared", student(Dimension{Field: "religion", Values: []string{"x"}})},
		{"not a dimension at all", student(Dimension{Field: "shoe_size", Values: []string{"x"}})},
		{"declared for another type", student(Dimension{Field: "grade_year", Values: []string{"2024"}})},
	} {
		err := c.q.Validate(std)
		var de *DimensionError
		if !errors.As(err, &de) || de.Reason() != RefuseDimension || de.Reason() != "undeclared_dimension" ||
			!strings.Contains(err.Error(), "aggregate query: group_by[0].field:") {
			t.Errorf("%s: got %v, want a DimensionError naming group_by[0].field", c.name, err)
		}
	}
	for _, c := range []struct {
		name string
		q    Query
		want string
	}{
		{"a raw value where the standard declares classes", student(Dimension{Field: "hukou_type", Values: []string{"农业户口"}}),
			`group_by[0].values[0]: "农业户口" is not a grouping the standard allows for hukou_type (农村, 城镇)`},
		{"a value not listed", student(Dimension{Field: "gender", Values: []string{"女", "未知"}}),
			`group_by[0].values[1]: "未知" is not a grouping the standard allows for gender (女, 男)`},
		{"a category of three characters", func() Query {
			q := testQuery()
			q.GroupBy[1].Values = []string{"080"}
			return q
		}(), `group_by[1].values[0]: "080" is not a grouping the standard allows for major_category (the first 2 characters of major_code)`},
	} {
		err := c.q.Validate(std)
		var de *DimensionError
		if err == nil || errors.As(err, &de) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	ok := student(Dimension{Field: "hukou_type", Values: []string{"城镇", "农村"}}, Dimension{Field: "ethnicity", Values: []string{"少数民族"}},
		Dimension{Field: "disability", Values: []string{"true"}})
	if err := ok.Validate(std); err != nil {
		t.Fatal(err)
	}
	if got := ok.fields(std); !slices.Equal(got, []string{"disability", "ethnicity", "hukou_type"}) {
		t.Errorf("fields read: %q", got)
	}
	// The minimum cell size: the larger of k and each dimension's minimum.
	for _, c := range []struct {
		k, want int64
	}{{0, 20}, {5, 20}, {25, 25}} {
		ok.K = c.k
		if got := ok.minCell(std); got != c.want {
			t.Errorf("k %d: minimum cell %d, want %d (ethnicity and disability declare 20)", c.k, got, c.want)
		}
	}
	q := testQuery()
	if got := q.minCell(std); got != 10 {
		t.Errorf("education level × major category, k 5: minimum cell %d, want 10", got)
	}

	// A custom standard that declares no dimension: only totals.
	var doc map[string]any
	if err := json.Unmarshal(schema.DefaultJSON(), &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "dimensions")
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	bare, err := schema.ParseStandard(b)
	if err != nil {
		t.Fatal(err)
	}
	var de *DimensionError
	byGender, total := student(Dimension{Field: "gender", Values: []string{"女"}}), student()
	if err := byGender.Validate(bare); !errors.As(err, &de) {
		t.Errorf("gender under a standard without dimensions: %v", err)
	}
	if err := total.Validate(bare); err != nil {
		t.Errorf("a total under a standard without dimensions: %v", err)
	}
}

// TestAggregateTableGroupings: the table counts each record in the
// grouping the standard maps its value to: classes of values, a prefix, a
// set flag.
func TestAggregateTableGroupings(t *testing.T) {
	records := []string{
		`{"student_id":"S1","hukou_type":"农业户口","ethnicity":"回族","disability":"视力残疾"}`,
		`{"student_id":"S2","hukou_type":"城镇","ethnicity":"汉族","disability":false}`,
		`{"student_id":"S3","hukou_type":"非农业","ethnicity":"壮族","disability":true}`,
		`{"student_id":"S4","hukou_type":"外籍","ethnicity":"苗族"}`,
	}
	a := &Aggregator{std: schema.Default(), scanRecords: func(_ context.Context, _ string, fn func(string, []byte) error) error {
		for i, r := range records {
			if err := fn(fmt.Sprint(i), []byte(r)); err != nil {
				return err
			}
		}
		return nil
	}}
	for _, c := range []struct {
		dim    Dimension
		counts []int64
	}{
		{Dimension{Field: "hukou_type", Values: []string{"城镇", "农村"}}, []int64{2, 1, 1}},
		{Dimension{Field: "ethnicity", Values: []string{"少数民族"}}, []int64{3, 1}},
		{Dimension{Field: "disability", Values: []string{"true", "false"}}, []int64{2, 1, 1}},
	} {
		q := Query{RecordType: "student", GroupBy: []Dimension{c.dim}, Measure: Measure{Kind: "count"}, ContributionBound: 1}
		x, err := a.aggregateTable(context.Background(), &q)
		if err != nil || !slices.Equal(x, c.counts) {
			t.Errorf("%s %q: table %v, %v; want %v", c.dim.Field, c.dim.Values, x, err, c.counts)
		}
	}
}
