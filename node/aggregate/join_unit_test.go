package aggregate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func validJoinQuery() Query {
	q := Query{ID: "j", RecordType: "student", Purpose: policy.PurposeStatistics,
		GroupBy: []Dimension{{Field: "hukou_type", Values: []string{"城镇", "农村"}}},
		Measure: Measure{Kind: "count"}, K: 10, Rho: 0.1, Participants: []string{"hs", "u1", "u2"}, Threshold: 3, Colluders: 1,
		Join: &Join{LinkPurpose: policy.PurposeStatistics, Epoch: strconv.Itoa(time.Now().UTC().Year()), Population: []string{"hs"},
			Outcome: JoinOutcome{RecordType: "employment", Participants: []string{"u1", "u2"},
				GroupBy: []Dimension{{Field: "employer_region", Values: []string{"440300"}}},
				Measure: Measure{Kind: "sum", Field: "starting_salary_cny", Lower: 0, Upper: 20000}}}}
	q.SetDefaults("center", time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))
	return q
}

// TestJoinQueryValidate: each bad join field is refused, naming it; an
// undeclared dimension is a DimensionError.
func TestJoinQueryValidate(t *testing.T) {
	std := schema.Default()
	q := validJoinQuery()
	if err := q.Validate(std); err != nil {
		t.Fatalf("valid joined query: %v", err)
	}
	if q.vectorLen() != 3+2*3*2 {
		t.Errorf("vector length %d, want %d", q.vectorLen(), 3+2*3*2)
	}
	for _, c := range []struct {
		name, want string
		edit       func(*Query)
		dimension  bool
	}{
		{"count only", "join.measure", func(q *Query) {
			q.RecordType, q.Dataset = "enrollment", "enrollment"
			q.GroupBy = []Dimension{{Field: "education_level", Values: []string{"本科"}}}
			q.Measure = Measure{Kind: "sum", Field: "program_length", Lower: 0, Upper: 5}
		}, false},
		{"purpose", "join.link_purpose", func(q *Query) { q.Join.LinkPurpose = "marketing" }, false},
		{"epoch", "join.epoch", func(q *Query) { q.Join.Epoch = "" }, false},
		{"epoch the linkage refuses", "join.epoch", func(q *Query) { q.Join.Epoch = "Spring-2026" }, false},
		{"epoch a number not a year", "join.epoch", func(q *Query) { q.Join.Epoch = "12026" }, false},
		{"outcome type", "join.outcome.record_type", func(q *Query) { q.Join.Outcome.RecordType = "nope" }, false},
		{"outcome of no person", "join.outcome.record_type", func(q *Query) { q.Join.Outcome.RecordType = "course" }, false},
		{"outcome dimension of another type", "join.outcome.group_by[0].field", func(q *Query) { q.Join.Outcome.GroupBy[0].Field = "gender" }, true},
		{"undeclared filter", "join.filter[0].field", func(q *Query) { q.Join.Filter = []Dimension{{Field: "shoe_size", Values: []string{"1"}}} }, true},
		{"grouping not allowed", "join.outcome.group_by[0].values[0]", func(q *Query) {
			q.Join.Outcome.GroupBy[0].Field = "employer_region"
			q.Join.Outcome.GroupBy[0].Values = []string{""}
		}, false},
		{"measure field", "join.outcome.measure.field", func(q *Query) { q.Join.Outcome.Measure.Field = "employer_name" }, false},
		{"population not a participant", "join.population[0]", func(q *Query) { q.Join.Population = []string{"x"} }, false},
		{"both sides", "join.outcome.participants[0]", func(q *Query) { q.Join.Outcome.Participants = []string{"hs", "u1", "u2"} }, false},
		{"a participant on no side", "join.population", func(q *Query) { q.Join.Outcome.Participants = []string{"u1"} }, false},
		{"min population", "join.min_population", func(q *Query) { q.Join.MinPopulation = -1 }, false},
		{"population grouped by an L4 dimension", "group_by[0].field", func(q *Query) { q.GroupBy = []Dimension{{Field: "disability", Values: []string{"true"}}} }, false},
		{"population filtered by an L4 dimension", "join.filter[0].field", func(q *Query) { q.Join.Filter = []Dimension{{Field: "disability", Values: []string{"true"}}} }, false},
	} {
		q := validJoinQuery()
		c.edit(&q)
		err := q.Validate(std)
		var de *DimensionError
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		} else if isDim := asDimensionError(err, &de); isDim != c.dimension {
			t.Errorf("%s: DimensionError %v, want %v", c.name, isDim, c.dimension)
		}
	}
}

