// Package share owns the records a node holds and what leaves with them:
// ingest validates and classifies records into the records table, and a
// share decides each record alone under an agreement (policy, consent,
// the yearly volume), writes what leaves as the recipient may see it,
// seals it into envelopes and writes them to the outbox with the evidence
// of every decision, marking in the shared table which records went out
// under which agreement. Under a continuous agreement an ingest shares
// what it stores as it goes. Send (and Stream, its form for an operator's
// input) does the same for a stream of records the node does not keep.
//
// It must never send a record policy did not permit, never commit a
// decision without its evidence, never assign a sequence number out of
// commit order (one share at a time holds the shares lock), and never
// keep a denied record from a later share.
package share

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Config is what a Sharer is built from.
type Config struct {
	NodeID     string
	Std        *schema.Standard
	Rules      policy.Rulebook
	DB         *store.DB
	Evidence   *evidence.Log
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	Now        func() time.Time
	Keys       *keys.Keys
	Registry   *registry.Registry
	Codec      *envelope.Codec
	Outbox     *outbox.Outbox
	Agreements *agreement.Book
	Layout     bus.Layout
	// MaxRecords closes an envelope at this many records.
	MaxRecords int
	// MaxPayload is the NATS server's largest message: envelopes close at
	// half of it.
	MaxPayload func() int64
	// Consents are the consent ledger's records for a purpose, by subject.
	Consents func(ctx context.Context, purpose policy.Purpose) (map[string][]policy.ConsentRecord, error)
	// Lock is the shares lock: one share, send or revocation at a time.
	Lock sync.Locker
	// DataKey seals the records held at rest; nil stores them in clear
	// (storage.encrypt off). Records are read either way.
	DataKey *keys.DataKey
}

// Sharer holds the node's records and shares them.
type Sharer struct {
	nodeID     string
	std        *schema.Standard
	rules      policy.Rulebook
	db         *store.DB
	ev         *evidence.Log
	m          *metrics.Metrics
	log        *slog.Logger
	now        func() time.Time
	keys       *keys.Keys
	reg        *registry.Registry
	codec      *envelope.Codec
	out        *outbox.Outbox
	agreements *agreement.Book
	layout     bus.Layout
	maxRecords int
	maxPayload func() int64
	consents   func(ctx context.Context, purpose policy.Purpose) (map[string][]policy.ConsentRecord, error)
	lock       sync.Locker
	volumes    map[string]*volume // by recipient; guarded by lock
	birthCache births             // the subjects' birth dates; guarded by lock
	dk         *keys.DataKey
}

// New is the sharer of the records in c.DB.
func New(c Config) *Sharer {
	return &Sharer{nodeID: c.NodeID, std: c.Std, rules: c.Rules, db: c.DB, ev: c.Evidence, m: c.Metrics, log: c.Logger,
		now: c.Now, keys: c.Keys, reg: c.Registry, codec: c.Codec, out: c.Outbox, agreements: c.Agreements, dk: c.DataKey,
		layout: c.Layout, maxRecords: c.MaxRecords, maxPayload: c.MaxPayload, consents: c.Consents, lock: c.Lock,
		volumes: map[string]*volume{}}
}

// Result sums up one share request.
type Result struct {
	Agreement  string         `json:"agreement"`
	Recipient  string         `json:"recipient"`
	Considered int            `json:"considered"`
	Permitted  int            `json:"permitted"`
	Denied     map[string]int `json:"denied"` // reason code → records
	Envelopes  int            `json:"envelopes"`
}

// pending is an envelope being filled for one record type.
type pending struct {
	typ      string
	buf      []byte // the envelope's plaintext: one wire record per line
	count    int
	level    schema.Level
	records  []int64
	subjects []string
	items    []deliveryItem
	// last is the last permit for a record of this type in this run, whose
	// actions policy reuses for records with the same fields.
	last policy.Decision
}

// deliveryItem is one record in an envelope, for the deliveries table.
type deliveryItem struct {
	subject string // keyed evidence hash
	level   schema.Level
	fields  string // the fields that left, comma-separated
}

// decisionGroup gathers the decisions of one flush that share rule and
// reason, for one evidence entry.
type decisionGroup struct {
	rule, reason string
	subjects     []string
	counter      prometheus.Counter // the decisions metric of its outcome and reason
}

