// Package aggregate runs the aggregate rounds of a node (AGGREGATES.md):
// secure aggregation (crypto/secagg) with distributed discrete Gaussian
// noise (policy/privacy) among the university nodes a center's query names.
// At the center it takes signed queries, schedules their rounds, relays the
// participants' messages, sums, suppresses and stores the releases; at a
// university it checks a round's query, computes its table, debits its
// privacy ledger and answers each step. Every message is an envelope of
// kind crypto.KindAggregate on the control subjects, signed by its sender
// and sealed to its recipient; share bundles travel inside an inner
// envelope sealed by one university to another, so the center relays them
// without reading them. A joined query (join.go) links a population at
// some participants to an outcome at others through the node's linkage
// pseudonyms (Deps.Pseudonyms): a population participant sends each
// outcome participant, sealed to it, per-round join tags of its persons and
// their population cells, and the tables go through the same round.
//
// It owns the tables aggregate_queries, aggregate_releases and
// privacy_ledger (whose accounts node/release's differentially private
// releases also draw on, through BudgetLeft and SpendBudget, wired by
// node/node.go), and reads no other: the records it counts come through
// Deps.ScanRecords, the agreements through Deps.ActiveAgreements, and its
// messages leave through Deps.Enqueue. It must never let a university's
// exact table, masked vector or unsuppressed noisy value leave the node or
// be stored, never release a round with fewer noise shares than its plan
// (n − t), never debit a ledger account past its budget, and never refund a
// debit once this node has answered the round's survivor list. It must
// never send, store or log a pseudonym or an identifier: only join tags
// (hashes of a pseudonym bound to one round) leave it, to the round's
// outcome participants, and they are dropped when the table is built.
package aggregate

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/secagg"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// Deps are what an Aggregator works with.
type Deps struct {
	NodeID string
	// Cred is this node's credential: its role decides whether the node
	// runs queries (a center) or takes part in rounds (a university).
	Cred     *crypto.Credential
	Std      *schema.Standard
	DB       *store.DB
	Evidence *evidence.Log
	Keys     *keys.Keys
	Registry *registry.Registry
	// Codec checks and opens the share bundles relayed to this node.
	Codec   *envelope.Codec
	Metrics *metrics.Metrics
	Log     *slog.Logger
	Now     func() time.Time
	Layout  bus.Layout
	// Enqueue seals plaintext to `to` under header h and writes it to the
	// outbox inside tx.
	Enqueue func(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error)
	// WakeRelay tells the relay that the outbox has new rows.
	WakeRelay func()
	// ActiveAgreements lists the active agreements this node holds.
	ActiveAgreements func(ctx context.Context) ([]policy.Agreement, error)
	// ScanRecords calls fn with the subject and body of every record of the
	// type this node holds, in the order they were ingested.
	ScanRecords func(ctx context.Context, recordType string, fn func(subject string, body []byte) error) error
	// MinColluders is the fewest colluders a query must tolerate for this
	// node to submit it or take part (config aggregate.colluders).
	MinColluders int
	// Pseudonyms returns this node's linkage pseudonyms for a purpose and
	// epoch, keyed by subject key (node/linkage): the persons a joined
	// query links. Nil: this node declines joined queries (no_linkage).
	Pseudonyms func(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, error)
}

// Aggregator is a node's side of aggregate rounds, as center or as
// university. Its round state lives in memory: a node restarted mid-round
// drops out of it (AGGREGATES.md §3).
type Aggregator struct {
	nodeID           string
	cred             *crypto.Credential
	std              *schema.Standard
	db               *store.DB
	ev               *evidence.Log
	keys             *keys.Keys
	reg              *registry.Registry
	codec            *envelope.Codec
	m                *metrics.Metrics
	log              *slog.Logger
	now              func() time.Time
	layout           bus.Layout
	enqueue          func(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error)
	wakeRelay        func()
	activeAgreements func(ctx context.Context) ([]policy.Agreement, error)
	scanRecords      func(ctx context.Context, recordType string, fn func(subject string, body []byte) error) error
	minColluders     int
	pseudonyms       func(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, error)

	mu sync.Mutex
	// knobs are settings of tests only (export_test.go): noNoise sends
	// tables without noise, so that a test can compare the secure sum with
	// the plain sum exactly (budgets are still debited); dropAfter makes
	// this node stop answering a round after the named step ("commit",
	// "shares", "masked" or "signed"), as if it had crashed; it still takes the
	// center's abort. deviate makes a center break the protocol, as a
	// malicious one would: "short_u2" sends each university a list U2 of
	// itself alone, "equivocate_u3" sends each survivor a list U3 without
	// one of the others, then the true U3; "split_u3" tells the first
	// survivor that the last one dropped and the others the true U3, and
	// relays every signature over U3 to every signer; "split_u3_filter"
	// does the same but relays to each signer only the signatures over the
	// list it was given.
	knobs struct {
		noNoise   bool
		dropAfter string
		deviate   string
	}
	parts  map[string]*partRound   // university side, by round id
	rounds map[string]*centerRound // center side, by round id
	// joinBuf holds join messages of rounds this node has no round
	// message for yet (joined queries, join.go).
	joinBuf map[string]*joinBuffered
	// wg waits for the goroutines preparing the join side of rounds
	// (Drain).
	wg sync.WaitGroup
}

// Drain waits for the goroutines that prepare joined rounds; the context
// their rounds were handled under must be cancelled first.
func (a *Aggregator) Drain() { a.wg.Wait() }

// New returns the aggregator of a node; Run drives its schedule.
func New(d Deps) *Aggregator {
	return &Aggregator{nodeID: d.NodeID, cred: d.Cred, std: d.Std, db: d.DB, ev: d.Evidence, keys: d.Keys, reg: d.Registry,
		codec: d.Codec, m: d.Metrics, log: d.Log, now: d.Now, layout: d.Layout, enqueue: d.Enqueue, wakeRelay: d.WakeRelay,
		activeAgreements: d.ActiveAgreements, scanRecords: d.ScanRecords, minColluders: d.MinColluders,
		pseudonyms: d.Pseudonyms, parts: map[string]*partRound{}, rounds: map[string]*centerRound{}, joinBuf: map[string]*joinBuffered{}}
}

