package aggregate

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// Joined aggregates (AGGREGATES.md §7): a population held at some
// participants, an outcome held at others, linked inside the round through
// linkage pseudonyms that never leave the node that obtained them. Each
// population participant sends each outcome participant, end-to-end
// encrypted, the list of (join tag, population cell) of its population,
// where the join tag is SHA-256 of a label, the query digest and the
// pseudonym: equal at both sides for the same person and query,
// unlinkable across queries. The outcome participant counts its own
// persons whose tag is on a list; the tables of both sides have one layout
// [denominators | numerators | sums] and go through the ordinary secure
// aggregation, noise, suppression and budget.

// Limits and labels of joined queries.
const (
	maxJoinOutcomeDims = 2
	// joinChunk is the most (tag, cell) entries of one join message: 36
	// bytes each, under 1 MB once encoded.
	joinChunk = 16384
	// joinMaxChunks bounds a list: about a million persons per population
	// participant.
	joinMaxChunks = 64
	// joinPadMin is the fewest entries a population participant sends: a
	// list is padded with random tags to the next power of two at or above
	// it, so that the outcome participant learns the size of another
	// institution's population only to within a factor of two.
	joinPadMin = 1024
	// joinEntry is the bytes of one entry: a 32-byte tag and a 4-byte
	// population cell index (big-endian).
	joinEntrySize = 36
	joinTagLabel  = "eduspace join tag v1"
	joinCellLabel = "eduspace join cell v1"
	// joinBufferRounds bounds the rounds whose join messages a node holds
	// before their round message arrived, joinBufferPerSender the rounds
	// one sender may have messages held in, and joinBufferBytes the bytes
	// held in all: one member cannot fill the buffer alone, nor make the
	// node hold more than joinBufferBytes. A sender past its share is
	// refused; a message finding the whole buffer full is retried later
	// (errJoinBufferFull), so that another member's filling it loses no
	// honest list.
	joinBufferRounds    = 64
	joinBufferPerSender = 4
	joinBufferBytes     = 256 << 20
	// AccuracyLevel is the confidence of the intervals a joined release
	// states.
	AccuracyLevel = 0.999
	accuracyZ     = 3.2905267314919255
)

// RefusePopulation: a population participant holds fewer linked persons in
// the query's population than its minimum; it declines before committing.
const RefusePopulation = "population_too_small"

// RefuseNoLinkage: this node cannot obtain linkage pseudonyms (no linkage
// configured, or the evaluator refused).
const RefuseNoLinkage = "no_linkage"

// aggMsgJoin: population participant → outcome participant: a chunk of its
// (tag, population cell) list.
const aggMsgJoin = "join"

// Join is the join of a joined query.
type Join struct {
	// LinkPurpose and Epoch choose the linkage pseudonyms (per purpose and
	// epoch); LinkPurpose defaults to the query's purpose.
	LinkPurpose policy.Purpose `json:"link_purpose"`
	Epoch       string         `json:"epoch"`
	// Population are the participants holding the population: records of
	// the query's record type, one person each, grouped by the query's
	// group_by.
	Population []string `json:"population"`
	// Filter keeps in the population only the persons whose record has,
	// for each dimension, one of the listed groupings.
	Filter []Dimension `json:"filter,omitempty"`
	// MinPopulation: a population participant declines
	// (population_too_small) when fewer linked persons are in its
	// population; the effective minimum is at least the release's minimum
	// cell size.
	MinPopulation int64       `json:"min_population,omitempty"`
	Outcome       JoinOutcome `json:"outcome"`
}

// JoinOutcome is what is counted at the outcome participants, for the
// persons of the population they hold.
type JoinOutcome struct {
	RecordType   string      `json:"record_type"`
	Participants []string    `json:"participants"`
	GroupBy      []Dimension `json:"group_by,omitempty"`
	// Measure: count (persons with an outcome record, at most
	// contribution_bound records each), or sum of a field (released as a
	// mean with the count).
	Measure Measure `json:"measure"`
}

// validateDims checks dimensions of record type rt against the standard:
// at most maxDims, each a dimension the standard declares for recordType
// on a field rt has, named once, with 1..maxAggDimValues groupings the
// standard allows, each listed once. field names the query field for
// errors. detail makes the errors say more: a field that is not a
// dimension is told the standard's dimensions, and a refused value which
// of its checks it failed; without it a value's error names all three.
func validateDims(std *schema.Standard, rt *schema.RecordType, recordType, field string, dims []Dimension, maxDims int, detail bool) error {
	bad := func(f, format string, args ...any) error {
		return fmt.Errorf("aggregate query: %s: %s", f, fmt.Sprintf(format, args...))
	}
	if len(dims) > maxDims {
		return bad(field, "%d dimensions, at most %d", len(dims), maxDims)
	}
	seen := map[string]bool{}
	for i, d := range dims {
		f := fmt.Sprintf("%s[%d]", field, i)
		dim, ok := std.Dimension(d.Field)
		if !ok {
			hint := ""
			if detail {
				hint = " (" + strings.Join(std.Dimensions(), ", ") + ")"
			}
			return &DimensionError{fmt.Errorf("aggregate query: %s.field: %q is not a dimension the standard %s declares%s", f, d.Field, std.Ref(), hint)}
		}
		if dim.Type != recordType {
			return &DimensionError{fmt.Errorf("aggregate query: %s.field: the standard declares %s for %s records, not %s", f, d.Field, dim.Type, recordType)}
		}
		if _, ok := rt.Field(dim.Field); !ok {
			return bad(f+".field", "record type %s has no field %s", recordType, dim.Field)
		}
		if seen[d.Field] {
			return bad(f+".field", "%s named twice", d.Field)
		}
		seen[d.Field] = true
		if len(d.Values) == 0 || len(d.Values) > maxAggDimValues {
			return bad(f+".values", "%d values, want 1..%d", len(d.Values), maxAggDimValues)
		}
		vs := map[string]bool{}
		for j, v := range d.Values {
			fv := fmt.Sprintf("%s.values[%d]", f, j)
			switch {
			case detail && !aggText(v, 64):
				return bad(fv, "want 1..64 bytes of text")
			case detail && vs[v]:
				return bad(fv, "%q listed twice", v)
			case detail && !dim.Allows(v):
				return bad(fv, "%q is not a grouping the standard allows for %s%s", v, d.Field, groupingsHint(dim))
			case !aggText(v, 64) || vs[v] || !dim.Allows(v):
				return bad(fv, "%q: want a grouping the standard allows for %s, listed once%s", v, d.Field, groupingsHint(dim))
			}
			vs[v] = true
		}
	}
	return nil
}