func asDimensionError(err error, de **DimensionError) bool {
	d, ok := err.(*DimensionError)
	*de = d
	return ok
}

// TestJoinTags: tags are equal for the same pseudonym and round, and
// differ across rounds and queries; lists are padded, sorted and chunked.
func TestJoinTags(t *testing.T) {
	sq := &SignedQuery{Query: []byte(`{"id":"a"}`)}
	other := &SignedQuery{Query: []byte(`{"id":"b"}`)}
	var p [32]byte
	p[0] = 7
	t1 := joinTag(joinRoundKey(sq, "a-r1"), p)
	if t1 != joinTag(joinRoundKey(sq, "a-r1"), p) {
		t.Error("the same person and round: tags differ")
	}
	if t1 == joinTag(joinRoundKey(sq, "a-r2"), p) || t1 == joinTag(joinRoundKey(other, "a-r1"), p) {
		t.Error("tags match across rounds or queries")
	}
	list := bytes.Repeat([]byte{1}, (joinChunk+5)*joinEntrySize)
	msgs := joinMessages("a-r1", list)
	if len(msgs) != 2 || msgs[0].Chunks != 2 || msgs[1].Chunk != 1 || len(msgs[1].Data) != 5*joinEntrySize {
		t.Errorf("chunks: %d", len(msgs))
	}
}