// evidenceKindAggregate is the evidence entry kind of aggregate events.
const evidenceKindAggregate = "aggregate"

// Reasons a university does not take part in a round, or a query is
// refused: evidence reasons and metric label values.
const (
	RefuseBadQuery       = "bad_query"         // malformed or invalid query
	RefuseSignature      = "bad_signature"     // unsigned, forged, or not from a center
	RefuseNotParticipant = "not_participant"   // this node is not in the query's participants
	RefuseExpired        = "expired"           // past the query's deadline or the round's time
	RefuseMember         = "unknown_member"    // a participant is not an admitted university
	RefuseNoAgreement    = "no_agreement"      // no active agreement with the center covering the query (or, joined, with an outcome participant: join.go)
	RefuseBudget         = "budget_exceeded"   // the release's worst-case ρ would overspend the ledger
	RefuseInternal       = "internal_error"    // this node failed (computing its table, sealing)
	RefuseTooFew         = "too_few_survivors" // a round failed: fewer than the minimum were left
	RefuseColluders      = "too_few_colluders" // the query tolerates fewer colluders than this node requires
	// RefuseDimension: the query groups by a dimension this node's
	// standard does not declare for its record type.
	RefuseDimension = "undeclared_dimension"
)

// Evidence reasons of a university that refuses a list the center sent
// (it leaves the round; AGGREGATES.md §4).
const (
	// ListShort: a list U2 or U3 with fewer than t members.
	ListShort = "short_list"
	// ListConflict: a second list U3 that differs from the one answered,
	// so that answering it would reveal, for some peer, the other kind of
	// share (self-mask seed or key-agreement key).
	ListConflict = "conflicting_survivors"
	// ListInconsistent: the signatures the center relays over the survivor
	// list do not show that at least t members of U3 saw the list this
	// node saw (Bonawitz et al. 2017 §6, the consistency round): the node
	// reveals no share.
	ListInconsistent = "inconsistent_survivors"
)

// errListRefused is returned once a refused list is in the evidence log.
var errListRefused = errors.New("list from the center refused")

// RefuseReasons are the closed label set of the refused metric: every
// reason but RefuseTooFew, which fails a round rather than refuses it.
var RefuseReasons = []string{RefuseBadQuery, RefuseSignature, RefuseNotParticipant, RefuseExpired,
	RefuseMember, RefuseNoAgreement, RefuseBudget, RefuseInternal, RefuseColluders, RefuseDimension, RefusePopulation, RefuseNoLinkage}

// Message types of a round, in order.
const (
	aggMsgRound       = "round"       // center → university: the signed query and the round id
	aggMsgCommit      = "commit"      // university → center: its signed commitment
	aggMsgDecline     = "decline"     // university → center: it does not take part, with a reason
	aggMsgCommitments = "commitments" // center → university: every commitment (U1)
	aggMsgShares      = "shares"      // university → center: share bundles, each sealed to its recipient
	aggMsgBundles     = "bundles"     // center → university: the bundles addressed to it, and U2
	aggMsgMasked      = "masked"      // university → center: its masked, noised table
	aggMsgSurvivors   = "survivors"   // center → university: U3
	aggMsgConsistency = "consistency" // university → center: its signature over the U3 it was given
	aggMsgSignatures  = "signatures"  // center → signers of U3: the signatures it collected
	aggMsgUnmask      = "unmask"      // university → center: its unmask response
	aggMsgAbort       = "abort"       // center → university: the round failed; forget it
)

// aggMsg is the plaintext of an aggregate envelope.
type aggMsg struct {
	Type    string       `json:"type"`
	Round   string       `json:"round"`
	Query   *SignedQuery `json:"query,omitempty"`
	Data    []byte       `json:"data,omitempty"` // a secagg message
	KeyID   string       `json:"key_id,omitempty"`
	Sig     []byte       `json:"sig,omitempty"`
	Commits []aggCommit  `json:"commits,omitempty"`
	Sigs    []aggSig     `json:"sigs,omitempty"`    // signatures over U3
	Bundles [][]byte     `json:"bundles,omitempty"` // inner envelopes
	Members []string     `json:"members,omitempty"`
	Reason  string       `json:"reason,omitempty"`
	// Chunk and Chunks number a join message's part of its list.
	Chunk  int `json:"chunk,omitempty"`
	Chunks int `json:"chunks,omitempty"`
}

// aggCommit is a commitment signed by the participant that made it, so
// that the center cannot substitute key-agreement keys.
type aggCommit struct {
	From  string `json:"from"`
	KeyID string `json:"key_id"`
	Data  []byte `json:"data"`
	Sig   []byte `json:"sig"`
}

// aggSig is a university's signature over the survivor list U3 it was
// given: Ed25519 by its node signing key over aggSurvivorsLabel ‖ str8(round
// id) ‖ the secagg digest of U3 (which binds the round's parameters too).
type aggSig struct {
	From  string `json:"from"`
	KeyID string `json:"key_id"`
	Sig   []byte `json:"sig"`
}

// survivorsSigned is what a university signs over the list U3 of round.
func survivorsSigned(round string, digest [32]byte) []byte {
	b := append([]byte(aggSurvivorsLabel), byte(len(round)))
	b = append(b, round...)
	return append(b, digest[:]...)
}

// verifySurvivorsSig reports whether s is a valid signature of s.From over
// the list of digest in round, under a signing key its credential lists.
func (a *Aggregator) verifySurvivorsSig(ctx context.Context, round string, digest [32]byte, s aggSig) bool {
	cred, err := a.reg.Lookup(ctx, s.From)
	if err != nil {
		return false
	}
	vk, ok := cred.SigningKey(s.KeyID)
	return ok && vk.Verify(survivorsSigned(round, digest), s.Sig)
}

// partRound is a university's side of one round.
type partRound struct {
	id, center, digest, agreement string
	// population is the ledger account's population (the record type's
	// subject key); window is the window debited, set with the debit.
	population, window string
	q                  *Query
	plan               aggPlan
	r                  *secagg.Round
	p                  *secagg.Participant
	x                  []int64  // the exact table until masked, then nil
	step               string   // committed, shared, masked, signed, unmasked
	u2, u3             []string // the lists U2 masked with and U3 signed (then answered), sorted
	dropped            bool
	expires            time.Time
	// Of a joined query at an outcome participant: the lists received
	// from the population participants, this node's outcome records by
	// join tag, and the bundles message held until every list is in.
	tags    map[string]*joinTags
	outcome outcomeRecords
	pending *aggMsg
	// Of a joined query at a population participant: the agreement with
	// each outcome participant its list is sent under.
	joinAgreements map[string]string
}