func (q *Query) validateJoin(std *schema.Standard) error {
	j := q.Join
	bad := func(f, format string, args ...any) error {
		return fmt.Errorf("aggregate query: join.%s: %s", f, fmt.Sprintf(format, args...))
	}
	if q.Measure.Kind != "count" {
		return bad("measure", "a joined query counts its population: measure must be count (the outcome's measure is join.outcome.measure)")
	}
	if !aggPurposes[j.LinkPurpose] {
		return bad("link_purpose", "%q: want statistics or employment_statistics", j.LinkPurpose)
	}
	if !policy.ValidEpoch(j.Epoch) {
		return bad("epoch", "%q: want a year such as 2026, or a name of at most 32 of a-z, 0-9, '.', '_', '-' starting with a letter, such as spring-2026", j.Epoch)
	}
	prt, _ := std.Type(q.RecordType)
	if err := validateDims(std, prt, q.RecordType, "join.filter", j.Filter, maxAggDims, false); err != nil {
		return err
	}
	// An outcome participant learns the population cell of each of its
	// own persons in the population, and that each passed the filter: no
	// special category (L4: disability, family economic difficulty, …)
	// may define them.
	for i, d := range append(slices.Clone(q.GroupBy), j.Filter...) {
		if dim, ok := std.Dimension(d.Field); ok && dim.Level >= schema.L4 {
			f := fmt.Sprintf("group_by[%d]", i)
			if i >= len(q.GroupBy) {
				f = fmt.Sprintf("join.filter[%d]", i-len(q.GroupBy))
			}
			return fmt.Errorf("aggregate query: %s.field: %s is %s: the outcome participants of a joined query learn the population cell of their own persons, so a joined population may be grouped or filtered only by dimensions up to L3", f, d.Field, dim.Level)
		}
	}
	if j.MinPopulation < 0 || j.MinPopulation > 1_000_000 {
		return bad("min_population", "%d, want 0..1000000", j.MinPopulation)
	}
	ort, ok := std.Type(j.Outcome.RecordType)
	if !ok {
		return bad("outcome.record_type", "%q is not a record type of the standard", j.Outcome.RecordType)
	}
	if ort.SubjectKey() == "" {
		return bad("outcome.record_type", "%s concerns no person", j.Outcome.RecordType)
	}
	if err := validateDims(std, ort, j.Outcome.RecordType, "join.outcome.group_by", j.Outcome.GroupBy, maxJoinOutcomeDims, false); err != nil {
		return err
	}
	switch m := j.Outcome.Measure; m.Kind {
	case "count":
		if m.Field != "" || m.Lower != 0 || m.Upper != 0 {
			return bad("outcome.measure", "a count takes no field or bounds")
		}
	case "sum":
		fs, ok := ort.Field(m.Field)
		if !ok || (fs.Kind != schema.KindInteger && fs.Kind != schema.KindNumber && fs.Kind != schema.KindAmount) {
			return bad("outcome.measure.field", "%q is not a numeric field of %s", m.Field, j.Outcome.RecordType)
		}
		if m.Lower >= m.Upper || m.Lower < -maxAggBound || m.Upper > maxAggBound {
			return bad("outcome.measure.lower", "want lower < upper within ±%d", maxAggBound)
		}
	default:
		return bad("outcome.measure.kind", "%q: want count or sum", m.Kind)
	}
	side := map[string]string{}
	for i, p := range j.Population {
		if !slices.Contains(q.Participants, p) || side[p] != "" {
			return bad(fmt.Sprintf("population[%d]", i), "%q: want a participant, listed once", p)
		}
		side[p] = "population"
	}
	for i, p := range j.Outcome.Participants {
		if !slices.Contains(q.Participants, p) || side[p] != "" {
			return bad(fmt.Sprintf("outcome.participants[%d]", i), "%q: want a participant not in the population, listed once", p)
		}
		side[p] = "outcome"
	}
	if len(j.Population) == 0 || len(j.Outcome.Participants) == 0 || len(side) != len(q.Participants) {
		return bad("population", "every participant is in the population or at the outcome, and each side has one at least")
	}
	if c := q.cells() * q.outcomeCells(); c > maxAggCells {
		return bad("outcome.group_by", "%d joined cells, at most %d", c, maxAggCells)
	}
	return nil
}