// TestJoinChunkRefusals: malformed chunks, chunk counts that disagree or
// are too many are refused.
func TestJoinChunkRefusals(t *testing.T) {
	entry := func(cell uint32) []byte {
		b := make([]byte, 32)
		return binary.BigEndian.AppendUint32(b, cell)
	}
	for _, c := range []struct {
		name string
		m    aggMsg
	}{
		{"empty", aggMsg{Chunk: 0, Chunks: 1}},
		{"not whole entries", aggMsg{Data: make([]byte, 35), Chunk: 0, Chunks: 1}},
		{"chunk past chunks", aggMsg{Data: entry(0), Chunk: 1, Chunks: 1}},
		{"too many chunks", aggMsg{Data: entry(0), Chunk: 0, Chunks: joinMaxChunks + 1}},
		{"too long", aggMsg{Data: bytes.Repeat(entry(0), joinChunk+1), Chunk: 0, Chunks: 1}},
	} {
		if err := addJoinChunk(map[string]*joinTags{}, "hs", c.m); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	tags := map[string]*joinTags{}
	if err := addJoinChunk(tags, "hs", aggMsg{Data: entry(2), Chunk: 0, Chunks: 2}); err != nil {
		t.Fatal(err)
	}
	if err := addJoinChunk(tags, "hs", aggMsg{Data: entry(2), Chunk: 1, Chunks: 3}); err == nil {
		t.Error("chunks disagreeing on their number: accepted")
	}
	if tags["hs"].complete() {
		t.Error("one chunk of two: complete")
	}
	if err := addJoinChunk(tags, "hs", aggMsg{Data: entry(1), Chunk: 1, Chunks: 2}); err != nil || !tags["hs"].complete() {
		t.Errorf("second chunk: %v, complete %v", err, tags["hs"].complete())
	}
}

// TestJoinBufferShares: a member sending join messages of rounds the
// node does not know yet is held to its share of the buffer; the buffer
// full, an honest member's list is retried later, never refused.
func TestJoinBufferShares(t *testing.T) {
	now := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	senders := []string{"evil", "hs"}
	for i := range joinBufferRounds {
		senders = append(senders, fmt.Sprintf("m%d", i))
	}
	a := New(Deps{NodeID: "u1", Metrics: metrics.New(schema.Default(), metrics.Labels{}), Now: func() time.Time { return now },
		ActiveAgreements: joinAgreementsTo("u1", now, nil, senders...)})
	entry := binary.BigEndian.AppendUint32(make([]byte, 32), 0)
	send := func(from, round string) error {
		return a.partJoin(context.Background(), crypto.Header{Sender: from}, aggMsg{Type: aggMsgJoin, Round: round, Data: entry, Chunk: 0, Chunks: 1})
	}
	var refused *envelope.Refusal
	for i := range joinBufferRounds + 1 {
		err := send("evil", fmt.Sprintf("x%d-r1", i))
		if i < joinBufferPerSender && err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if i >= joinBufferPerSender && !errors.As(err, &refused) {
			t.Fatalf("round %d of one sender: want a refusal, got %v", i, err)
		}
	}
	if len(a.joinBuf) != joinBufferPerSender {
		t.Errorf("%d rounds held, want %d", len(a.joinBuf), joinBufferPerSender)
	}
	// Other members fill the rest: an honest list is then retried, not refused.
	for i := 0; len(a.joinBuf) < joinBufferRounds; i++ {
		if err := send(fmt.Sprintf("m%d", i/joinBufferPerSender), fmt.Sprintf("y%d-r1", i)); err != nil {
			t.Fatal(err)
		}
	}
	err := send("hs", "q-r1")
	if errors.As(err, &refused) || !errors.Is(err, errJoinBufferFull) {
		t.Errorf("honest list, buffer full: want errJoinBufferFull, got %v", err)
	}
	now = now.Add(11 * time.Minute)
	if err := send("hs", "q-r1"); err != nil {
		t.Errorf("honest list once the held ones expired: %v", err)
	}
}

// TestJoinChunkAfterMask: a population participant's chunk arriving after
// the outcome participant built its table from the lists (a redelivery,
// or the list of one left out of U2) is let go: no panic, nothing held.
func TestJoinChunkAfterMask(t *testing.T) {
	q := validJoinQuery()
	a := New(Deps{NodeID: "u1", Std: schema.Default(), Metrics: metrics.New(schema.Default(), metrics.Labels{}), Now: time.Now,
		ActiveAgreements: joinAgreementsTo("u1", time.Now(), nil, "hs")})
	a.parts["j-r1"] = &partRound{id: "j-r1", q: &q, step: "masked"} // tags dropped by outcomeMask
	entry := binary.BigEndian.AppendUint32(make([]byte, 32), 0)
	err := a.partJoin(context.Background(), crypto.Header{Sender: "hs"}, aggMsg{Type: aggMsgJoin, Round: "j-r1", Data: entry, Chunk: 0, Chunks: 1})
	if err != nil {
		t.Errorf("late chunk: %v", err)
	}
	if a.parts["j-r1"].tags != nil {
		t.Error("late chunk held after the table was built")
	}
}

// TestJoinListHidesCells: a population participant's list does not show
// the outcome participant how many of its persons are in each population
// cell (its exact, un-noised denominators): an entry's cell is masked by
// the person's pseudonym, so only the outcome participant's own persons'
// cells can be read, and they read right.
func TestJoinListHidesCells(t *testing.T) {
	q := validJoinQuery()
	ps := map[string][32]byte{}
	var bodies [][]byte
	for i := range 300 {
		id := fmt.Sprintf("s%03d", i)
		hukou := "城镇"
		if i < 5 {
			hukou = "农村" // a small cell: 5 persons
		}
		bodies = append(bodies, []byte(fmt.Sprintf(`{"student_id":%q,"hukou_type":%q}`, id, hukou)))
		var p [32]byte
		copy(p[:], id)
		ps[id] = p
	}
	a := New(Deps{NodeID: "hs", Std: schema.Default(), Metrics: metrics.New(schema.Default(), metrics.Labels{}), Now: time.Now,
		ScanRecords: func(_ context.Context, _ string, fn func(string, []byte) error) error {
			for _, b := range bodies {
				if err := fn("subject", b); err != nil {
					return err
				}
			}
			return nil
		},
		Pseudonyms: func(context.Context, policy.Purpose, string) (map[string][32]byte, error) { return ps, nil }})
	key := []byte("round key")
	x, list, linked, err := a.populationSide(context.Background(), &q, key)
	if err != nil || linked != 300 {
		t.Fatalf("population side: %v, %d linked", err, linked)
	}
	if x[0]+x[1]+x[2] != 300 || x[1] != 5 {
		t.Fatalf("denominators %v, want 5 in the second cell of 300", x[:3])
	}
	inRange := 0
	byTag := map[[32]byte]uint32{}
	for i := 0; i < len(list); i += joinEntrySize {
		var tag [32]byte
		copy(tag[:], list[i:i+32])
		c := binary.BigEndian.Uint32(list[i+32:])
		byTag[tag] = c
		if c < uint32(q.cells()) {
			inRange++
		}
	}
	// In clear, every entry would name one of the 3 cells; masked, a
	// handful at most do by chance.
	if n := len(list) / joinEntrySize; inRange > n/100 {
		t.Errorf("%d of %d entries name a population cell in clear: the list shows the cells' counts", inRange, n)
	}
	// The holder of a pseudonym reads its person's cell.
	p := ps["s002"]
	if c := byTag[joinTag(key, p)] ^ joinCellMask(key, p); c != 1 {
		t.Errorf("s002's cell unmasked: %d, want 1", c)
	}
}

// joinAgreementsTo lists, for Deps.ActiveAgreements, an agreement from each
// sender to recipient for statistics, valid around now, naming the record
// types of types (default: student with hukou_type and gender).
func joinAgreementsTo(recipient string, now time.Time, types map[string][]string, senders ...string) func(context.Context) ([]policy.Agreement, error) {
	if types == nil {
		types = map[string][]string{"student": {"gender", "hukou_type"}}
	}
	var out []policy.Agreement
	for _, s := range senders {
		out = append(out, policy.Agreement{ID: s + "-" + recipient + "-join", Provider: s, Recipient: recipient,
			Purpose: policy.PurposeStatistics, LegalBasis: policy.BasisPublicInterest, RecordTypes: types,
			MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour)})
	}
	return func(context.Context) ([]policy.Agreement, error) { return out, nil }
}