// ---------------------------------------------------------------------------
// Sending

// sendAgg queues one aggregate message to each recipient in one transaction,
// with extra (evidence, ledger) in the same transaction.
func (a *Aggregator) sendAgg(ctx context.Context, q *Query, msgs map[string]aggMsg, extra func(*sql.Tx) error) error {
	type out struct {
		to   string
		key  *crypto.KEMPublicKey
		body []byte
	}
	var outs []out
	for _, to := range slices.Sorted(maps.Keys(msgs)) {
		cred, err := a.reg.Lookup(ctx, to)
		if err != nil {
			return fmt.Errorf("aggregate message to %s: %w", to, err)
		}
		key := cred.CurrentKEMKey()
		if key == nil {
			return fmt.Errorf("aggregate message to %s: no KEM key", to)
		}
		body, err := json.Marshal(msgs[to])
		if err != nil {
			return err
		}
		outs = append(outs, out{to, key, body})
	}
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		for _, o := range outs {
			if _, err := a.enqueue(ctx, tx, crypto.Header{Recipient: o.to, Purpose: string(q.Purpose), RecordType: q.RecordType,
				Count: 1, Kind: crypto.KindAggregate}, o.key, a.layout.ControlSubject(o.to, a.nodeID), o.body, 0); err != nil {
				return fmt.Errorf("aggregate message: %w", err)
			}
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err == nil {
		a.wakeRelay()
	}
	return err
}

// aggEntry is an evidence entry of an aggregate event. Envelope holds the
// round id, Rule "query:" and the query digest; Detail holds ρ in nano-ρ
// and, for survivor lists, one "survivor:<node>" key per survivor.
func aggEntry(round, digest, reason string) evidence.Entry {
	return evidence.Entry{Kind: evidenceKindAggregate, Envelope: round, Rule: "query:" + digest, Reason: reason}
}

func nanoRho(rho float64) int { return int(rho*1e9 + 0.999999) }

func survivorDetail(d map[string]int, survivors []string) map[string]int {
	if d == nil {
		d = map[string]int{}
	}
	d["survivors"] = len(survivors)
	for _, s := range survivors {
		d["survivor:"+s] = 1
	}
	return d
}

// ---------------------------------------------------------------------------
// Dispatch

// Handle handles the plaintext of an aggregate envelope from the control
// subject, its header checked and opened. A permanent refusal is an
// envelope.Refusal; other errors are transient.
func (a *Aggregator) Handle(ctx context.Context, h crypto.Header, plain []byte) error {
	var m aggMsg
	if err := json.Unmarshal(plain, &m); err != nil || m.Round == "" || len(m.Round) > 128 {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an aggregate message"))
	}
	switch m.Type {
	case aggMsgRound:
		return a.partRoundStart(ctx, h, m)
	case aggMsgCommitments, aggMsgBundles, aggMsgSurvivors, aggMsgSignatures, aggMsgAbort:
		return a.partStep(ctx, h, m)
	case aggMsgJoin:
		if a.cred.Role == crypto.RoleCenter {
			return envelope.Refuse(envelope.RefuseContent, errors.New("aggregate join message to a center"))
		}
		return a.partJoin(ctx, h, m)
	case aggMsgCommit, aggMsgDecline, aggMsgShares, aggMsgMasked, aggMsgConsistency, aggMsgUnmask:
		if a.cred.Role != crypto.RoleCenter {
			return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("aggregate %s message to a node that is not a center", m.Type))
		}
		a.centerMessage(ctx, h.Sender, m)
		return nil
	}
	return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("unknown aggregate message type %q", m.Type))
}

// ---------------------------------------------------------------------------
// University side

