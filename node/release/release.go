// Package release owns a node's dataset releases: a de-identified
// (k-anonymous) or differentially private synthetic copy of the records
// the node holds, made for the one recipient and the one purpose of an
// agreement. It decides every source record with policy.Decide
// (share.Sharer.DecideHeld) and refuses the whole release, before any
// data is produced, when a record would break a rule that a release may
// not silently work around (a minor without guardian consent, L4 data for
// model training) or when k cannot be met, and leaves out the records of
// subjects who never gave or withdrew the consent the purpose needs; it writes
// a re-identification risk report and a data card, appends an evidence
// entry with the SHA-256 of the released rows, and sends the rows under
// the agreement as records envelopes (share.Sharer.SendRelease), so the
// recipient stores them as received records: export, retention and
// erasure apply there. RELEASES.md gives the rules.
//
// On an ai_service node it records which releases fed which model version
// (Declare) and sends each release's provider a declaration signed by the
// node's key; the provider verifies it (AcceptDeclaration) and shows the
// uses in the subject report of every student the release included.
//
// A differentially private release is charged its ρ on the person-level
// privacy ledger through Config.Budget (node/aggregate's, wired by
// node/node.go), in the transaction that records it, and refused before
// any data is produced when it does not fit.
//
// It owns the tables releases, release_subjects, releases_received,
// provenance and provenance_releases, and touches the privacy ledger only
// through Config.Budget. It must never make a DP release it has not
// charged to the ledger, never send
// a row before every source record was decided and the release passed
// its checks, never release a direct identifier other than as the
// release's own token of it (crypto.ReleaseTokenKey: one per release and
// person, so that two releases cannot be joined on it; ErasureTokens
// names them for an erasure request), never release a field at the sensitive level, never
// release a row in an equivalence class smaller than k, and never write
// a subject's id in clear (release_subjects holds keyed hashes).
package release

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// Evidence entry kind of a release made or refused.
const evidenceKind = "release"

// The release's own refusal, besides the rulebook's reasons: k cannot be
// met without suppressing more than the allowed fraction.
const (
	RuleKAnonymity   = "release.k_anonymity"
	ReasonKUnmet     = "release_k_unmet"
	clauseKAnonymity = "PIPL art. 51, 73(3); GB/T 42460-2023"
	RuleNothing      = "release.empty"
	ReasonNothing    = "release_empty"
	clauseNothing    = "PIPL art. 6"
	// A differentially private release whose ρ does not fit what is left
	// of the recipient's person-level privacy budget this calendar year
	// (the reason code is the aggregate rounds' for the same ledger).
	RuleBudget   = "release.privacy_budget"
	ReasonBudget = "budget_exceeded"
	clauseBudget = "PIPL art. 51, 73(3); policy/PRIVACY.md §6"
)

// Budget is the person-level privacy budget ledger a differentially
// private release draws on: one account per (recipient, population of
// persons), renewed each calendar year (policy/PRIVACY.md §6). The node
// wires in the aggregate package's ledger (aggregate.Aggregator), so that
// DP releases and aggregate rounds spend one budget; this package never
// reads or writes the ledger's table itself.
type Budget interface {
	// PopulationOf is the population of persons the records of a type
	// are about (its subject key), or an error when the type concerns
	// no person.
	PopulationOf(recordType string) (string, error)
	// BudgetLeft is the ρ left this calendar year of recipient's account
	// for population.
	BudgetLeft(ctx context.Context, recipient, population string) (float64, error)
	// SpendBudget debits rho from that account inside tx, or fails,
	// debiting nothing, with an error wrapping privacy.ErrBudgetExceeded
	// or privacy.ErrNoBudget when it does not fit.
	SpendBudget(ctx context.Context, tx *sql.Tx, recipient, population string, rho float64) error
}

// Defaults.
const (
	DefaultK           = 5
	DefaultMaxSuppress = 0.05
	DefaultDelta       = 1e-6
)

// Config is what a Releaser is built from.
type Config struct {
	NodeID     string
	Std        *schema.Standard
	Rules      policy.Rulebook
	DB         *store.DB
	Evidence   *evidence.Log
	Shares     *share.Sharer
	Agreements *agreement.Book
	// Metrics is the node's metrics registry: the release counters are
	// registered on it.
	Metrics *prometheus.Registry
	// Registry, Outbox, Layout and Keys send manifests and provenance
	// declarations to peers (envelope kinds 10 and 11); Role is this
	// node's role in its credential.
	Registry *registry.Registry
	Outbox   *outbox.Outbox
	Layout   bus.Layout
	Keys     *keys.Keys
	Role     crypto.Role
	Logger   *slog.Logger
	Now      func() time.Time
	// Rand is the randomness of noise and release ids; nil: crypto/rand.
	Rand io.Reader
	// K is the default k (release.k); MaxSuppress the largest fraction
	// of records a release may suppress to reach k (release.max_suppress).
	K           int
	MaxSuppress float64
	// Budget is the privacy ledger DP releases are charged to; without
	// one, a DP release is not made.
	Budget Budget
}