// shareRun is the state of one Share call.
type shareRun struct {
	n         *Sharer
	a         *policy.Agreement
	to        *crypto.KEMPublicKey
	role      crypto.Role
	tokenKey  []byte
	res       Result
	batches   map[string]*pending
	decisions map[[2]string]*decisionGroup
	sl        *sealer // started by the first full envelope
	tz        *crypto.Tokenizer
	// consents are the ledger's records for the agreement's purpose, by
	// subject key value.
	consents map[string][]policy.ConsentRecord
	// vol is the recipient's volume this calendar year (rules V1–V3),
	// shared by the deciders of one run under volMu.
	vol   *volume
	volMu *sync.Mutex
	// lastActions and lastKept are the last permitted record's actions and
	// keptFields, reused while they stay the same.
	lastActions []policy.FieldAction
	lastKept    string
	// lastBatch and lastGroup are the envelope and the decision group the
	// last record went to: a feed is mostly of one type, decided mostly by
	// one rule, so most records skip both map lookups.
	lastBatch *pending
	lastGroup *decisionGroup
	// maxPlain closes an envelope at this much plaintext
	// (Sharer.EnvelopePlaintext when the run began).
	maxPlain int
	// minors are the subjects whose held records show them under the
	// minor age (carryMinor), read once a run.
	minors *minorState
}

// volume holds the subjects a recipient received in one calendar year and
// the highest level each reached; the counts are of subjects at ≥L3, at
// ≥L4 and at any level. A node keeps one per recipient, under shareMu,
// loaded from the deliveries table once a year; a run counts a subject when
// it decides to send it, so a run that fails over-counts until the state is
// loaded again (stricter, never looser).
type volume struct {
	year                 int
	seen                 map[subjectKey]schema.Level
	volL3, volL4, volAny int
}

// subjectKey is a subject's evidence hash (evidence.Log.Subject) in
// binary: the key of volume.seen, which holds every subject a recipient
// received in a year, so hashing and comparing 16 bytes rather than 32
// characters is worth a few lines.
type subjectKey [16]byte

func keyOf(subject string) subjectKey {
	var k subjectKey
	if len(subject) == hex.EncodedLen(len(k)) {
		if _, err := hex.Decode(k[:], []byte(subject)); err == nil {
			return k
		}
	}
	// Not a subject hash (never written so): a key of its own all the same.
	sum := sha256.Sum256([]byte(subject))
	copy(k[:], sum[:])
	return k
}