// partRoundStart checks a round's query and, if this node takes part,
// computes its table and commits.
func (a *Aggregator) partRoundStart(ctx context.Context, h crypto.Header, m aggMsg) error {
	if m.Query == nil {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("aggregate round without a query"))
	}
	q, err := a.verifyQuery(ctx, m.Query)
	var qe *queryError
	if errors.As(err, &qe) {
		reason := RefuseBadQuery
		var de *DimensionError
		if qe.signature {
			reason = RefuseSignature
		} else if errors.As(err, &de) {
			reason = de.Reason()
		}
		a.m.Aggregate.Refused.WithLabelValues(reason).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("%s: %w", reason, err))
	}
	if err != nil {
		return err // transient: the registry could not be read
	}
	if h.Sender != q.Center {
		a.m.Aggregate.Refused.WithLabelValues(RefuseSignature).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("aggregate query of center %q relayed by %q", q.Center, h.Sender))
	}
	if !strings.HasPrefix(m.Round, q.ID+"-r") {
		a.m.Aggregate.Refused.WithLabelValues(RefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("round id does not belong to the query"))
	}
	digest := m.Query.Digest()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parts[m.Round] != nil {
		return nil // a redelivery: answered already
	}
	now := a.now()
	decline := func(reason string, cause error) error {
		a.log.Info("aggregate round declined", "round", m.Round, "reason", reason, "err", cause)
		e := aggEntry(m.Round, digest, reason)
		e.Peer, e.Purpose = q.Center, string(q.Purpose)
		if err := a.sendAgg(ctx, q, map[string]aggMsg{q.Center: {Type: aggMsgDecline, Round: m.Round, Reason: reason}},
			func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
			return err
		}
		a.m.Aggregate.Refused.WithLabelValues(reason).Inc()
		a.m.Aggregate.Participation.WithLabelValues("declined").Inc()
		// Remembered, so that a redelivered round message is not declined twice.
		a.parts[m.Round] = &partRound{id: m.Round, center: q.Center, dropped: true,
			expires: now.Add(q.lifetime())}
		return nil
	}
	if !slices.Contains(q.Participants, a.nodeID) {
		return decline(RefuseNotParticipant, nil)
	}
	if !now.Before(q.Deadline) || !now.Before(h.Created.Add(time.Duration(q.RoundTimeout))) {
		return decline(RefuseExpired, nil)
	}
	for _, p := range q.Participants {
		cred, err := a.reg.Lookup(ctx, p)
		if err != nil || cred.Role != crypto.RoleUniversity {
			return decline(RefuseMember, fmt.Errorf("participant %s", p))
		}
	}
	side := q.side(a.nodeID)
	recordType, fields := q.RecordType, q.fields(a.std)
	if side == "population" {
		fields = q.joinPopulationFields(a.std)
	}
	if side == "outcome" {
		recordType, fields = q.Join.Outcome.RecordType, q.joinOutcomeFields(a.std)
	}
	agreement, err := a.aggAgreement(ctx, q, recordType, fields, now)
	if err != nil {
		return err
	}
	if agreement == "" {
		return decline(RefuseNoAgreement, nil)
	}
	// A population participant discloses its persons' tags and cells to
	// each outcome participant: only under an agreement with each
	// (AGGREGATES.md §7), checked before it links or sends anything.
	var joinAgreements map[string]string
	if side == "population" {
		joinAgreements = map[string]string{}
		for _, o := range q.Join.Outcome.Participants {
			id, err := a.joinAgreement(ctx, q, a.nodeID, o, now)
			if err != nil {
				return err
			}
			if id == "" {
				return decline(RefuseNoAgreement, fmt.Errorf("no active agreement with outcome participant %s as recipient, purpose %s, covering %s%s",
					o, q.Purpose, q.RecordType, fieldsHint(fields)))
			}
			joinAgreements[o] = id
		}
	}
	if q.Colluders < a.minColluders {
		return decline(RefuseColluders, fmt.Errorf("the query tolerates %d colluders, this node requires %d", q.Colluders, a.minColluders))
	}
	plan, err := planQuery(q)
	if err != nil {
		return decline(RefuseBadQuery, err)
	}
	population, err := a.PopulationOf(recordType)
	if err != nil {
		return decline(RefuseBadQuery, err)
	}
	if q.Join != nil {
		if err := joinEpochAllowed(q.Join.Epoch, now); err != nil {
			return decline(RefuseBadQuery, err)
		}
	}
	if ok, err := a.budgetAllows(ctx, q.Center, population, budgetWindow(now), plan.rho); err != nil {
		return err
	} else if !ok {
		return decline(RefuseBudget, nil)
	}
	if side == "" {
		x, err := a.aggregateTable(ctx, q)
		if err != nil {
			return decline(RefuseInternal, err)
		}
		return a.commitRound(ctx, m.Round, q, digest, agreement, population, plan, x, nil, nil, decline)
	}
	// A joined query: the linkage asks the evaluator, whose answers arrive
	// on the control consumer this message is handled on, so the join side
	// is prepared off it; the round waits meanwhile (step "linking").
	qd := joinRoundKey(m.Query, m.Round)
	ph := &partRound{id: m.Round, center: q.Center, digest: digest, q: q, step: "linking", expires: now.Add(q.lifetime()),
		joinAgreements: joinAgreements}
	if side == "outcome" {
		if err := a.adoptBuffered(ctx, ph); err != nil {
			return err
		}
	}
	a.parts[m.Round] = ph
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		var x []int64
		var list []byte
		var outcome outcomeRecords
		var linked int64
		var err error
		if side == "population" {
			x, list, linked, err = a.populationSide(ctx, q, qd)
		} else {
			outcome, err = a.outcomeSide(ctx, q, qd)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.parts[m.Round] != ph {
			return // aborted or expired meanwhile
		}
		var derr error
		var le *linkageError
		switch {
		case errors.As(err, &le):
			derr = decline(RefuseNoLinkage, err)
		case err != nil:
			derr = decline(RefuseInternal, err)
		case side == "population" && linked < q.minPopulation(a.std):
			derr = decline(RefusePopulation, fmt.Errorf("%d linked persons in the population, the query's minimum is %d", linked, q.minPopulation(a.std)))
		default:
			derr = a.commitRound(ctx, m.Round, q, digest, agreement, population, plan, x, list, outcome, decline)
		}
		if derr != nil {
			a.log.Warn("aggregate round: dropping out", "round", m.Round, "step", "commit", "err", derr)
			if pr := a.parts[m.Round]; pr != nil {
				pr.x, pr.dropped = nil, true
			}
		}
	}()
	return nil
}

// commitRound sets up this node's secure-aggregation participant for a
// round whose table (and, for a joined query, list or outcome records) it
// computed, commits, and for a population participant sends its list to
// the outcome participants; agg.mu is held.
func (a *Aggregator) commitRound(ctx context.Context, round string, q *Query, digest, agreement, population string, plan aggPlan,
	x []int64, joinList []byte, outcome outcomeRecords, decline func(string, error) error) error {
	side := q.side(a.nodeID)
	now := a.now()
	r, err := secagg.NewRound(secagg.Params{RoundID: round, Participants: q.Participants, Threshold: q.shamirDegree(),
		VectorLen: q.vectorLen(), MinSurvivors: q.minSurvivors()})
	if err != nil {
		return decline(RefuseBadQuery, err)
	}
	p, err := r.NewParticipant(a.nodeID, nil)
	if err != nil {
		return decline(RefuseInternal, err)
	}
	data, err := p.Commit().MarshalBinary()
	if err != nil {
		return decline(RefuseInternal, err)
	}
	pr := a.parts[round]
	if pr == nil {
		pr = &partRound{id: round, expires: now.Add(q.lifetime())}
	}
	pr.center, pr.digest, pr.agreement, pr.population, pr.q, pr.plan, pr.r, pr.p, pr.x = q.Center, digest, agreement, population, q, plan, r, p, x
	pr.step, pr.outcome = "committed", outcome
	msgs := map[string]aggMsg{q.Center: {Type: aggMsgCommit, Round: round, Data: data,
		KeyID: a.keys.Signing.Public().KeyID(), Sig: a.keys.Signing.Sign(append([]byte(aggCommitLabel), data...))}}
	e := aggEntry(round, digest, "joined")
	e.Peer, e.Agreement, e.Purpose = q.Center, agreement, string(q.Purpose)
	e.Detail = map[string]int{"participants": len(q.Participants), "cells": plan.cells}
	if side == "population" {
		e.Detail["join_entries"] = len(joinList) / joinEntrySize
	}
	if err := a.sendAgg(ctx, q, msgs, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
		return err
	}
	if side == "population" {
		// The list goes to each outcome participant, sealed to it, in
		// chunks; after the commitment, so that a list never precedes a
		// decline.
		// The first chunk goes with one evidence entry per outcome
		// participant naming the agreement the list is sent under.
		for i, jm := range joinMessages(round, joinList) {
			out := map[string]aggMsg{}
			for _, o := range q.Join.Outcome.Participants {
				out[o] = jm
			}
			var extra func(*sql.Tx) error
			if i == 0 {
				extra = func(tx *sql.Tx) error {
					for _, o := range q.Join.Outcome.Participants {
						e := aggEntry(round, digest, "join_sent")
						e.Peer, e.Agreement, e.Purpose = o, pr.joinAgreements[o], string(q.Purpose)
						e.Detail = map[string]int{"join_entries": len(joinList) / joinEntrySize}
						if err := a.ev.Append(ctx, tx, e); err != nil {
							return err
						}
					}
					return nil
				}
			}
			if err := a.sendAgg(ctx, q, out, extra); err != nil {
				return err
			}
		}
	}
	a.parts[round] = pr
	pr.dropped = a.knobs.dropAfter == "commit"
	a.m.Aggregate.Participation.WithLabelValues("joined").Inc()
	return nil
}