// Releaser makes releases.
type Releaser struct {
	c        Config
	made     prometheus.Counter
	refusals *prometheus.CounterVec
}

// New is the releaser of c.
func New(c Config) *Releaser {
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.K < 2 {
		c.K = DefaultK
	}
	if c.MaxSuppress <= 0 || c.MaxSuppress >= 1 {
		c.MaxSuppress = DefaultMaxSuppress
	}
	r := &Releaser{c: c,
		made: prometheus.NewCounter(prometheus.CounterOpts{Name: "eduspace_release_made_total",
			Help: "Dataset releases made (node/release)."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eduspace_release_refusals_total",
			Help: "Dataset releases refused before any data was produced, by reason code."}, []string{"reason"}),
	}
	if c.Metrics != nil {
		c.Metrics.MustRegister(r.made, r.refusals)
		for _, reason := range refusalReasons() {
			r.refusals.WithLabelValues(reason)
		}
	}
	return r
}

// refusalReasons are the label values of the refusals counter: the
// rulebook's reasons and the release's own.
func refusalReasons() []string {
	out := []string{ReasonKUnmet, ReasonNothing, ReasonBudget}
	for _, r := range policy.Reasons() {
		if r != policy.ReasonPermit {
			out = append(out, string(r))
		}
	}
	return out
}

// Request asks for one release.
type Request struct {
	Agreement string `json:"agreement"`
	// Types narrows the release to some of the agreement's record types.
	Types []string `json:"types,omitempty"`
	// K is the k of k-anonymity; 0: the node's default. At least 2.
	K int `json:"k,omitempty"`
	// DP asks for a differentially private synthetic dataset with ε =
	// Epsilon and δ = Delta (0: DefaultDelta) instead of de-identified
	// rows.
	DP      bool    `json:"dp,omitempty"`
	Epsilon float64 `json:"epsilon,omitempty"`
	Delta   float64 `json:"delta,omitempty"`
}

// Refusal is a release refused before any data was produced: the rule
// and reason code that decided, the clause it rests on, and how many
// source records each refusing reason concerns.
type Refusal struct {
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
	Clause string `json:"clause"`
	// Records is how many source records the deciding reason concerns.
	Records  int            `json:"records"`
	ByReason map[string]int `json:"by_reason,omitempty"`
	Detail   string         `json:"detail"`
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("release refused: %s (%s; %s): %s", r.Reason, r.Rule, r.Clause, r.Detail)
}

// Release is one release made.
type Release struct {
	ID        string    `json:"id"`
	Agreement string    `json:"agreement"`
	Recipient string    `json:"recipient"`
	Purpose   string    `json:"purpose"`
	Method    string    `json:"method"` // k-anonymity or dp-synthetic
	Created   time.Time `json:"created"`
	Records   int       `json:"records"`
	// Digest is the SHA-256, in hex, of the released rows as sent: each
	// row's wire line and a newline, record types in name order.
	Digest    string     `json:"digest"`
	Envelopes []string   `json:"envelopes"`
	Report    RiskReport `json:"risk_report"`
	Card      DataCard   `json:"data_card"`
}

// Method names.
const (
	MethodK  = "k-anonymity"
	MethodDP = "dp-synthetic"
)

// RiskReport is a release's re-identification risk report: the
// uniqueness of quasi-identifier combinations before (the records as
// policy lets them leave) and after (what was released), per record type.
type RiskReport struct {
	K           int        `json:"k,omitempty"`
	MaxSuppress float64    `json:"max_suppress_fraction,omitempty"`
	Types       []TypeRisk `json:"types"`
	// Linked is k over persons' profiles where rows carry the
	// release's token of their person (RELEASES.md §2).
	Linked *Linked       `json:"linked,omitempty"`
	DP     map[string]DP `json:"dp,omitempty"`
}

// TypeRisk is the risk report of one record type.
type TypeRisk struct {
	Type             string            `json:"type"`
	QuasiIdentifiers []string          `json:"quasi_identifiers"`
	Before           ClassStats        `json:"before"`
	After            ClassStats        `json:"after"`
	Suppressed       int               `json:"suppressed"`
	Generalised      map[string]string `json:"generalised,omitempty"` // field → level
	Tokens           []string          `json:"tokens,omitempty"`      // fields released as the release's tokens
}

// DataCard describes a release for whoever uses it.
type DataCard struct {
	Source          string      `json:"source"`
	Recipient       string      `json:"recipient"`
	Agreement       string      `json:"agreement"`
	Purpose         string      `json:"purpose"`
	LegalBasis      string      `json:"legal_basis"`
	Standard        string      `json:"standard"`
	TimeSpan        TimeSpan    `json:"time_span"`
	RecordTypes     []string    `json:"record_types"`
	Fields          []CardField `json:"fields"`
	Transformations []string    `json:"transformations"`
	KnownGaps       []string    `json:"known_gaps"`
	IntendedUses    []string    `json:"intended_uses"`
	ProhibitedUses  []string    `json:"prohibited_uses"`
	Retention       string      `json:"retention"`
}