// outcomeCells is the number of outcome cells (1 without outcome
// dimensions).
func (q *Query) outcomeCells() int {
	c := 1
	for _, d := range q.Join.Outcome.GroupBy {
		c *= len(d.Values) + 1
	}
	return c
}

// joinLen is the vector of a joined query: population counts per
// population cell, outcome counts per (population cell, outcome cell),
// and for a sum the sums per (population cell, outcome cell).
func (q *Query) joinLen() int {
	p, o := q.cells(), q.outcomeCells()
	if q.Join.Outcome.Measure.Kind == "sum" {
		return p + 2*p*o
	}
	return p + p*o
}

// minPopulation is the fewest linked persons a population participant
// takes part with.
func (q *Query) minPopulation(std *schema.Standard) int64 {
	return max(q.Join.MinPopulation, q.minCell(std))
}

// joinMinCell is the minimum cell size of a joined release: the larger of
// k and the minimum cell size of every dimension, population and outcome.
func (q *Query) joinMinCell(std *schema.Standard) int64 {
	k := q.minCell(std)
	for _, d := range append(slices.Clone(q.Join.Outcome.GroupBy), q.Join.Filter...) {
		if dim, ok := std.Dimension(d.Field); ok {
			k = max(k, dim.MinCellSize)
		}
	}
	return k
}

// joinAgreement returns the id of an active agreement under which
// provider, a population participant, sends recipient, an outcome
// participant, its list of a joined query: purpose the query's purpose,
// naming the population's record type and every field its population
// cells are made of (group_by and filter, joinPopulationFields); "" if
// none. The same agreement is looked up at both ends: by the population
// participant before it takes part, by the outcome participant on each
// join message (AGGREGATES.md §7).
func (a *Aggregator) joinAgreement(ctx context.Context, q *Query, provider, recipient string, now time.Time) (string, error) {
	return a.agreementFor(ctx, provider, recipient, q.Purpose, q.RecordType, q.joinPopulationFields(a.std), now)
}

// fieldsHint is ", fields a, b" for an error, "" without fields.
func fieldsHint(fields []string) string {
	if len(fields) == 0 {
		return ""
	}
	return " with fields " + strings.Join(fields, ", ")
}

// joinAgreementRefusal is the refusal of a join message from sender, a
// population participant this node holds no agreement with.
func joinAgreementRefusal(q *Query, sender, node string, fields []string) error {
	return envelope.Refuse(envelope.RefuseNoAgreement, fmt.Errorf(
		"join message from %s: %s holds no active agreement with %s as provider and itself as recipient, purpose %s, covering %s%s; install one on both sides (AGGREGATES.md §7)",
		sender, node, sender, q.Purpose, q.RecordType, fieldsHint(fields)))
}

// side is "population", "outcome" or "" for node.
func (q *Query) side(node string) string {
	if q.Join == nil {
		return ""
	}
	if slices.Contains(q.Join.Population, node) {
		return "population"
	}
	if slices.Contains(q.Join.Outcome.Participants, node) {
		return "outcome"
	}
	return ""
}

// noiseBlock is one part of a joined vector and its share variance.
type noiseBlock struct {
	cells    int
	variance *big.Rat
}

// planJoin plans the noise of a joined query: ρ split evenly between the
// denominators, the numerators and (for a sum) the sums. A person counts
// once at each population participant (in one cell: sensitivity the
// number of population participants, since one person may be held by
// several) and, with at most contribution_bound records, once at each
// outcome participant (an outcome participant counts each tag once,
// whichever population lists it).
func planJoin(q *Query) (aggPlan, error) {
	pc, oc := q.cells(), q.outcomeCells()
	p := aggPlan{cells: pc}
	m, n := q.minSurvivors()-q.Colluders, len(q.Participants)
	parts := 2.0
	if q.Join.Outcome.Measure.Kind == "sum" {
		parts = 3
	}
	target := q.Rho / parts
	c := float64(q.ContributionBound)
	np, no := float64(len(q.Join.Population)), float64(len(q.Join.Outcome.Participants))
	add := func(cells int, sens float64) error {
		v, r, err := privacy.PlanShareVariance(target, m, n, cells, privacy.Sensitivity{L1: sens, L2: sens})
		if err != nil {
			return err
		}
		p.blocks = append(p.blocks, noiseBlock{cells, v})
		p.rho += r
		return nil
	}
	if err := add(pc, np); err != nil {
		return p, err
	}
	if err := add(pc*oc, c*no); err != nil {
		return p, err
	}
	if me := q.Join.Outcome.Measure; me.Kind == "sum" {
		if err := add(pc*oc, c*no*float64(max(abs64(me.Lower), abs64(me.Upper), 1))); err != nil {
			return p, err
		}
	}
	p.countVar = p.blocks[0].variance
	return p, nil
}

// joinTag is the tag of a person in a round: SHA-256(label ‖ round key ‖
// pseudonym), where the round key binds the query digest and the round id
// (joinRoundKey), so that tags of two queries, or of two rounds of a
// standing query, cannot be matched.
func joinTag(roundKey []byte, pseudonym [32]byte) [32]byte {
	return joinHash(joinTagLabel, roundKey, pseudonym)
}