// aggAgreement returns the id of an active agreement under which this node
// gives the center the query's fields for the query's purpose, "" if none.
func (a *Aggregator) aggAgreement(ctx context.Context, q *Query, recordType string, fields []string, now time.Time) (string, error) {
	return a.agreementFor(ctx, a.nodeID, q.Center, q.Purpose, recordType, fields, now)
}

// agreementFor returns the id of an active agreement, valid at now, under
// which provider gives recipient fields of recordType for purpose: it
// names the record type and every one of the fields. "" if none.
func (a *Aggregator) agreementFor(ctx context.Context, provider, recipient string, purpose policy.Purpose, recordType string, fields []string, now time.Time) (string, error) {
	list, err := a.activeAgreements(ctx)
	if err != nil {
		return "", err
	}
	for _, ag := range list {
		if ag.Revoked || ag.Provider != provider || ag.Recipient != recipient || ag.Purpose != purpose || !ag.ValidAt(now) {
			continue
		}
		if _, ok := ag.RecordTypes[recordType]; !ok {
			continue
		}
		covered := true
		for _, f := range fields {
			covered = covered && ag.Allows(recordType, f)
		}
		if covered {
			return ag.ID, nil
		}
	}
	return "", nil
}

// partStep handles the center's messages after the round started.
func (a *Aggregator) partStep(ctx context.Context, h crypto.Header, m aggMsg) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	pr := a.parts[m.Round]
	if pr == nil || h.Sender != pr.center {
		return nil // unknown round (this node restarted, or declined): it is out of it
	}
	if m.Type == aggMsgAbort {
		return a.partAbort(ctx, pr, m.Reason)
	}
	if pr.dropped {
		return nil
	}
	var err error
	switch m.Type {
	case aggMsgCommitments:
		if pr.step != "committed" {
			return nil
		}
		err = a.partShares(ctx, pr, m)
	case aggMsgBundles:
		if pr.step != "shared" || pr.pending != nil {
			return nil
		}
		switch {
		case pr.q.side(a.nodeID) != "outcome":
			err = a.partMask(ctx, pr, m)
		case a.joinReady(pr, m.Members):
			err = a.outcomeMask(ctx, pr, m)
		default:
			// A population participant's list is still on its way: mask
			// once it is in (partJoin), or drop out at the round's time.
			pr.pending = &m
		}
	case aggMsgSurvivors:
		switch pr.step {
		case "masked":
			err = a.partSign(ctx, pr, m)
		case "signed", "unmasked":
			err = a.partSurvivorsAgain(ctx, pr, m)
		}
	case aggMsgSignatures:
		if pr.step != "signed" {
			return nil
		}
		err = a.partUnmask(ctx, pr, m)
	}
	if err != nil {
		// This node leaves the round; the center goes on without it.
		a.log.Warn("aggregate round: dropping out", "round", m.Round, "step", m.Type, "err", err)
		pr.x, pr.dropped = nil, true
	}
	return nil
}

// partAbort forgets a round the center failed. When this node sent its
// masked table (its ledger debited) and has not answered a survivor list
// (signing one reveals nothing), it
// gives the debit back, in one transaction with a refunded evidence entry:
// the center says it released nothing, and no answer of this node helped
// unmask anything. Once it has answered a survivor list it keeps the debit:
// t answers let the center unmask, and this node cannot tell whether they
// reached it (AGGREGATES.md §2). A database error leaves the round in place
// and is returned, so that the abort is redelivered.
func (a *Aggregator) partAbort(ctx context.Context, pr *partRound, reason string) error {
	clear(pr.x)
	pr.x = nil
	if pr.step == "masked" || pr.step == "signed" {
		refunded, err := a.refund(ctx, pr)
		if err != nil {
			return fmt.Errorf("aggregate round %s: refund: %w", pr.id, err)
		}
		if refunded {
			a.m.Aggregate.Participation.WithLabelValues("refunded").Inc()
		}
	}
	delete(a.parts, pr.id)
	a.log.Info("aggregate round aborted by the center", "round", pr.id, "reason", reason, "step", pr.step)
	return nil
}

// refund gives back the debit of pr's masked table and appends the
// refunded entry, in one transaction. It reports false, changing nothing,
// when the ledger holds no such debit: the node keeps what it cannot
// account for rather than grant it anew.
func (a *Aggregator) refund(ctx context.Context, pr *partRound) (bool, error) {
	e := aggEntry(pr.id, pr.digest, "refunded")
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Detail = map[string]int{"rho_nano": nanoRho(pr.plan.rho)}
	refunded := false
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		l, err := a.loadLedger(ctx, tx)
		if err != nil {
			return err
		}
		if err := l.Refund(pr.center, pr.population, pr.window, pr.plan.rho); err != nil {
			a.log.Warn("aggregate round: debit not refunded", "round", pr.id, "err", err)
			return nil
		}
		if err := a.storeLedger(ctx, tx, l); err != nil {
			return err
		}
		refunded = true
		return a.ev.Append(ctx, tx, e)
	})
	return refunded && err == nil, err
}