// TimeSpan is when the source records were taken in.
type TimeSpan struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// CardField is one field of the source and what became of it.
type CardField struct {
	Type      string `json:"type"`
	Name      string `json:"name"`
	Category  string `json:"category"`
	Level     string `json:"level"`
	Treatment string `json:"treatment"`
}

// Progress receives a line about a long release as it goes.
type Progress func(msg string)

// identifying are fields the standard does not mark direct that identify a
// person alone all the same (a romanised name, a contact, a card or
// document number): a release removes them, as it removes free text.
var identifying = map[string]bool{
	"name_pinyin": true, "email": true, "phone": true, "photo": true, "campus_card_no": true,
	"diploma_no": true, "degree_no": true, "loan_contract_no": true, "bank_card_no": true,
	"employer_name": true, "dormitory": true,
}

// refusing orders the rulebook's reasons a release refuses on, first the
// one named when several apply. Any other denial also refuses, after
// these; only a subject who never consented is left out instead
// (excluded).
var refusing = []policy.Reason{
	policy.ReasonTrainingSensitive, policy.ReasonTrainingMinor, policy.ReasonMinorNeedsGuardian,
	policy.ReasonPersonUnknown, policy.ReasonSensitiveNotRaw, policy.ReasonSensitiveNeedsBasis,
}

// excluded tells whether a denied record is left out of a release rather
// than refusing it: its subject never gave, or withdrew, the consent the
// purpose needs. A withdrawal must keep the subject out of every later
// release; it must not stop the releases of everyone else.
func excluded(d share.Decided) bool {
	r := d.Decision.Reason
	return r == policy.ReasonTrainingNeedsConsent || r == policy.ReasonConsentMissing
}

// source is one record type's permitted records.
type source struct {
	typ      string
	rows     []map[string]any
	subjects []string
	levels   []schema.Level
}