// joinCellMask masks a person's population cell in a list: the first 4
// bytes of SHA-256(cell label ‖ round key ‖ pseudonym). Only a node that
// holds the pseudonym (an outcome participant for its own persons) can
// take the mask off; for everyone else an entry's cell is as random as
// its tag, so the list does not show the population's exact histogram of
// cells (its un-noised denominators).
func joinCellMask(roundKey []byte, pseudonym [32]byte) uint32 {
	m := joinHash(joinCellLabel, roundKey, pseudonym)
	return binary.BigEndian.Uint32(m[:4])
}

// joinHash is SHA-256(label ‖ round key ‖ pseudonym).
func joinHash(label string, roundKey []byte, pseudonym [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(roundKey)
	h.Write(pseudonym[:])
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// joinRoundKey is the query digest ‖ str8(round id).
func joinRoundKey(sq *SignedQuery, round string) []byte {
	d := sha256.Sum256(sq.Query)
	return append(append(d[:], byte(len(round))), round...)
}

// dimCells places records in the cells of a list of dimensions (valid under
// the standard, as Validate checked): each dimension and the index of each
// of its groupings are looked up once per table, not once per record.
type dimCells struct {
	dims  []*schema.Dimension
	index []map[string]int // by grouping, per dimension
}

// newDimCells prepares dims for placing records.
func (a *Aggregator) newDimCells(dims []Dimension) (dimCells, error) {
	c := dimCells{dims: make([]*schema.Dimension, len(dims)), index: make([]map[string]int, len(dims))}
	for i, d := range dims {
		dim, ok := a.std.Dimension(d.Field)
		if !ok {
			return c, fmt.Errorf("dimension %s not declared", d.Field)
		}
		c.dims[i] = dim
		c.index[i] = make(map[string]int, len(d.Values))
		for j, v := range d.Values {
			c.index[i][v] = j
		}
	}
	return c, nil
}

// cell is the cell of a record: a grouping not listed falls in the
// dimension's other cell.
func (c dimCells) cell(rec map[string]any) int {
	cell := 0
	for i, dim := range c.dims {
		j, ok := c.index[i][dim.Grouping(aggValue(rec[dim.Field]))]
		if !ok {
			j = len(c.index[i]) // other
		}
		cell = cell*(len(c.index[i])+1) + j
	}
	return cell
}

// listed reports whether a record's grouping is listed in every dimension
// (a filter).
func (c dimCells) listed(rec map[string]any) bool {
	for i, dim := range c.dims {
		if _, ok := c.index[i][dim.Grouping(aggValue(rec[dim.Field]))]; !ok {
			return false
		}
	}
	return true
}

// decodeRecord decodes a record's body, numbers kept as json.Number; false
// when it is not a JSON object.
func decodeRecord(body []byte) (map[string]any, bool) {
	var rec map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return rec, dec.Decode(&rec) == nil
}

// joinEpochAllowed checks, at a participant, the epoch of a joined
// query's linkage against the time: this calendar year or the last one.
// Each new epoch makes every participant link all its students again and
// spends the evaluator's allowance for a fresh (purpose, epoch); a center
// naming epochs at will could drive that work without bound, so named
// epochs and other years are declined (bad_query) before any linkage.
func joinEpochAllowed(epoch string, now time.Time) error {
	year := now.UTC().Year()
	if epoch == strconv.Itoa(year) || epoch == strconv.Itoa(year-1) {
		return nil
	}
	return fmt.Errorf("join.epoch %q: a participant links for joined queries only in this calendar year's epoch (%d) or the last one's (%d)", epoch, year, year-1)
}

// linkageError is a failure to obtain linkage pseudonyms: the node
// declines with RefuseNoLinkage.
type linkageError struct{ err error }

func (e *linkageError) Error() string { return "linkage pseudonyms: " + e.err.Error() }
func (e *linkageError) Unwrap() error { return e.err }

// pseudonymsFor obtains this node's linkage pseudonyms for the query.
func (a *Aggregator) pseudonymsFor(ctx context.Context, q *Query) (map[string][32]byte, error) {
	if a.pseudonyms == nil {
		return nil, &linkageError{errors.New("this node has no linkage")}
	}
	ps, err := a.pseudonyms(ctx, q.Join.LinkPurpose, q.Join.Epoch)
	if err != nil {
		return nil, &linkageError{err}
	}
	return ps, nil
}

// populationSide computes a population participant's part: its
// denominators (the table) and its padded, sorted (tag, cell) list. It
// returns the number of linked persons in its population.
func (a *Aggregator) populationSide(ctx context.Context, q *Query, digest []byte) ([]int64, []byte, int64, error) {
	// Persons by subject key (the pseudonyms' key), each in the cell of
	// its first record ingested; -1 outside the filter.
	cells := map[string]int{}
	sk, err := a.PopulationOf(q.RecordType) // the subject key
	if err != nil {
		return nil, nil, 0, err
	}
	filter, err := a.newDimCells(q.Join.Filter)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("joined population: %w", err)
	}
	groups, err := a.newDimCells(q.GroupBy)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("joined population: %w", err)
	}
	err = a.scanRecords(ctx, q.RecordType, func(subject string, body []byte) error {
		if subject == "" {
			return errors.New("a record without a data subject")
		}
		rec, ok := decodeRecord(body)
		if !ok {
			return nil
		}
		id := aggValue(rec[sk])
		if _, done := cells[id]; done || id == "" {
			return nil // one record per person: the first ingested
		}
		if !filter.listed(rec) {
			cells[id] = -1
			return nil
		}
		cells[id] = groups.cell(rec)
		return nil
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("joined population: %w", err)
	}
	ps, err := a.pseudonymsFor(ctx, q)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("joined population: %w", err)
	}
	x := make([]int64, q.vectorLen())
	type entry struct {
		tag  [32]byte
		cell uint32
	}
	var list []entry
	for subject, c := range cells {
		pn, ok := ps[subject]
		if c < 0 || !ok {
			continue // outside the population, or not linkable
		}
		x[c]++
		list = append(list, entry{joinTag(digest, pn), uint32(c) ^ joinCellMask(digest, pn)})
	}
	linked := int64(len(list))
	size := joinPadMin
	for size < len(list) {
		size *= 2
	}
	for len(list) < size {
		var b [36]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, nil, 0, err
		}
		var e entry
		copy(e.tag[:], b[:32])
		e.cell = binary.BigEndian.Uint32(b[32:]) // as random as a masked cell
		list = append(list, e)
	}
	sort.Slice(list, func(i, j int) bool { return bytes.Compare(list[i].tag[:], list[j].tag[:]) < 0 })
	out := make([]byte, 0, len(list)*joinEntrySize)
	for _, e := range list {
		out = append(out, e.tag[:]...)
		out = binary.BigEndian.AppendUint32(out, e.cell)
	}
	return x, out, linked, nil
}