func (a *Aggregator) partShares(ctx context.Context, pr *partRound, m aggMsg) error {
	commits := make([]secagg.Commitment, 0, len(m.Commits))
	for _, c := range m.Commits {
		cred, err := a.reg.Lookup(ctx, c.From)
		if err != nil {
			return fmt.Errorf("commitment of %s: %w", c.From, err)
		}
		vk, ok := cred.SigningKey(c.KeyID)
		if !ok || !vk.Verify(append([]byte(aggCommitLabel), c.Data...), c.Sig) {
			return fmt.Errorf("commitment of %s: signature does not verify", c.From)
		}
		sc, err := pr.r.ParseCommitment(c.Data)
		if err != nil || sc.From != c.From {
			return fmt.Errorf("commitment of %s: malformed", c.From)
		}
		commits = append(commits, sc)
	}
	bundles, err := pr.p.Shares(commits)
	if err != nil {
		return err
	}
	var inner [][]byte
	now := a.now()
	for _, b := range bundles {
		if b.To == a.nodeID {
			continue
		}
		cred, err := a.reg.Lookup(ctx, b.To)
		if err != nil {
			return err
		}
		to := cred.CurrentKEMKey()
		if to == nil {
			return fmt.Errorf("share bundle to %s: no KEM key", b.To)
		}
		plain, err := b.MarshalBinary()
		if err != nil {
			return err
		}
		h := crypto.Header{Suite: to.Suite(), Sender: a.nodeID, SenderKeyID: a.keys.Signing.Public().KeyID(),
			Recipient: b.To, RecipientKeyID: to.KeyID(), Created: now, Expires: pr.expires,
			Purpose: string(pr.q.Purpose), RecordType: pr.q.RecordType, Count: 1, Kind: crypto.KindAggregate}
		if _, err := rand.Read(h.ID[:]); err != nil {
			return err
		}
		env, err := crypto.Seal(rand.Reader, h, to, a.keys.Signing, plain)
		if err != nil {
			return fmt.Errorf("seal share bundle: %w", err)
		}
		inner = append(inner, env)
	}
	if err := a.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgShares, Round: pr.id, Bundles: inner}}, nil); err != nil {
		return err
	}
	pr.step = "shared"
	pr.dropped = a.knobs.dropAfter == "shares"
	return nil
}

// partMask opens the bundles relayed to this node, debits the ledger, adds
// the noise share and sends the masked table, the debit and the evidence in
// one transaction.
func (a *Aggregator) partMask(ctx context.Context, pr *partRound, m aggMsg) error {
	var received []secagg.ShareBundle
	from := map[string]bool{}
	for _, data := range m.Bundles {
		env, _, err := a.codec.Check(ctx, data, crypto.KindAggregate)
		if err != nil {
			return fmt.Errorf("share bundle: %w", err)
		}
		plain, err := a.codec.Open(env)
		if err != nil {
			return fmt.Errorf("share bundle: %w", err)
		}
		b, err := pr.r.ParseShareBundle(plain)
		if err != nil || b.From != env.Header.Sender || b.To != a.nodeID {
			return fmt.Errorf("share bundle from %s: malformed", env.Header.Sender)
		}
		from[b.From] = true
		received = append(received, b)
	}
	for _, u := range m.Members {
		if u != a.nodeID && !from[u] {
			return fmt.Errorf("no share bundle from %s, which the center says shared", u)
		}
	}
	if len(from) != len(m.Members)-1 || !slices.Contains(m.Members, a.nodeID) {
		return errors.New("share bundles do not match the members the center lists")
	}
	if t := pr.q.minSurvivors(); len(m.Members) < t {
		// No release could follow, and this table would be masked against
		// fewer peers than the threshold: refuse before anything is spent.
		return a.refuseList(ctx, pr, ListShort, m.Members, nil,
			map[string]int{"list": 2, "members": len(m.Members), "threshold": t})
	}
	x := pr.x
	if !a.knobs.noNoise {
		z, err := pr.plan.noise(privacy.NewSampler(rand.Reader), len(x))
		if err != nil {
			return err
		}
		if err := privacy.AddNoise(x, z); err != nil {
			return err
		}
	}
	masked, err := pr.p.Mask(x, received)
	clear(x)
	pr.x = nil
	if err != nil {
		return err
	}
	data, err := masked.MarshalBinary()
	if err != nil {
		return err
	}
	e := aggEntry(pr.id, pr.digest, "contributed")
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Detail = map[string]int{"rho_nano": nanoRho(pr.plan.rho), "shared": len(m.Members)}
	e.Digest = hex.EncodeToString(masked.Shared[:]) // of U2
	window := budgetWindow(a.now())
	err = a.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgMasked, Round: pr.id, Data: data}}, func(tx *sql.Tx) error {
		if err := a.spendTx(ctx, tx, pr.center, pr.population, window, pr.plan.rho); err != nil {
			return err
		}
		return a.ev.Append(ctx, tx, e)
	})
	if errors.Is(err, privacy.ErrBudgetExceeded) || errors.Is(err, privacy.ErrNoBudget) {
		// Another round spent the budget meanwhile: decline now.
		a.m.Aggregate.Refused.WithLabelValues(RefuseBudget).Inc()
		a.m.Aggregate.Participation.WithLabelValues("declined").Inc()
		e := aggEntry(pr.id, pr.digest, RefuseBudget)
		e.Peer, e.Purpose = pr.center, string(pr.q.Purpose)
		if err := a.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgDecline, Round: pr.id, Reason: RefuseBudget}},
			func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
			return err
		}
		pr.dropped = true
		return nil
	}
	if err != nil {
		return err
	}
	pr.step, pr.u2, pr.window = "masked", slices.Sorted(slices.Values(m.Members)), window
	pr.dropped = a.knobs.dropAfter == "masked"
	a.m.Aggregate.Participation.WithLabelValues("contributed").Inc()
	a.m.Aggregate.Rho.Add(pr.plan.rho)
	return nil
}