// Make makes a release as req asks, or refuses it (*Refusal) before any
// data is produced.
func (r *Releaser) Make(ctx context.Context, req Request, progress Progress) (*Release, error) {
	if progress == nil {
		progress = func(string) {}
	}
	k := req.K
	if k == 0 {
		k = r.c.K
	}
	if k < 2 {
		return nil, fmt.Errorf("release: k = %d, want at least 2 (a class of one record is that record)", k)
	}
	delta := req.Delta
	if req.DP {
		if !(req.Epsilon > 0 && req.Epsilon <= 10) {
			return nil, fmt.Errorf("release: --dp needs an ε in (0, 10], got %v", req.Epsilon)
		}
		if delta == 0 {
			delta = DefaultDelta
		}
		if !(delta > 0 && delta < 1e-3) {
			return nil, fmt.Errorf("release: δ = %v, want in (0, 0.001)", delta)
		}
	}
	a, err := r.c.Agreements.Get(ctx, req.Agreement)
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	if a.Provider != r.c.NodeID {
		return nil, fmt.Errorf("release under agreement %s: this node is not its provider", a.ID)
	}
	training := a.Purpose == policy.PurposeModelTraining
	// Special categories leave no release: for model training the
	// rulebook refuses them (training_no_l4); for any other purpose the
	// release takes them out of the agreement before deciding.
	omit := func(typ, field string) bool {
		if training {
			return false
		}
		rt, ok := r.c.Std.Type(typ)
		if !ok {
			return false
		}
		spec, ok := rt.Field(field)
		return ok && spec.Level >= r.c.Rules.SensitiveLevel
	}
	// The release's id comes first: the tokens of its rows are derived
	// from it (releaseTokenizer).
	rel := &Release{Agreement: a.ID, Recipient: a.Recipient, Purpose: string(a.Purpose), Created: r.c.Now().UTC()}
	if rel.ID, err = r.newID("rel-", "release id"); err != nil {
		return nil, err
	}
	tz, err := r.releaseTokenizer(a.Recipient, rel.ID)
	if err != nil {
		return nil, err
	}
	progress(fmt.Sprintf("deciding the held records under agreement %s", a.ID))
	byType := map[string]*source{}
	denied := map[string]int{}
	withdrawn, excludedN, considered := 0, 0, 0
	firstRule := map[string]string{}
	var from, to int64
	err = r.c.Shares.DecideHeld(ctx, a.ID, req.Types, omit, func(d share.Decided) error {
		considered++
		if from == 0 || d.IngestedMs < from {
			from = d.IngestedMs
		}
		to = max(to, d.IngestedMs)
		if !d.Decision.Permit {
			if excluded(d) {
				if d.Withdrawn {
					withdrawn++
				} else {
					excludedN++
				}
				return nil
			}
			reason := string(d.Decision.Reason)
			denied[reason]++
			if _, ok := firstRule[reason]; !ok {
				firstRule[reason] = d.Decision.Rule
			}
			return nil
		}
		s := byType[d.Type]
		if s == nil {
			s = &source{typ: d.Type}
			byType[d.Type] = s
		}
		fields := d.Fields
		rt, _ := r.c.Std.Type(d.Type)
		for f := range fields {
			fl, labelled := d.Labels.Fields[f]
			switch {
			// Fields the value makes sensitive (a detector's hit) leave
			// no release either.
			case labelled && fl.Level >= r.c.Rules.SensitiveLevel:
				delete(fields, f)
			// Direct identifiers leave only as a token the agreement
			// asks for by name.
			case (labelled && fl.DirectID || rt != nil && f == rt.SubjectKey()) && a.Transforms[f] != policy.TransformTokenise:
				delete(fields, f)
			// Identifying alone, or free text that may say anything.
			case identifying[f] || labelled && fl.Text:
				delete(fields, f)
			}
		}
		// What the decision tokenised for the recipient leaves as this
		// release's token of it: two releases cannot be joined on them.
		for _, act := range d.Decision.Actions {
			if act.Transform != policy.TransformTokenise {
				continue
			}
			if v, ok := fields[act.Field]; ok {
				if tok, isStr := v.(string); isStr {
					fields[act.Field] = tz.Token(tok)
				} else {
					delete(fields, act.Field)
				}
			}
		}
		s.rows = append(s.rows, fields)
		s.subjects = append(s.subjects, d.Subject)
		s.levels = append(s.levels, d.Decision.Level)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("release: %w", err)
	}
	progress(fmt.Sprintf("decided %d records: %d permitted, %d left out for want of consent, %d refused", considered,
		considered-excludedN-withdrawn-sum(denied), excludedN+withdrawn, sum(denied)))
	if len(denied) > 0 {
		return nil, r.refuse(ctx, a, refusalOf(denied, firstRule))
	}
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	sort.Strings(types)
	if len(types) == 0 {
		return nil, r.refuse(ctx, a, &Refusal{Rule: RuleNothing, Reason: ReasonNothing, Clause: clauseNothing,
			Detail: fmt.Sprintf("no held record of %v is permitted under agreement %s (%d considered, %d without the consent the purpose needs)",
				typesOr(req.Types, a), a.ID, considered, excludedN)})
	}

	report := RiskReport{}
	out := map[string][]share.ReleaseRow{}
	spends := map[string]float64{} // the ρ a DP release debits, per population of persons
	sourceN := 0                   // the source records of the types about persons, for a DP release
	var included []string          // subjects (hashes) whose records went into the release
	if !req.DP {
		rel.Method = MethodK
		report.K, report.MaxSuppress = k, r.c.MaxSuppress
		ans := map[string]anonymity{}
		var linked []linkedRow // rows the recipient can join per person through their tokens
		for _, t := range types {
			s := byType[t]
			an, ok := anonymise(s.rows, s.subjects, k, r.c.MaxSuppress)
			if !ok {
				return nil, r.refuse(ctx, a, &Refusal{Rule: RuleKAnonymity, Reason: ReasonKUnmet, Clause: clauseKAnonymity,
					Records: len(s.rows), Detail: fmt.Sprintf("%s: %d records cannot form classes of %d on %s without suppressing more than %.0f%% of them",
						t, len(s.rows), k, strings.Join(an.qis, ", "), 100*r.c.MaxSuppress)})
			}
			ans[t] = an
			tr := TypeRisk{Type: t, QuasiIdentifiers: an.qis, Before: an.before, After: an.after, Suppressed: an.suppressed,
				Generalised: levelNames(an.levels), Tokens: tokenFields(r.c.Std, t, s.rows)}
			report.Types = append(report.Types, tr)
			if len(tr.Tokens) > 0 {
				for _, i := range an.kept {
					if s.subjects[i] != "" {
						linked = append(linked, linkedRow{typ: t, index: i, subject: s.subjects[i], class: classKey(s.rows[i], an.qis, an.levels)})
					}
				}
			}
		}
		// Rows that carry a token of their person can be joined into one
		// profile per person, across record types and within one: k
		// holds over persons' profiles, not only per table.
		drop := map[int]bool{}
		if len(linked) > 0 {
			var l Linked
			var ok bool
			drop, l, ok = linkProfiles(linked, k, r.c.MaxSuppress)
			for _, t := range types {
				if len(ans[t].kept) > 0 && slices.ContainsFunc(linked, func(lr linkedRow) bool { return lr.typ == t }) {
					l.Types = append(l.Types, t)
				}
			}
			if !ok {
				return nil, r.refuse(ctx, a, &Refusal{Rule: RuleKAnonymity, Reason: ReasonKUnmet, Clause: clauseKAnonymity,
					Records: len(linked), Detail: fmt.Sprintf("%d records of %s carry the release's token of their person: joined per person, %d of them fall in profiles of fewer than %d persons, more than %.0f%%",
						len(linked), strings.Join(l.Types, ", "), l.Suppressed, k, 100*r.c.MaxSuppress)})
			}
			report.Linked = &l
		}
		dropped := map[string]map[int]bool{}
		for j, lr := range linked {
			if drop[j] {
				if dropped[lr.typ] == nil {
					dropped[lr.typ] = map[int]bool{}
				}
				dropped[lr.typ][lr.index] = true
			}
		}
		for _, t := range types {
			s, an := byType[t], ans[t]
			for _, i := range an.kept {
				if dropped[t][i] {
					continue
				}
				out[t] = append(out[t], share.ReleaseRow{Fields: generalised(s.rows[i], an.levels), Subject: s.subjects[i], Level: s.levels[i]})
				if s.subjects[i] != "" {
					included = append(included, s.subjects[i])
				}
			}
			progress(fmt.Sprintf("%s: %d records, k = %d reached with %d suppressed, %d more for profiles joined through tokens", t, len(s.rows), k, an.suppressed, len(dropped[t])))
		}
	} else {
		if r.c.Budget == nil {
			return nil, errors.New("release: this node has no privacy budget ledger to charge a --dp release to; make a k-anonymous release instead")
		}
		rel.Method = MethodDP
		report.DP = map[string]DP{}
		var seed [32]byte
		if _, err := io.ReadFull(r.c.Rand, seed[:]); err != nil {
			return nil, fmt.Errorf("release: randomness: %w", err)
		}
		sampler := privacy.NewSampler(r.c.Rand)
		draw := mrand.New(mrand.NewChaCha8(seed))
		// The types' tables share the ε asked for: each is made with
		// ε/len(types). Each is made from one record per person, so its
		// ρ is about a person; the ρ of the types about one population
		// adds up on that population's account of the recipient, and
		// the release is refused here, before any noise is drawn, when
		// it does not fit what is left this year.
		eps := req.Epsilon / float64(len(types))
		dpRows := map[string][]map[string]any{}
		dpFields := map[string][]string{}
		planned := map[string]float64{}
		for _, t := range types {
			s := byType[t]
			rt, _ := r.c.Std.Type(t)
			dpRows[t] = onePerPerson(s.rows, s.subjects, draw)
			dpFields[t] = releasable(rt, dpRows[t])
			rho, err := plannedRho(rt, dpFields[t], eps, delta, rel.Created)
			if err != nil {
				return nil, fmt.Errorf("release: %s: %w", t, err)
			}
			if pop, err := r.c.Budget.PopulationOf(t); err == nil {
				planned[pop] += rho
				sourceN += len(s.rows)
			}
		}
		if ref, err := r.budgetRefusal(ctx, a, planned, sourceN, "nothing was produced"); err != nil {
			return nil, fmt.Errorf("release: privacy budget: %w", err)
		} else if ref != nil {
			return nil, r.refuse(ctx, a, ref)
		}
		for _, t := range types {
			s := byType[t]
			rt, _ := r.c.Std.Type(t)
			rows, dp, err := synthesise(dpRows[t], rt, dpFields[t], eps, delta, sampler, draw, rel.Created)
			if err != nil {
				return nil, fmt.Errorf("release: %s: %w", t, err)
			}
			report.DP[t] = dp
			if pop, err := r.c.Budget.PopulationOf(t); err == nil {
				spends[pop] += dp.Rho
			}
			qis := quasiOf(s.rows)
			report.Types = append(report.Types, TypeRisk{Type: t, QuasiIdentifiers: qis,
				Before: stats(classes(s.rows, s.subjects, qis, nil)), After: stats(classes(rows, nil, quasiOf(rows), nil))})
			level := schema.L1
			for _, l := range s.levels {
				level = max(level, l)
			}
			for _, row := range rows {
				out[t] = append(out[t], share.ReleaseRow{Fields: row, Level: level})
			}
			for _, sub := range s.subjects {
				if sub != "" {
					included = append(included, sub)
				}
			}
			progress(fmt.Sprintf("%s: %d records → %d synthetic rows, ε = %.4g, δ = %g", t, len(s.rows), len(rows), dp.Epsilon, delta))
		}
	}
	rel.Report = report
	// Each row's line is written once: the digest covers it, and
	// SendRelease sends it as it is.
	h := sha256.New()
	for _, t := range types {
		for i := range out[t] {
			line, err := share.ReleaseLine(t, out[t][i].Fields)
			if err != nil {
				return nil, err
			}
			out[t][i].Line = line
			h.Write(line)
			h.Write([]byte{'\n'})
			rel.Records++
		}
	}
	rel.Digest = hex.EncodeToString(h.Sum(nil))
	rel.Card = r.card(a, rel, req, types, byType, report, excludedN, withdrawn, TimeSpan{From: time.UnixMilli(from).UTC(), To: time.UnixMilli(to).UTC()})
	if rel.Records == 0 {
		return nil, r.refuse(ctx, a, &Refusal{Rule: RuleNothing, Reason: ReasonNothing, Clause: clauseNothing,
			Detail: "nothing is left to release after the release's transformations"})
	}

	// Recorded before anything is sent: a release whose rows went out
	// always has its entry.
	slices.Sort(included)
	included = slices.Compact(included)
	if err := r.store(ctx, a, rel, included, spends); err != nil {
		if errors.Is(err, privacy.ErrBudgetExceeded) || errors.Is(err, privacy.ErrNoBudget) {
			// Another release or aggregate round spent the budget since
			// the check: refused now, nothing recorded or sent.
			ref, rerr := r.budgetRefusal(ctx, a, spends, sourceN, "spent meanwhile by another release or an aggregate round: the release is neither recorded nor sent")
			if ref == nil {
				ref = &Refusal{Rule: RuleBudget, Reason: ReasonBudget, Clause: clauseBudget, Records: sourceN,
					Detail: err.Error() + ": nothing was sent"}
			}
			return nil, errors.Join(r.refuse(ctx, a, ref), rerr)
		}
		return nil, err
	}
	for _, t := range types {
		if len(out[t]) == 0 {
			continue
		}
		progress(fmt.Sprintf("sealing %d %s rows to %s", len(out[t]), t, a.Recipient))
		eids, err := r.c.Shares.SendRelease(ctx, a.ID, t, out[t])
		rel.Envelopes = append(rel.Envelopes, eids...)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("release %s: send (%d envelopes written before it failed, noted with the release): %w",
				rel.ID, len(rel.Envelopes), err), r.noteEnvelopes(ctx, rel))
		}
	}
	if err := r.noteEnvelopes(ctx, rel); err != nil {
		return nil, err
	}
	if err := r.sendManifest(ctx, rel); err != nil {
		return nil, fmt.Errorf("release %s: its rows are on their way; its manifest to %s failed: %w", rel.ID, rel.Recipient, err)
	}
	r.made.Inc()
	return rel, nil
}

