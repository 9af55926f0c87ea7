package aggregate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// Aggregate queries (AGGREGATES.md §1): what the center asks, signed with
// its node signing key, validated the same way at the center and at every
// university.

// Limits of an aggregate query.
const (
	maxAggDims         = 4
	maxAggDimValues    = 64
	maxAggCells        = 100_000 // cells of one table; a sum query sends twice as many
	maxAggParticipants = 100
	maxAggBound        = 1_000_000_000
	maxAggContribution = 100
	maxAggRho          = 10.0
	// DefaultPrivacyBudget is the ρ per calendar year a university grants
	// a (recipient, population) account it has no budget for, the first
	// time it debits it (PRIVACY.md §6: ten releases of ρ = 0.05 a year
	// about the same persons).
	DefaultPrivacyBudget = 0.5
	// Delta is the δ at which releases state their ε.
	Delta          = 1e-6
	aggQueryLabel  = "eduspace aggregate query v1\x00"
	aggCommitLabel = "eduspace aggregate commitment v1\x00"
	// aggSurvivorsLabel separates a university's signature over the
	// survivor list U3 it was given (the consistency round, AGGREGATES.md
	// §3) from its other signatures.
	aggSurvivorsLabel = "eduspace aggregate survivors v1\x00"
)

// aggPurposes are the purposes an aggregate query may serve.
var aggPurposes = map[policy.Purpose]bool{policy.PurposeStatistics: true, policy.PurposeEmploymentStatistics: true}

var aggIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,47}$`)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30s", "24h").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("duration: want a string such as \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Dimension is one group-by dimension: a dimension the standard declares
// (schema.Standard.Dimension, for the query's record type) and the
// groupings the table distinguishes, each one the standard allows for it.
// Records whose grouping is missing or not listed fall in one more cell,
// "other" (an empty string in releases).
type Dimension struct {
	Field  string   `json:"field"`
	Values []string `json:"values"`
}

// Measure is what each cell holds: "count" (records), or "sum" of a
// numeric field clamped to [lower, upper] and rounded to an integer; a sum
// is released with the noisy count of the same cell, which decides its
// suppression.
type Measure struct {
	Kind  string `json:"kind"` // count, sum
	Field string `json:"field,omitempty"`
	Lower int64  `json:"lower,omitempty"`
	Upper int64  `json:"upper,omitempty"`
}

// Query is the center's query (DESIGN.md §8). The center signs its
// canonical JSON; every university checks it before taking part.
type Query struct {
	ID         string    `json:"id"`
	Center     string    `json:"center"`
	Issued     time.Time `json:"issued"`
	RecordType string    `json:"record_type"`
	// Dataset names the records counted; it must be the record type. It
	// does not name the budget account: every query about the persons the
	// record type's subject key identifies draws on one account per
	// (recipient, population), whatever its record type (PRIVACY.md §6).
	Dataset string         `json:"dataset"`
	Purpose policy.Purpose `json:"purpose"`
	GroupBy []Dimension    `json:"group_by"`
	Measure Measure        `json:"measure"`
	// ContributionBound is the most records of one data subject a node
	// counts (the first ones it ingested, chosen without looking at values).
	ContributionBound int `json:"contribution_bound"`
	// K is the minimum cell size: cells whose noisy count is below it are
	// suppressed.
	K int64 `json:"k"`
	// Rho is the target zCDP ρ of one release.
	Rho          float64  `json:"rho"`
	Participants []string `json:"participants"`
	// Threshold t: the number of Shamir shares that recover a
	// university's secrets, and the fewest universities whose tables a
	// release sums; the round completes with up to n − t dropouts. It must
	// exceed (n + c)/2 (PRIVACY.md §1).
	Threshold int `json:"threshold"`
	// Colluders c: how many universities may collude with a deviating
	// center without its unmasking any one university's table; the noise
	// is planned for the t − c honest survivors (PRIVACY.md §4.3).
	Colluders int `json:"colluders"`
	// Deadline: no round starts after it, and universities decline rounds
	// that reach them after it.
	Deadline time.Time `json:"deadline"`
	// RoundTimeout sets the time of one round's steps: each of its five
	// collecting steps (commitments, share bundles, masked tables,
	// signatures over U3, unmask responses) gets a quarter of it, so a
	// round with a dropout at every step lasts five quarters.
	RoundTimeout Duration `json:"round_timeout"`
	// Interval, when set, makes the query standing: the center starts a
	// new round every interval until the deadline.
	Interval Duration `json:"interval,omitempty"`
	// Join, when set, makes the query a joined aggregate (AGGREGATES.md
	// §7): the record type, group_by and measure (a count) above define
	// the population at Join.Population; Join.Outcome the outcome counted
	// at the other participants, linked through linkage pseudonyms.
	Join *Join `json:"join,omitempty"`
}

func aggText(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// SetDefaults fills what the center leaves unset: the center (center),
// issued (now), dataset (the record type), contribution bound 1, round
// timeout 60s, deadline an hour after issue.
func (q *Query) SetDefaults(center string, now time.Time) {
	if q.Center == "" {
		q.Center = center
	}
	if q.Issued.IsZero() {
		q.Issued = now.UTC().Truncate(time.Millisecond)
	}
	if q.Dataset == "" {
		q.Dataset = q.RecordType
	}
	if q.ContributionBound == 0 {
		q.ContributionBound = 1
	}
	if q.RoundTimeout == 0 {
		q.RoundTimeout = Duration(time.Minute)
	}
	if q.Deadline.IsZero() {
		q.Deadline = q.Issued.Add(time.Hour)
	}
}

// Validate checks the query against the standard; its errors name the
// field that is wrong.
func (q *Query) Validate(std *schema.Standard) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("aggregate query: %s: %s", field, fmt.Sprintf(format, args...))
	}
	switch {
	case !aggIDRE.MatchString(q.ID):
		return bad("id", "want 1..48 of a-z, 0-9, '-', '_', starting with a letter or digit")
	case q.Center == "":
		return bad("center", "required")
	case q.Issued.IsZero():
		return bad("issued", "required")
	}
	rt, ok := std.Type(q.RecordType)
	if !ok {
		return bad("record_type", "%q is not a record type of the standard", q.RecordType)
	}
	if rt.SubjectKey() == "" {
		// The contribution bound, the noise and the budget protect data
		// subjects; a type without one (the course catalogue) has no unit
		// to bound, and is not personal data: it is shared as records.
		return bad("record_type", "%s concerns no person: aggregate rounds count data subjects' records", q.RecordType)
	}
	if q.Dataset != q.RecordType {
		return bad("dataset", "must be the record type %q", q.RecordType)
	}
	if !aggPurposes[q.Purpose] {
		return bad("purpose", "%q: want statistics or employment_statistics", q.Purpose)
	}
	if err := validateDims(std, rt, q.RecordType, "group_by", q.GroupBy, maxAggDims, true); err != nil {
		return err
	}
	switch q.Measure.Kind {
	case "count":
		if q.Measure.Field != "" || q.Measure.Lower != 0 || q.Measure.Upper != 0 {
			return bad("measure", "a count takes no field or bounds")
		}
	case "sum":
		fs, ok := rt.Field(q.Measure.Field)
		if !ok {
			return bad("measure.field", "record type %s has no field %q", q.RecordType, q.Measure.Field)
		}
		if fs.Kind != schema.KindInteger && fs.Kind != schema.KindNumber && fs.Kind != schema.KindAmount {
			return bad("measure.field", "%s is not numeric", q.Measure.Field)
		}
		if q.Measure.Lower >= q.Measure.Upper || q.Measure.Lower < -maxAggBound || q.Measure.Upper > maxAggBound {
			return bad("measure.lower", "want lower < upper within ±%d", maxAggBound)
		}
	default:
		return bad("measure.kind", "%q: want count or sum", q.Measure.Kind)
	}
	if q.ContributionBound < 1 || q.ContributionBound > maxAggContribution {
		return bad("contribution_bound", "%d, want 1..%d", q.ContributionBound, maxAggContribution)
	}
	if q.K < 0 || q.K > 1_000_000 {
		return bad("k", "%d, want 0..1000000", q.K)
	}
	if !(q.Rho > 0) || q.Rho > maxAggRho {
		return bad("rho", "%v, want 0 < ρ ≤ %v", q.Rho, maxAggRho)
	}
	n := len(q.Participants)
	if n < 3 || n > maxAggParticipants {
		return bad("participants", "%d, want 3..%d", n, maxAggParticipants)
	}
	ps := map[string]bool{}
	for i, p := range q.Participants {
		switch {
		case !aggText(p, 128):
			return bad(fmt.Sprintf("participants[%d]", i), "invalid node id")
		case p == q.Center:
			return bad(fmt.Sprintf("participants[%d]", i), "the center cannot take part")
		case ps[p]:
			return bad(fmt.Sprintf("participants[%d]", i), "%q listed twice", p)
		}
		ps[p] = true
	}
	if q.Colluders < 0 || q.Colluders >= n {
		return bad("colluders", "%d with %d participants, want 0..%d", q.Colluders, n, n-1)
	}
	if q.Threshold < 2 || q.Threshold > n {
		return bad("threshold", "%d with %d participants, want 2..%d", q.Threshold, n, n)
	}
	if err := CheckThreshold(q.Threshold, n, q.Colluders); err != nil {
		return bad("threshold", "%v", err)
	}
	if !q.Deadline.After(q.Issued) {
		return bad("deadline", "must be after issued")
	}
	rt2 := time.Duration(q.RoundTimeout)
	if rt2 < 200*time.Millisecond || rt2 > 24*time.Hour {
		return bad("round_timeout", "%s, want 200ms..24h", rt2)
	}
	if iv := time.Duration(q.Interval); iv != 0 && (iv < rt2 || iv < time.Second) {
		return bad("interval", "%s, want 0 (one round) or at least the round timeout and 1s", iv)
	}
	if c := q.cells(); c > maxAggCells {
		return bad("group_by", "%d cells, at most %d", c, maxAggCells)
	}
	if q.Join != nil {
		return q.validateJoin(std)
	}
	return nil
}

// DimensionError is a query refused because it groups by a dimension the
// standard does not declare for its record type: reason code
// undeclared_dimension (RefuseDimension).
type DimensionError struct{ err error }

func (e *DimensionError) Error() string { return e.err.Error() }
func (e *DimensionError) Unwrap() error { return e.err }

// Reason returns the refusal's reason code, RefuseDimension.
func (e *DimensionError) Reason() string { return RefuseDimension }

// groupingsHint names the groupings a dimension allows, for an error.
func groupingsHint(d *schema.Dimension) string {
	switch {
	case d.Values != nil:
		return " (" + strings.Join(d.Values, ", ") + ")"
	case d.Classes != nil:
		return " (" + strings.Join(slices.Sorted(maps.Keys(d.Classes)), ", ") + ")"
	case d.Prefix > 0:
		return fmt.Sprintf(" (the first %d characters of %s)", d.Prefix, d.Field)
	}
	return ""
}

// minCell is the minimum cell size of the release: the larger of the
// query's k and the minimum cell size the standard declares for each of
// its dimensions.
func (q *Query) minCell(std *schema.Standard) int64 {
	k := q.K
	for _, d := range q.GroupBy {
		if dim, ok := std.Dimension(d.Field); ok {
			k = max(k, dim.MinCellSize)
		}
	}
	return k
}

// cells is the number of cells of the table: the product over dimensions
// of (values + 1).
func (q *Query) cells() int {
	c := 1
	for _, d := range q.GroupBy {
		c *= len(d.Values) + 1
		if c > maxAggCells {
			return maxAggCells + 1
		}
	}
	return c
}

// vectorLen is the length of the vector a participant masks: the counts,
// and for a sum the sums after them.
func (q *Query) vectorLen() int {
	if q.Join != nil {
		return q.joinLen()
	}
	if q.Measure.Kind == "sum" {
		return 2 * q.cells()
	}
	return q.cells()
}

// fields are the record fields the query reads: its dimensions' fields
// and the measured field. The query is valid under std.
func (q *Query) fields(std *schema.Standard) []string {
	var out []string
	for _, d := range q.GroupBy {
		if dim, ok := std.Dimension(d.Field); ok {
			out = append(out, dim.Field)
		}
	}
	if q.Measure.Field != "" {
		out = append(out, q.Measure.Field)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckThreshold checks t > (n + c)/2 for n universities of which c may
// collude with the center: otherwise a center that tells some honest
// universities that a peer survived and others that it dropped gathers t
// shares of both the peer's self-mask seed and its key-agreement key, and
// unmasks its table alone (Bonawitz et al. 2017 §6; PRIVACY.md §1).
func CheckThreshold(t, n, c int) error {
	if 2*t > n+c {
		return nil
	}
	cs := "colluders"
	if c == 1 {
		cs = "colluder"
	}
	return fmt.Errorf("threshold %d for %d universities and %d %s: need t > (%d + %d)/2 = %s, so t ≥ %d",
		t, n, c, cs, n, c, strconv.FormatFloat(float64(n+c)/2, 'f', -1, 64), (n+c)/2+1)
}

// lifetime is how long a university keeps a round's state: five quarters
// of the round timeout (every step timed out) and a minute for delivery.
func (q *Query) lifetime() time.Duration {
	return time.Duration(q.RoundTimeout)*5/4 + time.Minute
}

// minSurvivors is m = t: the fewest masked tables a release may sum.
func (q *Query) minSurvivors() int { return q.Threshold }

// shamirDegree is the threshold as crypto/secagg counts it: any degree+1
// shares recover a secret.
func (q *Query) shamirDegree() int { return q.Threshold - 1 }

// SignedQuery is a query as the center signed it: the exact bytes, the id of
// the center's signing key and its Ed25519 signature over
// "eduspace aggregate query v1" ‖ 0 ‖ query.
type SignedQuery struct {
	Query []byte `json:"query"`
	KeyID string `json:"key_id"`
	Sig   []byte `json:"sig"`
}

// Digest is the hex SHA-256 of the signed query bytes: the query's identity
// in evidence logs and releases.
func (s *SignedQuery) Digest() string {
	h := sha256.Sum256(s.Query)
	return hex.EncodeToString(h[:])
}

func (a *Aggregator) signQuery(q *Query) (SignedQuery, error) {
	raw, err := json.Marshal(q)
	if err != nil {
		return SignedQuery{}, err
	}
	return SignedQuery{Query: raw, KeyID: a.keys.Signing.Public().KeyID(),
		Sig: a.keys.Signing.Sign(append([]byte(aggQueryLabel), raw...))}, nil
}

// queryError is a query refused for good: malformed or invalid, or (with
// signature set) unsigned, forged or not from a center.
type queryError struct {
	signature bool
	err       error
}

func (e *queryError) Error() string { return e.err.Error() }
func (e *queryError) Unwrap() error { return e.err }

// verifyQuery parses and checks a signed query: strict JSON, valid, signed
// by a signing key listed in the credential of a member whose role is
// center. Permanent refusals are *queryError; other errors are transient.
func (a *Aggregator) verifyQuery(ctx context.Context, sq *SignedQuery) (*Query, error) {
	var q Query
	dec := json.NewDecoder(bytes.NewReader(sq.Query))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		return nil, &queryError{err: fmt.Errorf("aggregate query: %w", err)}
	}
	if err := q.Validate(a.std); err != nil {
		return nil, &queryError{err: err}
	}
	sigErr := func(format string, args ...any) error {
		return &queryError{signature: true, err: fmt.Errorf("aggregate query: signature: "+format, args...)}
	}
	if len(sq.Sig) == 0 || sq.KeyID == "" {
		return nil, sigErr("unsigned")
	}
	cred, err := a.reg.Lookup(ctx, q.Center)
	if errors.Is(err, registry.ErrUnknownMember) {
		return nil, sigErr("center %q is not a member", q.Center)
	}
	if err != nil {
		return nil, err
	}
	if cred.Role != crypto.RoleCenter {
		return nil, sigErr("%q is not a center", q.Center)
	}
	vk, ok := cred.SigningKey(sq.KeyID)
	if !ok || !vk.Verify(append([]byte(aggQueryLabel), sq.Query...), sq.Sig) {
		return nil, sigErr("does not verify")
	}
	return &q, nil
}

// aggPlan is the noise plan of a query: the same at every node, since it
// depends on the query only (PRIVACY.md §4.3).
type aggPlan struct {
	cells            int
	countVar, sumVar *big.Rat // per-node share variances; sumVar nil for a count
	rho              float64  // worst-case ρ of one release, debited by each contributor
	// blocks, for a joined query, are the parts of its vector, each with
	// its own share variance (denominators, numerators, sums).
	blocks []noiseBlock
}

func planQuery(q *Query) (aggPlan, error) {
	if q.Join != nil {
		return planJoin(q)
	}
	p := aggPlan{cells: q.cells()}
	c := float64(q.ContributionBound)
	// The fewest noise shares a release protects with: t survivors, of
	// which c may collude with the center and subtract their own shares
	// (PRIVACY.md §4.3). t > (n + c)/2 keeps it ≥ 1.
	m, n := q.minSurvivors()-q.Colluders, len(q.Participants)
	target := q.Rho
	if q.Measure.Kind == "sum" {
		target = q.Rho / 2
	}
	v, r, err := privacy.PlanShareVariance(target, m, n, p.cells, privacy.Sensitivity{L1: c, L2: c})
	if err != nil {
		return p, err
	}
	p.countVar, p.rho = v, r
	if q.Measure.Kind == "sum" {
		b := c * float64(max(abs64(q.Measure.Lower), abs64(q.Measure.Upper), 1))
		v, r, err := privacy.PlanShareVariance(target, m, n, p.cells, privacy.Sensitivity{L1: b, L2: b})
		if err != nil {
			return p, err
		}
		p.sumVar, p.rho = v, p.rho+r
	}
	return p, nil
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// noise draws this node's noise share for a vector of the query.
func (p aggPlan) noise(s *privacy.Sampler, vecLen int) ([]int64, error) {
	if p.blocks != nil {
		var z []int64
		for _, b := range p.blocks {
			zb, err := privacy.NoiseShare(s, b.variance, b.cells)
			if err != nil {
				return nil, err
			}
			z = append(z, zb...)
		}
		if len(z) != vecLen {
			return nil, fmt.Errorf("noise: %d values for a vector of %d", len(z), vecLen)
		}
		return z, nil
	}
	z, err := privacy.NoiseShare(s, p.countVar, p.cells)
	if err != nil {
		return nil, err
	}
	if p.sumVar != nil {
		zs, err := privacy.NoiseShare(s, p.sumVar, vecLen-p.cells)
		if err != nil {
			return nil, err
		}
		z = append(z, zs...)
	}
	return z, nil
}

// aggregateTable computes this node's exact table for q from its records:
// counts per cell, then for a sum the clamped, rounded sums per cell. At
// most ContributionBound records per subject count, the first ingested. A
// record without a subject fails the table: its contribution has no bound
// (Validate refuses record types without a person subject).
func (a *Aggregator) aggregateTable(ctx context.Context, q *Query) ([]int64, error) {
	cells := q.cells()
	x := make([]int64, q.vectorLen())
	groups, err := a.newDimCells(q.GroupBy)
	if err != nil {
		return nil, fmt.Errorf("aggregate table: %w", err)
	}
	per := map[string]int{}
	err = a.scanRecords(ctx, q.RecordType, func(subject string, body []byte) error {
		if subject == "" {
			return errors.New("a record without a data subject: its contribution cannot be bounded")
		}
		if per[subject] >= q.ContributionBound {
			return nil
		}
		rec, ok := decodeRecord(body)
		if !ok {
			return nil // not a record this node wrote; never counted
		}
		var value int64
		if q.Measure.Kind == "sum" {
			f, ok := aggNumber(rec[q.Measure.Field])
			if !ok {
				return nil // a sum counts only records with a value
			}
			f = math.Round(min(max(f, float64(q.Measure.Lower)), float64(q.Measure.Upper)))
			value = int64(f)
		}
		per[subject]++
		cell := groups.cell(rec)
		x[cell]++
		if q.Measure.Kind == "sum" {
			x[cells+cell] += value
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("aggregate table: %w", err)
	}
	return x, nil
}

func aggValue(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return t.String()
	case bool:
		return strconv.FormatBool(t)
	}
	return ""
}

func aggNumber(v any) (float64, bool) {
	var f float64
	var err error
	switch t := v.(type) {
	case json.Number:
		f, err = t.Float64()
	case string:
		f, err = strconv.ParseFloat(strings.TrimSpace(t), 64)
	default:
		return 0, false
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// cellKey returns the dimension values of cell i ("" for other).
func (q *Query) cellKey(i int) []string {
	key := make([]string, len(q.GroupBy))
	for d := len(q.GroupBy) - 1; d >= 0; d-- {
		size := len(q.GroupBy[d].Values) + 1
		j := i % size
		i /= size
		if j < len(q.GroupBy[d].Values) {
			key[d] = q.GroupBy[d].Values[j]
		}
	}
	return key
}