// outcomeEntry is one counted outcome record of a person.
type outcomeEntry struct {
	cell  int
	value int64
}

// outcomePerson is what an outcome participant holds of one of its
// persons in a round: the mask of the person's population cell in a list,
// and the outcome records counted.
type outcomePerson struct {
	mask    uint32
	entries []outcomeEntry
}

// outcomeRecords are an outcome participant's persons by join tag.
type outcomeRecords map[[32]byte]*outcomePerson

// outcomeSide reads an outcome participant's records: per join tag, the
// outcome cells (and values) of the person's first contribution_bound
// records.
func (a *Aggregator) outcomeSide(ctx context.Context, q *Query, digest []byte) (outcomeRecords, error) {
	ps, err := a.pseudonymsFor(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("joined outcome: %w", err)
	}
	o := q.Join.Outcome
	out := outcomeRecords{}
	// tags are the join tags by subject; a person's records counted are
	// out[tag].entries.
	tags := map[string][32]byte{}
	sk, err := a.PopulationOf(o.RecordType) // the subject key
	if err != nil {
		return nil, err
	}
	groups, err := a.newDimCells(o.GroupBy)
	if err != nil {
		return nil, fmt.Errorf("joined outcome: %w", err)
	}
	err = a.scanRecords(ctx, o.RecordType, func(_ string, body []byte) error {
		rec, ok := decodeRecord(body)
		if !ok {
			return nil
		}
		subject := aggValue(rec[sk])
		pn, ok := ps[subject]
		if subject == "" || !ok {
			return nil
		}
		t, seen := tags[subject]
		if seen && len(out[t].entries) >= q.ContributionBound {
			return nil
		}
		var value int64
		if o.Measure.Kind == "sum" {
			f, ok := aggNumber(rec[o.Measure.Field])
			if !ok {
				return nil
			}
			value = int64(math.Round(min(max(f, float64(o.Measure.Lower)), float64(o.Measure.Upper))))
		}
		c := groups.cell(rec)
		if !seen {
			t = joinTag(digest, pn)
			tags[subject] = t
			out[t] = &outcomePerson{mask: joinCellMask(digest, pn)}
		}
		out[t].entries = append(out[t].entries, outcomeEntry{c, value})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("joined outcome: %w", err)
	}
	return out, nil
}

// joinTags is what one population participant sent an outcome
// participant: its list, in chunks.
type joinTags struct {
	chunks map[int][]byte
	total  int
}

func (t *joinTags) complete() bool { return t != nil && t.total > 0 && len(t.chunks) == t.total }

// joinBuffered holds join messages of rounds this node does not know yet.
type joinBuffered struct {
	from    map[string]*joinTags
	bytes   int // of the chunks held
	expires time.Time
}

// errJoinBufferFull: a join message of a round this node does not know
// yet found the buffer full; it is a passing failure, redelivered later.
var errJoinBufferFull = errors.New("join message of a round not known yet: the buffer of such messages is full; retried later")

// bufferJoin holds a join message of a round this node has no round
// message for yet; agg.mu is held.
func (a *Aggregator) bufferJoin(ctx context.Context, h crypto.Header, m aggMsg) error {
	now := a.now()
	held, senderRounds := 0, 0
	for id, o := range a.joinBuf {
		if now.After(o.expires) {
			delete(a.joinBuf, id)
			continue
		}
		held += o.bytes
		if o.from[h.Sender] != nil && id != m.Round {
			senderRounds++
		}
	}
	b := a.joinBuf[m.Round]
	if b == nil || b.from[h.Sender] == nil {
		// Without the query the agreement cannot be matched yet (adoptBuffered
		// does, once the round message is in): a sender this node holds no
		// aggregates-purpose agreement from at all is refused now.
		ok, err := a.anyJoinAgreement(ctx, h.Sender, now)
		if err != nil {
			return err
		}
		if !ok {
			a.m.Aggregate.Refused.WithLabelValues(RefuseNoAgreement).Inc()
			return envelope.Refuse(envelope.RefuseNoAgreement, fmt.Errorf(
				"join message from %s: this node holds no active statistics or employment_statistics agreement with it as provider; install one on both sides (AGGREGATES.md §7)", h.Sender))
		}
	}
	if (b == nil || b.from[h.Sender] == nil) && senderRounds >= joinBufferPerSender {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("join messages of more than %d rounds not known yet from one sender", joinBufferPerSender))
	}
	if b == nil && len(a.joinBuf) >= joinBufferRounds || held+len(m.Data) > joinBufferBytes {
		return errJoinBufferFull
	}
	if b == nil {
		b = &joinBuffered{from: map[string]*joinTags{}, expires: now.Add(10 * time.Minute)}
	}
	before := 0
	if t := b.from[h.Sender]; t != nil {
		before = len(t.chunks)
	}
	if err := addJoinChunk(b.from, h.Sender, m); err != nil {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, err)
	}
	if len(b.from[h.Sender].chunks) > before {
		b.bytes += len(m.Data)
	}
	a.joinBuf[m.Round] = b
	return nil
}