// noteEnvelopes records the envelopes that carry the release's rows.
func (r *Releaser) noteEnvelopes(ctx context.Context, rel *Release) error {
	envs, err := json.Marshal(rel.Envelopes)
	if err == nil {
		err = r.c.DB.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE releases SET envelopes = ? WHERE id = ?`, string(envs), rel.ID)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("release %s: note its envelopes: %w", rel.ID, err)
	}
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func typesOr(types []string, a *policy.Agreement) []string {
	if len(types) > 0 {
		return types
	}
	return slices.Sorted(maps.Keys(a.RecordTypes))
}

// refusalOf names the refusal of a release whose records were denied by
// reason: the first of refusing that applies, else the most frequent.
func refusalOf(denied map[string]int, rules map[string]string) *Refusal {
	pick := ""
	for _, r := range refusing {
		if denied[string(r)] > 0 {
			pick = string(r)
			break
		}
	}
	if pick == "" {
		for r, n := range denied {
			if pick == "" || n > denied[pick] || n == denied[pick] && r < pick {
				pick = r
			}
		}
	}
	detail := fmt.Sprintf("%d source records would break rule %s", denied[pick], rules[pick])
	return &Refusal{Rule: rules[pick], Reason: pick, Clause: policy.Reason(pick).Clause(), Records: denied[pick],
		ByReason: denied, Detail: detail + ": nothing was produced"}
}

// refuse counts and records a refusal and returns it.
func (r *Releaser) refuse(ctx context.Context, a *policy.Agreement, ref *Refusal) error {
	r.refusals.WithLabelValues(ref.Reason).Inc()
	detail := map[string]int{}
	for reason, n := range ref.ByReason {
		detail[reason] = n
	}
	if err := r.c.DB.Write(ctx, func(tx *sql.Tx) error {
		return r.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidenceKind, Peer: a.Recipient, Agreement: a.ID,
			Purpose: string(a.Purpose), LegalBasis: string(a.LegalBasis), Rule: ref.Rule, Reason: ref.Reason,
			Count: ref.Records, Detail: detail})
	}); err != nil {
		return errors.Join(ref, fmt.Errorf("record the refusal: %w", err))
	}
	return ref
}

// budgetRefusal is the refusal of a DP release whose ρ per population
// (spends) does not fit what is left of the recipient's account this
// calendar year (Budget.BudgetLeft), or nil when every spend fits. records
// is the number of source records the release would be made from.
func (r *Releaser) budgetRefusal(ctx context.Context, a *policy.Agreement, spends map[string]float64, records int, outcome string) (*Refusal, error) {
	for _, pop := range slices.Sorted(maps.Keys(spends)) {
		l, err := r.c.Budget.BudgetLeft(ctx, a.Recipient, pop)
		if err != nil {
			return nil, err
		}
		if spends[pop] > l {
			return &Refusal{Rule: RuleBudget, Reason: ReasonBudget, Clause: clauseBudget, Records: records,
				Detail: fmt.Sprintf("the release costs ρ = %.6g of %s's privacy budget for %s, which has ρ = %.6g left in %d (%s); "+
					"ask for a smaller ε, wait for the next calendar year, or have the node raise the budget (eduspace aggregate budgets)",
					spends[pop], a.Recipient, pop, max(l, 0), r.c.Now().UTC().Year(), outcome)}, nil
		}
	}
	return nil, nil
}

// newID is prefix and 8 random bytes in hex: a release's or a provenance
// declaration's id. what names it in an error.
func (r *Releaser) newID(prefix, what string) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r.c.Rand, b[:]); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// releasable lists the fields of rows that a synthetic release may carry:
// none that is a direct identifier or the subject key.
func releasable(rt *schema.RecordType, rows []map[string]any) []string {
	seen := map[string]bool{}
	for _, row := range rows {
		for f := range row {
			seen[f] = true
		}
	}
	var out []string
	for f := range seen {
		spec, ok := rt.Field(f)
		if !ok || spec.Direct || f == rt.SubjectKey() {
			continue
		}
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// tokenFields lists the fields of rows of type t that are the recipient's
// tokens: its direct identifiers and subject key, where they are present.
func tokenFields(std *schema.Standard, t string, rows []map[string]any) []string {
	rt, ok := std.Type(t)
	if !ok {
		return nil
	}
	ids := rt.DirectIdentifiers()
	if k := rt.SubjectKey(); k != "" && !slices.Contains(ids, k) {
		ids = append(ids, k)
	}
	var out []string
	for _, f := range ids {
		for _, row := range rows {
			if _, ok := row[f]; ok {
				out = append(out, f)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// store writes the release, the subjects it included and its evidence
// entry in one transaction.
func (r *Releaser) store(ctx context.Context, a *policy.Agreement, rel *Release, included []string, spends map[string]float64) error {
	report, err := json.Marshal(rel.Report)
	if err != nil {
		return err
	}
	card, err := json.Marshal(rel.Card)
	if err != nil {
		return err
	}
	return r.c.DB.Write(ctx, func(tx *sql.Tx) error {
		// A DP release's ρ is debited in the transaction that records
		// it: recorded and charged, or neither.
		detail := map[string]int{"records": rel.Records}
		for _, pop := range slices.Sorted(maps.Keys(spends)) {
			if err := r.c.Budget.SpendBudget(ctx, tx, a.Recipient, pop, spends[pop]); err != nil {
				return fmt.Errorf("charge the release to %s's %s budget: %w", a.Recipient, pop, err)
			}
			detail["rho_nano:"+pop] = int(math.Ceil(spends[pop] * 1e9))
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO releases(id, agreement, recipient, purpose, method, created_ms, records, digest, envelopes, report, card)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?)`, rel.ID, rel.Agreement, rel.Recipient, rel.Purpose, rel.Method,
			rel.Created.UnixMilli(), rel.Records, rel.Digest, string(report), string(card)); err != nil {
			return fmt.Errorf("store release: %w", err)
		}
		how := "row"
		if rel.Method == MethodDP {
			how = "dp_source"
		}
		for _, s := range included {
			if _, err := tx.ExecContext(ctx, `INSERT INTO release_subjects(subject, release, how) VALUES (?, ?, ?)`, s, rel.ID, how); err != nil {
				return fmt.Errorf("store release subjects: %w", err)
			}
		}
		if rel.Method == MethodK {
			detail["k"] = rel.Report.K
			for _, t := range rel.Report.Types {
				detail["suppressed"] += t.Suppressed
			}
		}
		return r.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidenceKind, Peer: a.Recipient, Agreement: a.ID,
			Purpose: string(a.Purpose), LegalBasis: string(a.LegalBasis), Standard: r.c.Std.Ref(), Envelope: rel.ID,
			Rule: rel.Method, Reason: "released", Count: rel.Records, Subjects: included, Detail: detail, Digest: rel.Digest})
	})
}