// load reads what decisions need besides the record: the consent ledger
// for the agreement's purpose and the recipient's volume this year.
func (s *shareRun) load(ctx context.Context) error {
	var err error
	if s.consents, err = s.n.consents(ctx, s.a.Purpose); err != nil {
		return err
	}
	now := s.n.now()
	if v := s.n.volumes[s.a.Recipient]; v != nil && v.year == now.Year() {
		s.vol = v
		return nil
	}
	year := time.Date(now.Year(), 1, 1, 0, 0, 0, 0, now.Location())
	v := &volume{year: now.Year(), seen: map[subjectKey]schema.Level{}}
	var bad error
	err = s.n.out.Volume(ctx, s.a.Recipient, year, func(subj, lvl string) {
		l, err := schema.ParseLevel(lvl)
		if err != nil {
			bad = fmt.Errorf("read volume: delivery at level %q: %w", lvl, err)
			return
		}
		k := keyOf(subj)
		prev, had := v.seen[k]
		v.count(k, prev, had, l)
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return err
	}
	s.n.volumes[s.a.Recipient] = v
	s.vol = v
	return nil
}

// count adds a delivery at level l of subject k to the year's volume;
// prev and had are what v.seen holds for k.
func (v *volume) count(k subjectKey, prev schema.Level, had bool, l schema.Level) {
	if !had {
		v.volAny++
	}
	if l >= schema.L3 && (!had || prev < schema.L3) {
		v.volL3++
	}
	if l >= schema.L4 && (!had || prev < schema.L4) {
		v.volL4++
	}
	if !had || l > prev {
		v.seen[k] = l
	}
}

// Share sends every record the node holds of the agreement's record types
// that has not yet gone out under it, as far as policy permits: each record
// is decided alone; permitted records are transformed as the decision says,
// packed into envelopes per record type, sealed to the recipient, signed,
// and written to the outbox together with the decision's evidence. The
// relay then publishes them. Denied records are counted by reason and stay
// eligible for a later share.
func (n *Sharer) Share(ctx context.Context, agreementID string) (Result, error) {
	return n.share(ctx, agreementID, 0, 0, math.MaxInt64)
}

// share is Share of the records ingested at or after since (Unix ms)
// whose id is above after and at most upto.
func (n *Sharer) share(ctx context.Context, agreementID string, since, after, upto int64) (Result, error) {
	return n.run(ctx, agreementID, func(base *shareRun, pages chan<- []heldRecord) error {
		types := make([]string, 0, len(base.a.RecordTypes))
		for t := range base.a.RecordTypes {
			types = append(types, t)
		}
		sort.Strings(types)
		for _, typ := range types {
			if err := base.readHeld(ctx, typ, since, after, upto, pages); err != nil {
				return err
			}
		}
		return nil
	})
}

// shareRows is share of rows, records an ingest has just stored, as the
// ingest read them: those of the agreement's record types ingested at or
// after since (Unix ms) that no share has sent under it yet. Nothing is
// read back from the records table but which of them went out already.
func (n *Sharer) shareRows(ctx context.Context, agreementID string, since int64, rows []heldRecord) (Result, error) {
	return n.run(ctx, agreementID, func(base *shareRun, pages chan<- []heldRecord) error {
		sent, err := base.sharedAmong(ctx, rows[0].id, rows[len(rows)-1].id)
		if err != nil {
			return err
		}
		const page = 1000
		got := make([]heldRecord, 0, page)
		for _, r := range rows {
			if _, ok := base.a.RecordTypes[r.typ]; !ok || r.ingestedMs < since || sent[r.id] {
				continue
			}
			if got = append(got, r); len(got) == page {
				if err := sendPage(ctx, pages, got); err != nil {
					return err
				}
				got = make([]heldRecord, 0, page)
			}
		}
		if len(got) > 0 {
			if err := sendPage(ctx, pages, got); err != nil {
				return err
			}
		}
		return nil
	})
}

// sendPage hands a page of held records to a run's deciders, or gives up
// when ctx ends.
func sendPage(ctx context.Context, pages chan<- []heldRecord, got []heldRecord) error {
	select {
	case pages <- got:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sharedAmong are the records with ids from first to last that went out
// under the run's agreement already.
func (s *shareRun) sharedAmong(ctx context.Context, first, last int64) (map[int64]bool, error) {
	rows, err := s.n.db.R.QueryContext(ctx, `SELECT record_id FROM shared WHERE agreement = ? AND record_id BETWEEN ? AND ?`,
		s.a.ID, first, last)
	if err != nil {
		return nil, fmt.Errorf("share: read shared: %w", err)
	}
	defer rows.Close()
	sent := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("share: read shared: %w", err)
		}
		sent[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("share: read shared: %w", err)
	}
	return sent, nil
}

// run runs a share under agreementID of the held records feed hands to
// pages, holding the shares lock: sendWorkers deciders, as in Send, parse
// and decide them.
func (n *Sharer) run(ctx context.Context, agreementID string, feed func(base *shareRun, pages chan<- []heldRecord) error) (Result, error) {
	n.lock.Lock()
	defer n.lock.Unlock()
	base, err := n.newShareRun(ctx, agreementID)
	if err == nil {
		err = base.load(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	base.sl = n.startSealer(ctx, base)
	// Whatever happens, the sealer is closed and waited for before the
	// shares lock is released: nothing of this run commits after it
	// returns.
	defer base.finish()

	pages := make(chan []heldRecord, 2*sendWorkers)
	workers := make([]*shareRun, sendWorkers)
	errs := make([]error, sendWorkers)
	var wg sync.WaitGroup
	for w := range workers {
		workers[w] = base.fork()
		wg.Go(func() {
			s := workers[w]
			parsers := map[string]*schema.LineParser{} // held bodies have no "type" member: the parser gives it
			row := new(schema.Row)
			for page := range pages {
				if errs[w] != nil {
					continue // drain
				}
				for _, r := range page {
					if r.row != nil {
						if errs[w] = s.decideKept(ctx, r.row, r.rowLabels, r.id); errs[w] != nil {
							break
						}
						continue
					}
					p := parsers[r.typ]
					if p == nil {
						p = schema.NewLineParser(r.typ)
						parsers[r.typ] = p
					}
					if errs[w] = s.decideStored(ctx, p, row, r.id, r.body, r.labels); errs[w] != nil {
						break
					}
				}
			}
			if errs[w] == nil {
				errs[w] = s.flushBatches(ctx)
			}
		})
	}
	readErr := feed(base, pages)
	close(pages)
	wg.Wait()
	sealErr := base.finish()
	res := base.merge(workers)
	return res, errors.Join(append([]error{readErr, sealErr}, errs...)...)
}

// heldRecord is a held record as a share reads it.
type heldRecord struct {
	id           int64
	typ          string
	body, labels []byte // in clear
	ingestedMs   int64  // when the node stored it (Unix ms)
	// row and rowLabels are the record as an ingest parsed and classified
	// it, when it kept them (shareRows); nil: parse body and labels.
	row       *schema.Row
	rowLabels schema.Labels
}

// merge sums the results of a run's deciders.
func (s *shareRun) merge(workers []*shareRun) Result {
	res := Result{Agreement: s.a.ID, Recipient: s.a.Recipient, Denied: map[string]int{}, Envelopes: s.res.Envelopes}
	for _, w := range workers {
		res.Considered += w.res.Considered
		res.Permitted += w.res.Permitted
		for k, v := range w.res.Denied {
			res.Denied[k] += v
		}
	}
	return res
}

// newShareRun prepares a share under agreementID: the agreement must name
// this node as provider, and the recipient must be a member with a KEM key.
func (n *Sharer) newShareRun(ctx context.Context, agreementID string) (*shareRun, error) {
	a, err := n.agreements.Get(ctx, agreementID)
	if err != nil {
		return nil, err
	}
	if a.Provider != n.nodeID {
		return nil, fmt.Errorf("share under agreement %s: this node is not its provider", a.ID)
	}
	// A node the authority revoked shares nothing: its peers would refuse
	// it all.
	if err := n.reg.CheckRevoked(n.nodeID, n.keys.Signing.Public().KeyID(), n.now()); err != nil {
		return nil, fmt.Errorf("share under agreement %s: this node: %w", a.ID, err)
	}
	cred, err := n.reg.Lookup(ctx, a.Recipient)
	if err != nil {
		return nil, fmt.Errorf("share under agreement %s: recipient: %w", a.ID, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return nil, fmt.Errorf("share under agreement %s: recipient %s has no KEM key", a.ID, a.Recipient)
	}
	if err := n.reg.CheckRevoked(a.Recipient, to.KeyID(), n.now()); err != nil {
		return nil, fmt.Errorf("share under agreement %s: recipient: %w", a.ID, err)
	}
	// The run decides on a copy whose field lists are sorted: policy walks
	// sorted lists in step with the sorted fields of a record.
	sorted := *a
	sorted.RecordTypes = make(map[string][]string, len(a.RecordTypes))
	for t, fields := range a.RecordTypes {
		sorted.RecordTypes[t] = slices.Sorted(slices.Values(fields))
	}
	a = &sorted
	return &shareRun{
		n: n, a: a, to: to, role: cred.Role,
		tokenKey:  n.keys.TokenKey(a.Recipient),
		res:       Result{Agreement: a.ID, Recipient: a.Recipient, Denied: map[string]int{}},
		batches:   map[string]*pending{},
		decisions: map[[2]string]*decisionGroup{},
		volMu:     &sync.Mutex{},
		maxPlain:  n.EnvelopePlaintext(),
		minors:    &minorState{},
	}, nil
}

// readHeld reads the held records of one type not yet shared under the
// run's agreement, ingested at or after since (Unix ms), with ids above
// after and at most upto, a page at a time into pages, so memory stays
// flat.
func (s *shareRun) readHeld(ctx context.Context, typ string, since, after, upto int64, pages chan<- []heldRecord) error {
	return s.readRecords(ctx, "share", typ, heldRange{since: since, after: after, upto: upto, unshared: true}, func(got []heldRecord) error {
		return sendPage(ctx, pages, got)
	})
}

// heldRange is which held records of a type readRecords reads: ingested
// at or after since (Unix ms), with ids above after and at most upto, and,
// when unshared, only those not yet shared under the run's agreement.
type heldRange struct {
	since, after, upto int64
	unshared           bool
}

// The queries of readRecords: every record of the range, or those not
// yet shared under the agreement.
const (
	qHeld = `SELECT id, key, body, labels, ingested_ms FROM records r
			WHERE type = ? AND id > ? AND id <= ? AND ingested_ms >= ?
			ORDER BY id LIMIT ?`
	qHeldUnshared = `SELECT id, key, body, labels, ingested_ms FROM records r
			WHERE type = ? AND id > ? AND id <= ? AND ingested_ms >= ? AND NOT EXISTS (SELECT 1 FROM shared s WHERE s.agreement = ? AND s.record_id = r.id)
			ORDER BY id LIMIT ?`
)

// readRecords reads the held records of type typ in range hr, opened, a
// page at a time in order of id, and hands each non-empty page to fn, so
// memory stays flat. Its errors start with what (the caller: share,
// release).
func (s *shareRun) readRecords(ctx context.Context, what, typ string, hr heldRange, fn func([]heldRecord) error) error {
	const page = 1000
	after := hr.after
	for {
		q, args := qHeld, []any{typ, after, hr.upto, hr.since, page}
		if hr.unshared {
			q, args = qHeldUnshared, []any{typ, after, hr.upto, hr.since, s.a.ID, page}
		}
		rows, err := s.n.db.R.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("%s: read records: %w", what, err)
		}
		got := make([]heldRecord, 0, page)
		for rows.Next() {
			r := heldRecord{typ: typ}
			var key []byte
			if err := rows.Scan(&r.id, &key, &r.body, &r.labels, &r.ingestedMs); err == nil {
				r.body, r.labels, err = s.n.openHeld(key, r.body, r.labels)
			}
			if err != nil {
				rows.Close()
				return fmt.Errorf("%s: read record %d: %w", what, r.id, err)
			}
			got = append(got, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s: read records: %w", what, err)
		}
		if len(got) > 0 {
			if err := fn(got); err != nil {
				return err
			}
		}
		if len(got) < page {
			return nil
		}
		after = got[len(got)-1].id
	}
}

// decideStored decides a record held in the records table, parsed into
// row by position (no map), with the classification stored at ingest
// (stored; nil for a record held from before labels were stored).
func (s *shareRun) decideStored(ctx context.Context, parser *schema.LineParser, row *schema.Row, id int64, body, stored []byte) error {
	now := s.n.now()
	var labels schema.Labels
	var err error
	if verr := parser.ParseRow(body, s.n.std, row); verr != nil {
		err = verr
	} else {
		labels, err = s.n.labels(row, stored, now)
	}
	if err != nil {
		// The record was valid at ingest; the standard has changed since.
		// It cannot be judged, so it does not leave.
		s.n.log.Warn("stored record does not validate under the standard; not shared", "record", id, "err", err)
		return nil
	}
	return s.decide(ctx, record{row: row}, labels, id, now)
}

// decideKept decides a record an ingest has just stored as the ingest
// parsed and classified it (row, labels): its classification at ingest
// is the one a share of the held record would read, and, as there, a
// minor's record is classified again at the time of the share (C3).
func (s *shareRun) decideKept(ctx context.Context, row *schema.Row, labels schema.Labels, id int64) error {
	now := s.n.now()
	if slices.Contains(labels.Flags, "minor") {
		l, err := s.n.std.ClassifyRow(row, now)
		if err != nil {
			s.n.log.Warn("stored record does not validate under the standard; not shared", "record", id, "err", err)
			return nil
		}
		labels = l
	}
	return s.decide(ctx, record{row: row}, labels, id, now)
}

// Unshare forgets that the records of envelope eid were shared: the
// envelope was dropped before it left, and they may be shared again.
func (n *Sharer) Unshare(ctx context.Context, tx *sql.Tx, eid string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM shared WHERE envelope_id = ?`, eid); err != nil {
		return fmt.Errorf("unmark shared: %w", err)
	}
	return nil
}

// labels is the classification of a held record at now: the one stored at
// ingest, which is the record's at any later time unless it was a minor's
// (C3 depends on the date: a minor comes of age) or another standard made
// it. The record is classified again in those cases, and when the stored
// labels do not parse.
func (n *Sharer) labels(row *schema.Row, stored []byte, now time.Time) (schema.Labels, error) {
	if stored != nil {
		l, err := n.std.ParseLabels(stored)
		switch {
		case err == nil && !slices.Contains(l.Flags, "minor"):
			return l, nil
		case err != nil && !errors.Is(err, schema.ErrOtherStandard):
			n.log.Warn("stored classification unreadable; classifying the record again", "err", err)
		}
	}
	return n.std.ClassifyRow(row, now)
}

// Lock takes the shares lock: while it is held, no share or send commits.
func (n *Sharer) Lock() { n.lock.Lock() }

// Unlock releases the shares lock.
func (n *Sharer) Unlock() { n.lock.Unlock() }