// partSign handles the survivor list U3: it checks the list (at least t
// members, this node among them, every member in U2) and signs it for the
// consistency round; nothing is revealed yet.
func (a *Aggregator) partSign(ctx context.Context, pr *partRound, m aggMsg) error {
	if t := pr.q.minSurvivors(); len(m.Members) < t {
		return a.refuseList(ctx, pr, ListShort, m.Members, nil,
			map[string]int{"list": 3, "members": len(m.Members), "threshold": t})
	}
	for _, v := range m.Members {
		if !slices.Contains(pr.u2, v) {
			return fmt.Errorf("survivor list names %s, which is not in U2", v)
		}
	}
	if !slices.Contains(m.Members, a.nodeID) {
		return errors.New("survivor list omits this node")
	}
	d, err := pr.r.SurvivorsDigest(m.Members)
	if err != nil {
		return err
	}
	if err := a.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgConsistency, Round: pr.id,
		KeyID: a.keys.Signing.Public().KeyID(), Sig: a.keys.Signing.Sign(survivorsSigned(pr.id, d))}}, nil); err != nil {
		return err
	}
	pr.step, pr.u3 = "signed", slices.Sorted(slices.Values(m.Members))
	pr.dropped = a.knobs.dropAfter == "signed"
	return nil
}

// partUnmask handles the signatures the center relays over U3 and, if at
// least t of them, from distinct members of U3, verify over the list this
// node signed, and none fails, answers with its unmask response. Otherwise
// some members were given another list (or the center tampered with
// their signatures): the node refuses (inconsistent_survivors, naming the
// signers whose signatures fail) and reveals nothing.
func (a *Aggregator) partUnmask(ctx context.Context, pr *partRound, m aggMsg) error {
	d, err := pr.r.SurvivorsDigest(pr.u3)
	if err != nil {
		return err
	}
	valid, seen := 0, map[string]bool{}
	var bad []string
	for _, s := range m.Sigs {
		if seen[s.From] || !slices.Contains(pr.u3, s.From) {
			bad = append(bad, s.From)
			continue
		}
		seen[s.From] = true
		if !a.verifySurvivorsSig(ctx, pr.id, d, s) {
			bad = append(bad, s.From)
			continue
		}
		valid++
	}
	if t := pr.q.Threshold; valid < t || len(bad) > 0 {
		detail := map[string]int{"list": 3, "members": len(pr.u3), "threshold": t, "valid": valid, "invalid": len(bad)}
		for _, v := range bad {
			detail["invalid:"+v] = 1
		}
		return a.refuseList(ctx, pr, ListInconsistent, pr.u3, nil, detail)
	}
	resp, err := pr.p.Unmask(pr.u3)
	if err != nil {
		return err
	}
	data, err := resp.MarshalBinary()
	if err != nil {
		return err
	}
	e := aggEntry(pr.id, pr.digest, "unmasked")
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Count = len(pr.u3)
	e.Detail = survivorDetail(map[string]int{"rho_nano": nanoRho(pr.plan.rho), "signatures": valid}, pr.u3)
	e.Digest = hex.EncodeToString(resp.Survivors[:]) // of U3
	if err := a.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgUnmask, Round: pr.id, Data: data}},
		func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
		return err
	}
	pr.step = "unmasked"
	return nil
}

// partSurvivorsAgain handles a survivor list after this node signed one.
// The same list again (a redelivery) is ignored. Another list would ask,
// for some peer, the other kind of share than this node reveals for the
// first (its self-mask seed share if the first list had it dropped, its key
// share if the first had it surviving): with both, the center unmasks that
// peer's table alone. It is refused, with the flipped peers in the
// evidence, and the node leaves the round, revealing nothing more.
func (a *Aggregator) partSurvivorsAgain(ctx context.Context, pr *partRound, m aggMsg) error {
	again := slices.Sorted(slices.Values(m.Members))
	if slices.Equal(again, pr.u3) {
		return nil
	}
	var flipped []string
	for _, v := range pr.u2 {
		if v != a.nodeID && slices.Contains(pr.u3, v) != slices.Contains(again, v) {
			flipped = append(flipped, v)
		}
	}
	return a.refuseList(ctx, pr, ListConflict, m.Members, flipped,
		map[string]int{"list": 3, "members": len(m.Members), "flipped": len(flipped)})
}

// refuseList records a list from the center that this node refuses to act
// on, with its members, its digest (as the round would bind it) and, for a
// conflicting survivor list, the peers whose kind of share it would flip;
// then this node leaves the round (errListRefused).
func (a *Aggregator) refuseList(ctx context.Context, pr *partRound, reason string, list, flipped []string, detail map[string]int) error {
	e := aggEntry(pr.id, pr.digest, reason)
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Count = len(list)
	for _, v := range list {
		detail["member:"+v] = 1
	}
	for _, v := range flipped {
		detail["flipped:"+v] = 1
	}
	e.Detail = detail
	digest := pr.r.SharedDigest
	if detail["list"] == 3 {
		digest = pr.r.SurvivorsDigest
	}
	if d, err := digest(list); err == nil {
		e.Digest = hex.EncodeToString(d[:])
	}
	if err := a.db.Write(ctx, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
		return err
	}
	a.log.Warn("aggregate round: list from the center refused", "round", pr.id, "reason", reason, "members", len(list), "flipped", len(flipped))
	return fmt.Errorf("%s: %w", reason, errListRefused)
}

// ---------------------------------------------------------------------------
// The privacy ledger, persisted in the privacy_ledger table: one account per
// (recipient, population of persons), spent per calendar year (PRIVACY.md
// §6).

// budgetWindow is the ledger window of an instant: its calendar year in
// UTC.
func budgetWindow(t time.Time) string { return strconv.Itoa(t.UTC().Year()) }

// PopulationOf is the population of persons the records of a type are
// about: the type's subject key ("student_id"), so that every record type
// keyed by the same person identifier draws on one budget account.
func (a *Aggregator) PopulationOf(recordType string) (string, error) {
	rt, ok := a.std.Type(recordType)
	if !ok {
		return "", fmt.Errorf("%q is not a record type", recordType)
	}
	if rt.SubjectKey() == "" {
		return "", fmt.Errorf("%s concerns no person", recordType)
	}
	return rt.SubjectKey(), nil
}