// Get returns one release this node made.
func (r *Releaser) Get(ctx context.Context, id string) (*Release, error) {
	rels, err := r.query(ctx, `WHERE id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(rels) == 0 {
		return nil, fmt.Errorf("release %s: %w", id, ErrNotFound)
	}
	return &rels[0], nil
}

// ErrNotFound: no release with that id.
var ErrNotFound = errors.New("no such release at this node (eduspace dataset release lists none by that id)")

// List returns the releases this node made, newest first.
func (r *Releaser) List(ctx context.Context) ([]Release, error) { return r.query(ctx, ``) }

func (r *Releaser) query(ctx context.Context, where string, args ...any) ([]Release, error) {
	return queryAll(ctx, r.c.DB.R, "read releases", `SELECT id, agreement, recipient, purpose, method, created_ms, records, digest, envelopes, report, card
		FROM releases `+where+` ORDER BY created_ms DESC, id`, args,
		func(read func(...any) error) (Release, error) {
			var rel Release
			var created int64
			var envs, report, card string
			if err := read(&rel.ID, &rel.Agreement, &rel.Recipient, &rel.Purpose, &rel.Method, &created, &rel.Records,
				&rel.Digest, &envs, &report, &card); err != nil {
				return rel, err
			}
			rel.Created = time.UnixMilli(created).UTC()
			if err := errors.Join(json.Unmarshal([]byte(envs), &rel.Envelopes), json.Unmarshal([]byte(report), &rel.Report),
				json.Unmarshal([]byte(card), &rel.Card)); err != nil {
				return rel, fmt.Errorf("read release %s: %w", rel.ID, err)
			}
			return rel, nil
		})
}

// releaseTokenizer is the tokenizer of a release's tokens: under
// crypto.ReleaseTokenKey of the recipient's token key (the share path's,
// node/share) and the release id. A person's token in the release is its
// token of the person's recipient token.
func (r *Releaser) releaseTokenizer(recipient, releaseID string) (*crypto.Tokenizer, error) {
	key, err := r.recipientTokenKey(recipient)
	if err != nil {
		return nil, err
	}
	return crypto.NewTokenizer(crypto.ReleaseTokenKey(key, releaseID)), nil
}

// recipientTokenKey is the key of recipient's tokens, as node/share and
// node/consent derive it from the node's secret.
func (r *Releaser) recipientTokenKey(recipient string) ([]byte, error) {
	if r.c.Keys == nil {
		return nil, errors.New("release: this node has no keys to derive the release tokens from; start the node with its keys")
	}
	return r.c.Keys.TokenKey(recipient), nil
}

// ErasureTokens lists, read inside tx, the tokens the subject whose id is
// subject (a student_id) has in the k-anonymous releases this node made to
// recipient under agreement that carried a row of theirs, one per release,
// in release id order: what an erasure request to recipient names besides
// the subject's recipient token, so that it reaches those rows
// (node/consent calls it through its Config.ReleaseTokens). recipient
// holds every one of them already.
func (r *Releaser) ErasureTokens(ctx context.Context, tx *sql.Tx, subject, recipient, agreement string) ([]string, error) {
	ids, err := queryAll(ctx, tx, "read a subject's releases", `SELECT s.release FROM release_subjects s JOIN releases r ON r.id = s.release
		WHERE s.subject = ? AND s.how = 'row' AND r.recipient = ? AND r.agreement = ? ORDER BY s.release`,
		[]any{r.c.Evidence.Subject(subject), recipient, agreement},
		func(read func(...any) error) (string, error) {
			var id string
			err := read(&id)
			return id, err
		})
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	recipientKey, err := r.recipientTokenKey(recipient)
	if err != nil {
		return nil, err
	}
	recipientToken := crypto.Token(recipientKey, subject)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = crypto.Token(crypto.ReleaseTokenKey(recipientKey, id), recipientToken)
	}
	return out, nil
}

// Inclusion is one release that included a subject, for the subject report.
type Inclusion struct {
	Release   string    `json:"release"`
	Recipient string    `json:"recipient"`
	Agreement string    `json:"agreement"`
	Purpose   string    `json:"purpose"`
	Method    string    `json:"method"`
	Created   time.Time `json:"created"`
	// How: "row" (a de-identified row of theirs), or "dp_source" (their
	// record was in the source of a synthetic release).
	How    string `json:"how"`
	Digest string `json:"digest"`
	// ModelUses are the uses of the release its recipient declared
	// (provenance declarations, verified).
	ModelUses []ModelUse `json:"model_uses"`
}

// ForSubjectID is ForSubject of the subject key value id (a
// student_id), hashed as the evidence log hashes subjects.
func (r *Releaser) ForSubjectID(ctx context.Context, id string) ([]Inclusion, error) {
	return r.ForSubject(ctx, r.c.Evidence.Subject(id))
}

// ForSubject lists the releases that included the subject whose evidence
// hash is hash, oldest first.
func (r *Releaser) ForSubject(ctx context.Context, hash string) ([]Inclusion, error) {
	out, err := queryAll(ctx, r.c.DB.R, "read a subject's releases", `SELECT r.id, r.recipient, r.agreement, r.purpose, r.method, r.created_ms, s.how, r.digest
		FROM release_subjects s JOIN releases r ON r.id = s.release WHERE s.subject = ? ORDER BY r.created_ms, r.id`, []any{hash},
		func(read func(...any) error) (Inclusion, error) {
			var in Inclusion
			var created int64
			if err := read(&in.Release, &in.Recipient, &in.Agreement, &in.Purpose, &in.Method, &created, &in.How, &in.Digest); err != nil {
				return in, err
			}
			in.Created = time.UnixMilli(created).UTC()
			return in, nil
		})
	if err != nil {
		return nil, err
	}
	uses, err := r.usesOfSubject(ctx, hash)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].ModelUses = append([]ModelUse{}, uses[out[i].Release]...)
	}
	return out, nil
}