// TestJoinAgreementChecked: an outcome participant takes join messages
// only from a sender it holds the query's agreement from. A message of a
// round not known yet from a sender with no aggregates agreement at all is
// refused (no_agreement) and not buffered; one from a sender whose
// agreement does not cover the query (another record type) is buffered,
// then refused when the round message comes: dropped, counted, and in the
// evidence log. Once the round is known, such a message is refused at once.
func TestJoinAgreementChecked(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := metrics.New(schema.Default(), metrics.Labels{})
	// hs's agreement names enrollment, not the population's student records.
	a := New(Deps{NodeID: "u1", Std: schema.Default(), DB: db, Evidence: evidence.New("u1", []byte("subject key"), func() time.Time { return now }).UseDB(db),
		Metrics: m, Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler),
		ActiveAgreements: joinAgreementsTo("u1", now, map[string][]string{"enrollment": {"education_level"}}, "hs")})
	entry := binary.BigEndian.AppendUint32(make([]byte, 32), 0)
	send := func(from, round string) error {
		return a.partJoin(ctx, crypto.Header{Sender: from}, aggMsg{Type: aggMsgJoin, Round: round, Data: entry, Chunk: 0, Chunks: 1})
	}
	var refused *envelope.Refusal
	if err := send("u2", "j-r1"); !errors.As(err, &refused) || refused.Reason != envelope.RefuseNoAgreement {
		t.Errorf("join message from a sender with no agreement: %v, want a no_agreement refusal", err)
	}
	if len(a.joinBuf) != 0 {
		t.Error("a refused join message was buffered")
	}
	if err := send("hs", "j-r1"); err != nil {
		t.Fatalf("join message from a sender with an aggregates agreement, round not known yet: %v", err)
	}
	q := validJoinQuery()
	pr := &partRound{id: "j-r1", q: &q, digest: "d", step: "linking"}
	if err := a.adoptBuffered(ctx, pr); err != nil {
		t.Fatal(err)
	}
	if pr.tags["hs"] != nil || len(a.joinBuf) != 0 {
		t.Errorf("the list of a sender whose agreement does not cover the query adopted: %v, %d rounds buffered", pr.tags["hs"], len(a.joinBuf))
	}
	var body string
	if err := db.R.QueryRowContext(ctx, `SELECT entry FROM evidence ORDER BY seq DESC LIMIT 1`).Scan(&body); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"peer":"hs"`, `"reason":"no_agreement"`, `"envelope":"j-r1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("evidence entry %s lacks %s", body, want)
		}
	}
	a.parts["j-r1"] = pr
	if err := send("hs", "j-r1"); !errors.As(err, &refused) || refused.Reason != envelope.RefuseNoAgreement {
		t.Errorf("join message of a known round from a sender without the query's agreement: %v, want a no_agreement refusal", err)
	}
	if v := testutil.ToFloat64(m.Aggregate.Refused.WithLabelValues(RefuseNoAgreement)); v != 3 {
		t.Errorf("no_agreement refusals counted: %v, want 3", v)
	}
	// With the agreement covering the query, the list is taken.
	a.activeAgreements = joinAgreementsTo("u1", now, nil, "hs")
	if err := send("hs", "j-r1"); err != nil || !pr.tags["hs"].complete() {
		t.Errorf("join message under the query's agreement: %v, list complete %v", err, pr.tags["hs"].complete())
	}
}