// anyJoinAgreement reports whether this node holds an active agreement,
// valid at now, with sender as provider and itself as recipient under
// one of the purposes of aggregates.
func (a *Aggregator) anyJoinAgreement(ctx context.Context, sender string, now time.Time) (bool, error) {
	list, err := a.activeAgreements(ctx)
	if err != nil {
		return false, err
	}
	for _, ag := range list {
		if !ag.Revoked && ag.Provider == sender && ag.Recipient == a.nodeID && aggPurposes[ag.Purpose] && ag.ValidAt(now) {
			return true, nil
		}
	}
	return false, nil
}

// joinMessages splits a list into the join messages of round.
func joinMessages(round string, list []byte) []aggMsg {
	per := joinChunk * joinEntrySize
	total := (len(list) + per - 1) / per
	var out []aggMsg
	for i := range total {
		out = append(out, aggMsg{Type: aggMsgJoin, Round: round, Data: list[i*per : min(len(list), (i+1)*per)], Chunk: i, Chunks: total})
	}
	return out
}

// addJoinChunk checks and stores one chunk from a population participant.
// Its cells are masked (joinCellMask): they are checked against the
// query's cells when unmasked, for the outcome participant's own persons
// (outcomeMask).
func addJoinChunk(tags map[string]*joinTags, from string, m aggMsg) error {
	if m.Chunks < 1 || m.Chunks > joinMaxChunks || m.Chunk < 0 || m.Chunk >= m.Chunks || len(m.Data) == 0 ||
		len(m.Data)%joinEntrySize != 0 || len(m.Data) > joinChunk*joinEntrySize {
		return errors.New("malformed join chunk")
	}
	t := tags[from]
	if t == nil {
		t = &joinTags{chunks: map[int][]byte{}, total: m.Chunks}
		tags[from] = t
	}
	if t.total != m.Chunks {
		return errors.New("join chunks disagree on their number")
	}
	if _, dup := t.chunks[m.Chunk]; !dup {
		t.chunks[m.Chunk] = m.Data
	}
	return nil
}

// partJoin takes a join message from a population participant.
func (a *Aggregator) partJoin(ctx context.Context, h crypto.Header, m aggMsg) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pr := a.parts[m.Round]
	if pr == nil {
		// The round message may come after a population participant's
		// list: hold it until then (bounded per sender and in all).
		return a.bufferJoin(ctx, h, m)
	}
	if pr.q == nil || pr.q.side(a.nodeID) != "outcome" || pr.q.side(h.Sender) != "population" {
		if pr.q == nil {
			return nil // this node declined the round
		}
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("join message from a node that is not in the round's population, or to one not at its outcome"))
	}
	if id, err := a.joinAgreement(ctx, pr.q, h.Sender, a.nodeID, a.now()); err != nil {
		return err
	} else if id == "" {
		a.m.Aggregate.Refused.WithLabelValues(RefuseNoAgreement).Inc()
		return joinAgreementRefusal(pr.q, h.Sender, a.nodeID, pr.q.joinPopulationFields(a.std))
	}
	if pr.tags == nil || pr.dropped {
		// The table was built from the lists already (a redelivered chunk,
		// or the list of a participant left out of U2), or this node left
		// the round: nothing to hold it for.
		return nil
	}
	if err := addJoinChunk(pr.tags, h.Sender, m); err != nil {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, err)
	}
	if pr.pending != nil && !pr.dropped && pr.step == "shared" && a.joinReady(pr, pr.pending.Members) {
		pm := *pr.pending
		pr.pending = nil
		if err := a.outcomeMask(ctx, pr, pm); err != nil {
			a.log.Warn("aggregate round: dropping out", "round", pr.id, "step", pm.Type, "err", err)
			pr.x, pr.dropped = nil, true
		}
	}
	return nil
}