// isPopulation reports whether name is the subject key of a record type.
func (a *Aggregator) isPopulation(name string) bool {
	for _, t := range a.std.Types() {
		if p, err := a.PopulationOf(t); err == nil && p == name {
			return true
		}
	}
	return false
}

// loadLedger reads the ledger. One of version 1 (accounts per recipient
// and record type) is migrated as it is read (privacy.MigrateV1): the
// accounts of record types about the same population merge, their spends
// charged to the window of the ledger's last change; the next change stores
// it in the present version.
func (a *Aggregator) loadLedger(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (*privacy.Ledger, error) {
	var body []byte
	var updated int64
	err := q.QueryRowContext(ctx, `SELECT body, updated_ms FROM privacy_ledger WHERE id = 1`).Scan(&body, &updated)
	l := &privacy.Ledger{}
	if errors.Is(err, sql.ErrNoRows) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read privacy ledger: %w", err)
	}
	err = json.Unmarshal(body, l)
	if errors.Is(err, privacy.ErrLedgerV1) {
		return privacy.MigrateV1(body, a.PopulationOf, budgetWindow(time.UnixMilli(updated)))
	}
	if err != nil {
		return nil, fmt.Errorf("privacy ledger: %w", err)
	}
	return l, nil
}

func (a *Aggregator) storeLedger(ctx context.Context, tx *sql.Tx, l *privacy.Ledger) error {
	body, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO privacy_ledger(id, body, updated_ms) VALUES (1, ?, ?)
		ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms`, body, a.now().UnixMilli())
	return err
}

// budgetAllows reports whether rho fits in what is left of the account in
// window, which starts at DefaultPrivacyBudget when none was set.
func (a *Aggregator) budgetAllows(ctx context.Context, recipient, population, window string, rho float64) (bool, error) {
	left, err := a.budgetLeftIn(ctx, recipient, population, window)
	return rho <= left, err
}

// budgetLeftIn is the ρ left of recipient's account for population in
// window: DefaultPrivacyBudget when no budget was set.
func (a *Aggregator) budgetLeftIn(ctx context.Context, recipient, population, window string) (float64, error) {
	l, err := a.loadLedger(ctx, a.db.R)
	if err != nil {
		return 0, err
	}
	if !l.HasBudget(recipient, population) {
		return DefaultPrivacyBudget, nil
	}
	return l.Remaining(recipient, population, window), nil
}

// spendTx debits rho in window inside tx, opening the account at
// DefaultPrivacyBudget when it has none.
func (a *Aggregator) spendTx(ctx context.Context, tx *sql.Tx, recipient, population, window string, rho float64) error {
	l, err := a.loadLedger(ctx, tx)
	if err != nil {
		return err
	}
	if !l.HasBudget(recipient, population) {
		if err := l.SetBudget(recipient, population, DefaultPrivacyBudget); err != nil {
			return err
		}
	}
	if err := l.Spend(recipient, population, window, rho); err != nil {
		return err
	}
	return a.storeLedger(ctx, tx, l)
}

// BudgetLeft is the ρ left of recipient's account for population in the
// current calendar year: DefaultPrivacyBudget when no budget was set.
// With SpendBudget it is the ledger node/release charges its
// differentially private releases to (wired by node/node.go), so that a
// recipient's releases and aggregate rounds draw on one budget.
func (a *Aggregator) BudgetLeft(ctx context.Context, recipient, population string) (float64, error) {
	return a.budgetLeftIn(ctx, recipient, population, budgetWindow(a.now()))
}

// SpendBudget debits rho from recipient's account for population in the
// current calendar year inside tx, the caller's transaction that records
// what the spend pays for; it fails, debiting nothing, with an error
// wrapping privacy.ErrBudgetExceeded when rho does not fit.
func (a *Aggregator) SpendBudget(ctx context.Context, tx *sql.Tx, recipient, population string, rho float64) error {
	if !a.isPopulation(population) {
		return fmt.Errorf("privacy budget: population: %q is not the subject key of a record type", population)
	}
	return a.spendTx(ctx, tx, recipient, population, budgetWindow(a.now()), rho)
}

// SetBudget sets the ρ this node grants recipient about a population of
// persons (a subject key of the standard, "student_id") in each calendar
// year; it may not go below what the newest year spent. The change is
// recorded in the evidence log: a budget_set entry whose Peer is the
// recipient and Rule "population:" and the population, so that the entry
// names the account it changed.
func (a *Aggregator) SetBudget(ctx context.Context, recipient, population string, rho float64) error {
	if !a.isPopulation(population) {
		return fmt.Errorf("privacy budget: population: %q is not the subject key of a record type", population)
	}
	return a.db.Write(ctx, func(tx *sql.Tx) error {
		l, err := a.loadLedger(ctx, tx)
		if err != nil {
			return err
		}
		if err := l.SetBudget(recipient, population, rho); err != nil {
			return fmt.Errorf("privacy budget: %w", err)
		}
		if err := a.storeLedger(ctx, tx, l); err != nil {
			return err
		}
		return a.ev.Append(ctx, tx, evidence.Entry{Kind: evidenceKindAggregate, Peer: recipient, Rule: "population:" + population,
			Reason: "budget_set", Detail: map[string]int{"budget_nano_rho": nanoRho(rho)}})
	})
}

// Budgets lists this node's ledger: per account, what each year spent.
func (a *Aggregator) Budgets(ctx context.Context) ([]privacy.Account, error) {
	l, err := a.loadLedger(ctx, a.db.R)
	if err != nil {
		return nil, err
	}
	return l.Accounts(), nil
}

// ---------------------------------------------------------------------------
// Housekeeping

// Run runs the center's schedule and step deadlines, and forgets
// university rounds past their time, until ctx ends.
func (a *Aggregator) Run(ctx context.Context) {
	every := 5 * time.Second
	if a.cred.Role == crypto.RoleCenter {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := a.now()
		a.mu.Lock()
		for id, pr := range a.parts {
			if now.After(pr.expires) {
				clear(pr.x)
				delete(a.parts, id)
			}
		}
		for id, b := range a.joinBuf {
			if now.After(b.expires) {
				delete(a.joinBuf, id)
			}
		}
		a.mu.Unlock()
		if a.cred.Role == crypto.RoleCenter {
			a.centerTick(ctx, now)
		}
	}
}