// adoptBuffered moves the join messages held for a round into its state,
// dropping those not from its population, and refusing those of a sender
// this node holds no agreement from for the query (joinAgreement): counted
// and in the evidence log (reason no_agreement, peer the sender), since
// their envelopes were accepted into the buffer before the query was known.
// An error (the agreements could not be read) leaves the buffer as it was.
func (a *Aggregator) adoptBuffered(ctx context.Context, pr *partRound) error {
	b := a.joinBuf[pr.id]
	pr.tags = map[string]*joinTags{}
	if b == nil {
		return nil
	}
	var refused []string
	now := a.now()
	for _, from := range slices.Sorted(maps.Keys(b.from)) {
		if pr.q.side(from) != "population" {
			continue
		}
		id, err := a.joinAgreement(ctx, pr.q, from, a.nodeID, now)
		if err != nil {
			return err
		}
		if id == "" {
			refused = append(refused, from)
		}
	}
	if len(refused) > 0 {
		err := a.db.Write(ctx, func(tx *sql.Tx) error {
			for _, from := range refused {
				e := aggEntry(pr.id, pr.digest, RefuseNoAgreement)
				e.Peer, e.Purpose = from, string(pr.q.Purpose)
				if err := a.ev.Append(ctx, tx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, from := range refused {
			a.m.Aggregate.Refused.WithLabelValues(RefuseNoAgreement).Inc()
			a.log.Warn("aggregate round: join list held from a sender without an agreement for the query; refused", "round", pr.id, "from", from)
		}
	}
	delete(a.joinBuf, pr.id)
	for from, t := range b.from {
		if pr.q.side(from) != "population" || slices.Contains(refused, from) {
			continue
		}
		for i, data := range t.chunks {
			_ = addJoinChunk(pr.tags, from, aggMsg{Data: data, Chunk: i, Chunks: t.total})
		}
	}
	return nil
}

// joinReady reports whether every population participant in the list U2
// sent its whole list.
func (a *Aggregator) joinReady(pr *partRound, u2 []string) bool {
	for _, p := range u2 {
		if pr.q.side(p) == "population" && !pr.tags[p].complete() {
			return false
		}
	}
	return true
}

// outcomeMask builds an outcome participant's table from the lists of the
// population participants in U2 (each person once, in the cell of the
// first list by participant id that names its tag), then masks it.
func (a *Aggregator) outcomeMask(ctx context.Context, pr *partRound, m aggMsg) error {
	q := pr.q
	pc, oc := q.cells(), q.outcomeCells()
	sum := q.Join.Outcome.Measure.Kind == "sum"
	x := make([]int64, q.vectorLen())
	seen := map[[32]byte]bool{} // of this node's persons only: other tags are skipped anyway
	for _, p := range slices.Sorted(slices.Values(m.Members)) {
		if q.side(p) != "population" {
			continue
		}
		t := pr.tags[p]
		badCells := 0
		for i := range t.total {
			data := t.chunks[i]
			for k := 0; k+joinEntrySize <= len(data); k += joinEntrySize {
				var tag [32]byte
				copy(tag[:], data[k:k+32])
				op := pr.outcome[tag]
				if op == nil {
					continue // not one of this node's persons: its cell stays masked
				}
				if seen[tag] {
					continue
				}
				seen[tag] = true
				pcell := int(binary.BigEndian.Uint32(data[k+32:]) ^ op.mask)
				if pcell >= pc {
					// Only a population participant that breaks the
					// protocol names a cell the query lacks: not counted.
					badCells++
					continue
				}
				for _, e := range op.entries {
					i := pc + pcell*oc + e.cell
					x[i]++
					if sum {
						x[i+pc*oc] += e.value
					}
				}
			}
		}
		if badCells > 0 {
			a.log.Warn("aggregate round: a join list names population cells the query lacks; not counted", "round", pr.id, "from", p, "entries", badCells)
		}
	}
	pr.tags, pr.outcome = nil, nil
	pr.x = x
	return a.partMask(ctx, pr, m)
}

// JoinedCell is one cell of a joined release: its key (the population
// dimensions' groupings, then the outcome's), the noised population count
// of its population cell, the noised outcome count, the rate (outcome
// count / population count) with its accuracy, and for a sum the noised
// sum and the mean, whose accuracy is then Accuracy (the rate's
// RateAccuracy); or suppressed, with no figure.
type JoinedCell struct {
	Key        []string  `json:"key"`
	Population *int64    `json:"population,omitempty"`
	Count      *int64    `json:"count,omitempty"`
	Rate       *float64  `json:"rate,omitempty"`
	Sum        *int64    `json:"sum,omitempty"`
	Mean       *float64  `json:"mean,omitempty"`
	Accuracy   *Accuracy `json:"accuracy,omitempty"`
	// RateAccuracy is the rate's accuracy when the cell holds a mean
	// (Accuracy is then the mean's).
	RateAccuracy *Accuracy `json:"rate_accuracy,omitempty"`
	Suppressed   bool      `json:"suppressed,omitempty"`
}

// Accuracy is how far a released figure may be from the exact one because
// of the noise: at confidence Level, the count within ±Count, and the rate
// (or the mean) within ±HalfWidth, in [Lower, Upper]. The noise variances
// are known exactly (the plan's share variance times the number of
// survivors); the rate's and the mean's follow by the delta method.
type Accuracy struct {
	Level     float64 `json:"level"`
	Count     float64 `json:"count"`
	StdErr    float64 `json:"stderr"`
	HalfWidth float64 `json:"half_width"`
	Lower     float64 `json:"lower"`
	Upper     float64 `json:"upper"`
}

// JoinedRelease is the joined part of a release.
type JoinedRelease struct {
	Population        string       `json:"population"` // the population's record type
	PopulationGroupBy []string     `json:"population_group_by"`
	Outcome           string       `json:"outcome"` // the outcome's record type
	OutcomeGroupBy    []string     `json:"outcome_group_by"`
	Measure           Measure      `json:"measure"`
	LinkPurpose       string       `json:"link_purpose"`
	Epoch             string       `json:"epoch"`
	PopulationSites   []string     `json:"population_participants"`
	OutcomeSites      []string     `json:"outcome_participants"`
	Cells             []JoinedCell `json:"cells"`
}

// outcomeKey returns the outcome dimension values of outcome cell i.
func (q *Query) outcomeKey(i int) []string {
	dims := q.Join.Outcome.GroupBy
	key := make([]string, len(dims))
	for d := len(dims) - 1; d >= 0; d-- {
		size := len(dims[d].Values) + 1
		j := i % size
		i /= size
		if j < len(dims[d].Values) {
			key[d] = dims[d].Values[j]
		}
	}
	return key
}

// joinedRelease builds the joined cells from the summed vector: a cell is
// suppressed when its noisy population count or its noisy outcome count
// is under k.
func joinedRelease(q *Query, plan aggPlan, survivors int, sum []int64, k int64) (*JoinedRelease, int, int) {
	pc, oc := q.cells(), q.outcomeCells()
	j := q.Join
	jr := &JoinedRelease{Population: q.RecordType, Outcome: j.Outcome.RecordType, Measure: j.Outcome.Measure,
		LinkPurpose: string(j.LinkPurpose), Epoch: j.Epoch, PopulationSites: slices.Sorted(slices.Values(j.Population)),
		OutcomeSites: slices.Sorted(slices.Values(j.Outcome.Participants)), PopulationGroupBy: []string{}, OutcomeGroupBy: []string{}}
	for _, d := range q.GroupBy {
		jr.PopulationGroupBy = append(jr.PopulationGroupBy, d.Field)
	}
	for _, d := range j.Outcome.GroupBy {
		jr.OutcomeGroupBy = append(jr.OutcomeGroupBy, d.Field)
	}
	variance := func(b int) float64 {
		f, _ := plan.blocks[b].variance.Float64()
		return f * float64(survivors)
	}
	vD, vN := variance(0), variance(1)
	var vS float64
	if j.Outcome.Measure.Kind == "sum" {
		vS = variance(2)
	}
	released, suppressed := 0, 0
	for p := range pc {
		for o := range oc {
			c := JoinedCell{Key: append(q.cellKey(p), q.outcomeKey(o)...)}
			d, n := sum[p], sum[pc+p*oc+o]
			if d < k || n < k {
				c.Suppressed = true
				suppressed++
				jr.Cells = append(jr.Cells, c)
				continue
			}
			released++
			dd, nn := d, n
			c.Population, c.Count = &dd, &nn
			rate := float64(n) / float64(d)
			ra := &Accuracy{Level: AccuracyLevel, Count: accuracyZ * math.Sqrt(vN), StdErr: math.Sqrt(vN+rate*rate*vD) / float64(d)}
			ra.HalfWidth = accuracyZ * ra.StdErr
			ra.Lower, ra.Upper = max(0, rate-ra.HalfWidth), rate+ra.HalfWidth
			c.Rate, c.Accuracy = &rate, ra
			if j.Outcome.Measure.Kind == "sum" {
				s := sum[pc+pc*oc+p*oc+o]
				mean := float64(s) / float64(n)
				ma := &Accuracy{Level: AccuracyLevel, Count: ra.Count, StdErr: math.Sqrt(vS+mean*mean*vN) / float64(n)}
				ma.HalfWidth = accuracyZ * ma.StdErr
				// a mean of values clamped to [lower, upper] lies in it
				ma.Lower = max(float64(j.Outcome.Measure.Lower), mean-ma.HalfWidth)
				ma.Upper = min(float64(j.Outcome.Measure.Upper), mean+ma.HalfWidth)
				c.Sum, c.Mean, c.Accuracy, c.RateAccuracy = &s, &mean, ma, ra
			}
			jr.Cells = append(jr.Cells, c)
		}
	}
	return jr, released, suppressed
}

// joinPopulationFields are the fields a population participant reads:
// the group_by and filter dimensions' fields.
func (q *Query) joinPopulationFields(std *schema.Standard) []string {
	return dimFields(std, append(slices.Clone(q.GroupBy), q.Join.Filter...), "")
}

// joinOutcomeFields are the fields an outcome participant reads: its
// dimensions' fields and the measured field.
func (q *Query) joinOutcomeFields(std *schema.Standard) []string {
	return dimFields(std, q.Join.Outcome.GroupBy, q.Join.Outcome.Measure.Field)
}

func dimFields(std *schema.Standard, dims []Dimension, measure string) []string {
	var out []string
	for _, d := range dims {
		if dim, ok := std.Dimension(d.Field); ok {
			out = append(out, dim.Field)
		}
	}
	if measure != "" {
		out = append(out, measure)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
