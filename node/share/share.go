// Package share owns the records a node holds and what leaves with them:
// ingest validates and classifies records into the records table, and a
// share decides each record alone under an agreement (policy, consent,
// the yearly volume), writes what leaves as the recipient may see it,
// seals it into envelopes and writes them to the outbox with the evidence
// of every decision, marking in the shared table which records went out
// under which agreement. Send does the same for a stream of records the
// node does not keep.
//
// It must never send a record policy did not permit, never commit a
// decision without its evidence, never assign a sequence number out of
// commit order (one share at a time holds the shares lock), and never
// keep a denied record from a later share.
package share

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
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
}

// New is the sharer of the records in c.DB.
func New(c Config) *Sharer {
	return &Sharer{nodeID: c.NodeID, std: c.Std, rules: c.Rules, db: c.DB, ev: c.Evidence, m: c.Metrics, log: c.Logger,
		now: c.Now, keys: c.Keys, reg: c.Registry, codec: c.Codec, out: c.Outbox, agreements: c.Agreements,
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
	n.lock.Lock()
	defer n.lock.Unlock()
	s, err := n.newShareRun(ctx, agreementID)
	if err == nil {
		err = s.load(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	// Whatever happens, the sealer is closed and waited for before shareMu
	// is released: nothing of this run commits after it returns.
	defer s.finish()
	types := make([]string, 0, len(s.a.RecordTypes))
	for t := range s.a.RecordTypes {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, typ := range types {
		if err := s.shareType(ctx, typ); err != nil {
			return s.res, err
		}
	}
	if err := s.flushAll(ctx); err != nil {
		return s.res, err
	}
	return s.res, nil
}

// SendResult sums up one Send: the share figures and the records refused
// by validation.
type SendResult struct {
	Result
	Invalid int           `json:"invalid"`
	Errors  []RecordError `json:"errors,omitempty"`
}

// Send streams records from r straight through classification and policy
// to the agreement's recipient, without keeping them at this node: each
// record is validated and classified as at ingest, decided alone, and the
// permitted ones sealed into envelopes that are written to the outbox with
// the evidence of every decision. It is the path for feeds that are
// forwarded rather than held (and the path `eduspace bench` measures).
func (n *Sharer) Send(ctx context.Context, agreementID string, r schema.Reader) (SendResult, error) {
	n.lock.Lock()
	defer n.lock.Unlock()
	base, err := n.newShareRun(ctx, agreementID)
	if err == nil {
		err = base.load(ctx)
	}
	if err != nil {
		return SendResult{}, err
	}
	base.sl = n.startSealer(ctx, base)
	defer base.finish() // on an early return; a no-op after the one below

	// The reader hands chunks of records to sendWorkers deciders, each with
	// its own envelopes, decisions and tokenizer; they share the volume
	// state (under a lock) and the sealer. From an NDJSON reader the chunks
	// carry raw lines and the deciders parse them too, each into one reused
	// row (schema.Row: values by field position, no map): only splitting
	// lines stays in the reading goroutine.
	lines, _ := r.(lineReader)
	type item struct {
		rec  schema.Record
		line []byte // the unparsed record (lines only)
		idx  int
	}
	// A chunk's lines live in its arena until its decider is done with it:
	// nothing decided keeps a line (rows are reused, subjects are hashed,
	// names interned), so deciders hand chunks back to be filled again
	// instead of the reader taking fresh memory for every 64 lines.
	type chunkBuf struct {
		items []item
		arena []byte
	}
	chunks := make(chan chunkBuf, 2*sendWorkers)
	free := make(chan chunkBuf, 4*sendWorkers)
	workers := make([]*shareRun, sendWorkers)
	irs := make([]IngestResult, sendWorkers)
	errs := make([]error, sendWorkers)
	var wg sync.WaitGroup
	for w := range workers {
		workers[w] = base.fork()
		wg.Go(func() {
			s := workers[w]
			var parser *schema.LineParser
			if lines != nil {
				parser = lines.Parser()
				parser.ShareLines() // a line keeps its place in its chunk's arena until the chunk is handed back, after its records are decided
			}
			row := new(schema.Row)
			for chunk := range chunks {
				if errs[w] != nil {
					continue // drain
				}
				now := n.now() // one reading per chunk: records of a chunk are decided within a millisecond or so
				for _, it := range chunk.items {
					var labels schema.Labels
					var r record
					var err error
					if it.line != nil {
						if verr := parser.ParseRow(it.line, n.std, row); verr != nil {
							err = verr
						} else {
							labels, err = n.std.ClassifyRow(row, now)
						}
						r.row = row
					} else {
						labels, err = n.std.Classify(it.rec, now)
						r.rec = &it.rec
					}
					var verr *schema.ValidationError
					if errors.As(err, &verr) {
						irs[w].reject(it.idx, verr)
						n.m.Invalid.WithLabelValues(verr.Reason).Inc()
						continue
					}
					if err == nil {
						err = s.decide(ctx, r, labels, 0, now)
					}
					if err != nil {
						errs[w] = err
						break
					}
				}
				clear(chunk.items) // records held by a reader of records
				select {
				case free <- chunkBuf{chunk.items[:0], chunk.arena[:0]}:
				default:
				}
			}
			if errs[w] == nil {
				errs[w] = s.flushBatches(ctx)
			}
		})
	}
	var ir IngestResult
	var readErr error
	chunk := make([]item, 0, sendChunk)
	var arena []byte // the chunk's lines, copied out of the reader's buffer
	next := func() {
		select {
		case c := <-free:
			chunk, arena = c.items, c.arena
		default:
			chunk, arena = make([]item, 0, sendChunk), make([]byte, 0, len(arena))
		}
	}
	for {
		var it item
		var err error
		if lines != nil {
			var line []byte
			line, it.idx, err = lines.NextLine()
			if err == nil {
				start := len(arena)
				arena = append(arena, line...)
				it.line = arena[start:len(arena):len(arena)]
			}
		} else {
			it.rec, it.idx, err = r.Next()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		var verr *schema.ValidationError
		if errors.As(err, &verr) {
			ir.reject(it.idx, verr)
			n.m.Invalid.WithLabelValues(verr.Reason).Inc()
			continue
		}
		if err != nil {
			readErr = fmt.Errorf("send: read: %w", err)
			break
		}
		chunk = append(chunk, it)
		if len(chunk) == sendChunk {
			chunks <- chunkBuf{chunk, arena}
			next()
		}
	}
	if len(chunk) > 0 {
		chunks <- chunkBuf{chunk, arena}
	}
	close(chunks)
	wg.Wait()
	sealErr := base.finish()

	res := SendResult{Result: Result{Agreement: base.a.ID, Recipient: base.a.Recipient, Denied: map[string]int{},
		Envelopes: base.res.Envelopes}}
	for w, s := range workers {
		res.Considered += s.res.Considered
		res.Permitted += s.res.Permitted
		for k, v := range s.res.Denied {
			res.Denied[k] += v
		}
		ir.Invalid += irs[w].Invalid
		ir.Errors = append(ir.Errors, irs[w].Errors...)
	}
	sort.Slice(ir.Errors, func(i, j int) bool { return ir.Errors[i].Index < ir.Errors[j].Index })
	if len(ir.Errors) > 1000 {
		ir.Errors = ir.Errors[:1000]
	}
	res.Invalid, res.Errors = ir.Invalid, ir.Errors
	return res, errors.Join(append([]error{readErr, sealErr}, errs...)...)
}

// lineReader is a reader of records that can hand out unparsed lines and
// parsers for them (schema.NDJSONReader), so that Send parses in its
// deciding goroutines.
type lineReader interface {
	NextLine() ([]byte, int, error)
	Parser() *schema.LineParser
}

// sendWorkers is how many goroutines decide records in Send; sendChunk how
// many records the reader hands one at a time.
const (
	sendWorkers = 2
	sendChunk   = 64
)

// fork returns a decider sharing s's agreement, recipient, consents, volume
// state and sealer, with envelopes, decisions and results of its own.
func (s *shareRun) fork() *shareRun {
	return &shareRun{
		n: s.n, a: s.a, to: s.to, role: s.role, tokenKey: s.tokenKey,
		res:       Result{Agreement: s.a.ID, Recipient: s.a.Recipient, Denied: map[string]int{}},
		batches:   map[string]*pending{},
		decisions: map[[2]string]*decisionGroup{},
		sl:        s.sl, consents: s.consents, vol: s.vol, volMu: s.volMu, maxPlain: s.maxPlain,
	}
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
		tokenKey:  crypto.TokenKey(n.keys.Derive("tokens"), a.Recipient),
		res:       Result{Agreement: a.ID, Recipient: a.Recipient, Denied: map[string]int{}},
		batches:   map[string]*pending{},
		decisions: map[[2]string]*decisionGroup{},
		volMu:     &sync.Mutex{},
		maxPlain:  n.EnvelopePlaintext(),
	}, nil
}

// shareType walks the records of one type in pages, so memory stays flat.
func (s *shareRun) shareType(ctx context.Context, typ string) error {
	const page = 1000
	var after int64
	for {
		rows, err := s.n.db.R.QueryContext(ctx, `SELECT id, body, labels FROM records r
			WHERE type = ? AND id > ? AND NOT EXISTS (SELECT 1 FROM shared s WHERE s.agreement = ? AND s.record_id = r.id)
			ORDER BY id LIMIT ?`, typ, after, s.a.ID, page)
		if err != nil {
			return fmt.Errorf("share: read records: %w", err)
		}
		type row struct {
			id           int64
			body, labels []byte
		}
		var got []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.body, &r.labels); err != nil {
				rows.Close()
				return fmt.Errorf("share: read records: %w", err)
			}
			got = append(got, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("share: read records: %w", err)
		}
		for _, r := range got {
			if err := s.decideStored(ctx, typ, r.id, r.body, r.labels); err != nil {
				return err
			}
		}
		if len(got) < page {
			return nil
		}
		after = got[len(got)-1].id
	}
}

// decideStored decides a record held in the records table, with the
// classification stored at ingest (stored, nil for a record held from
// before labels were stored).
func (s *shareRun) decideStored(ctx context.Context, typ string, id int64, body, stored []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	rec := schema.Record{Type: typ}
	if err := dec.Decode(&rec.Fields); err != nil {
		return fmt.Errorf("share: decode stored record %d: %w", id, err)
	}
	now := s.n.now()
	labels, err := s.n.labels(rec, stored, now)
	if err != nil {
		// The record was valid at ingest; the standard has changed since.
		// It cannot be judged, so it does not leave.
		s.n.log.Warn("stored record no longer validates; not shared", "record", id, "err", err)
		return nil
	}
	return s.decide(ctx, record{rec: &rec}, labels, id, now)
}

// record is a record to decide: a map record (held, or from a reader of
// records) or a row parsed from an NDJSON line.
type record struct {
	rec *schema.Record
	row *schema.Row
}

// appendWire appends the record as one wire line, as d says.
func (r record) appendWire(dst []byte, d policy.Decision, tz *crypto.Tokenizer) []byte {
	if r.row != nil {
		return policy.AppendRow(dst, r.row, d, tz)
	}
	return policy.AppendRecord(dst, *r.rec, d, tz)
}

// decide decides one classified record (id is its row in the records
// table, 0 for a streamed record) at now and packs it when permitted.
func (s *shareRun) decide(ctx context.Context, rec record, labels schema.Labels, id int64, now time.Time) error {
	n := s.n
	typ := labels.Type
	s.res.Considered++
	sk := subjectKey(n.ev.SubjectSum(labels.Subject))
	subject := hex.EncodeToString(sk[:])
	b := s.lastBatch
	if b == nil || b.typ != typ {
		if b = s.batches[typ]; b == nil {
			b = &pending{typ: typ}
			s.batches[typ] = b
		}
		s.lastBatch = b
	}
	var last *policy.Decision
	if b.last.Permit {
		last = &b.last
	}
	s.volMu.Lock()
	prev, had := s.vol.seen[sk]
	d := policy.Decide(n.rules, policy.Input{
		Provider: n.nodeID, Recipient: s.a.Recipient, RecipientRole: string(s.role),
		Labels: labels, Agreement: s.a, Consent: s.consentState(labels, now),
		VolumeSoFar:    s.vol.volL3 - b2i(had && prev >= schema.L3),
		SensitiveSoFar: s.vol.volL4 - b2i(had && prev >= schema.L4),
		SubjectsSoFar:  s.vol.volAny - b2i(had),
		Now:            now,
		Previous:       last,
	})
	if d.Permit {
		s.vol.count(sk, prev, had, d.Level)
	}
	s.volMu.Unlock()
	g := s.lastGroup
	if g == nil || g.rule != d.Rule || g.reason != string(d.Reason) {
		g = s.decisionGroup(d)
	}
	g.subjects = append(g.subjects, subject)
	g.counter.Inc()
	if !d.Permit {
		s.res.Denied[string(d.Reason)]++
		return nil
	}
	s.res.Permitted++
	b.last = d
	if s.tz == nil {
		s.tz = crypto.NewTokenizer(s.tokenKey)
	}
	b.buf = rec.appendWire(b.buf, d, s.tz)
	b.count++
	b.level = max(b.level, d.Level)
	if id != 0 {
		b.records = append(b.records, id)
	}
	b.subjects = append(b.subjects, subject)
	b.items = append(b.items, deliveryItem{subject: subject, level: d.Level, fields: s.keptFields(d)})
	if b.count >= n.maxRecords || len(b.buf) >= s.maxPlain {
		return s.flush(ctx, b)
	}
	return nil
}

// decisionGroup returns the group of the decisions made by d's rule for
// d's reason since the last envelope, and makes it the last group.
func (s *shareRun) decisionGroup(d policy.Decision) *decisionGroup {
	key := [2]string{d.Rule, string(d.Reason)}
	g := s.decisions[key]
	if g == nil {
		outcome := "deny"
		if d.Permit {
			outcome = "permit"
		}
		g = &decisionGroup{rule: d.Rule, reason: string(d.Reason),
			counter: s.n.m.Decisions.WithLabelValues(outcome, string(d.Reason))}
		s.decisions[key] = g
	}
	s.lastGroup = g
	return g
}

// maxEnvelopePlaintext is the most plaintext an envelope closes at,
// whatever batch.max_records says: with a record of MaxLineBytes more, it
// stays within the 8 MiB that crypto.Open and a receiver's decompression
// accept.
const maxEnvelopePlaintext = 4 << 20

// EnvelopePlaintext is the plaintext at which this node's envelopes close:
// half the largest message its NATS server accepts, at most
// maxEnvelopePlaintext. An envelope closes once it reaches that, so it
// exceeds it by less than one record: sealed, it fits the server even if
// its records do not compress, unless that record is itself near half the
// server's maximum. NATS's default maximum of 1 MiB gives 512 KiB, about
// 900 records of 600 bytes; the embedded server's 8 MiB
// (bus.EmbeddedMaxPayload) gives 4 MiB. A server that does not say gives
// 512 KiB.
func (n *Sharer) EnvelopePlaintext() int { return envelopePlaintextFor(n.maxPayload()) }

func envelopePlaintextFor(maxPayload int64) int {
	if maxPayload <= 0 {
		return 512 << 10
	}
	return int(max(min(maxPayload/2, maxEnvelopePlaintext), 1))
}

// flushAll hands what is left to the sealer and waits until everything
// is committed.
func (s *shareRun) flushAll(ctx context.Context) error {
	if err := s.flushBatches(ctx); err != nil {
		return err
	}
	return s.finish()
}

// flushBatches hands the partly filled envelopes and the last decisions to
// the sealer.
func (s *shareRun) flushBatches(ctx context.Context) error {
	types := make([]string, 0, len(s.batches))
	for t := range s.batches {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		if b := s.batches[t]; b.count > 0 {
			if err := s.flush(ctx, b); err != nil {
				return err
			}
		}
	}
	if len(s.decisions) > 0 {
		s.submit(ctx, sealJob{decisions: s.decisions})
		s.decisions, s.lastGroup = map[[2]string]*decisionGroup{}, nil
	}
	return nil
}

// finish closes the sealer and waits until it has committed everything.
func (s *shareRun) finish() error {
	if s.sl == nil || s.sl.closed {
		return nil
	}
	s.sl.closed = true
	close(s.sl.jobs)
	<-s.sl.done
	s.res.Envelopes = s.sl.envelopes
	if s.sl.err != nil {
		delete(s.n.volumes, s.a.Recipient) // counted what did not go: load again
	}
	return s.sl.err
}

// flush hands a full envelope, with the decisions made since the last one,
// to the sealer and starts a new envelope.
func (s *shareRun) flush(ctx context.Context, b *pending) error {
	if s.sl != nil && s.sl.failed.Load() {
		return s.sl.err // set before failed; the run ends, finish waits
	}
	job := sealJob{b: *b, decisions: s.decisions}
	s.decisions, s.lastGroup = map[[2]string]*decisionGroup{}, nil
	buf, _ := wireBufs.Get().(*[]byte)
	if buf == nil || cap(*buf) < len(job.b.buf) {
		buf = new([]byte)
		*buf = make([]byte, 0, len(job.b.buf))
	}
	*b = pending{typ: b.typ, buf: (*buf)[:0], last: b.last,
		subjects: make([]string, 0, len(job.b.subjects)), items: make([]deliveryItem, 0, len(job.b.items))}
	s.submit(ctx, job)
	return nil
}

func (s *shareRun) submit(ctx context.Context, job sealJob) {
	if s.sl == nil {
		s.sl = s.n.startSealer(ctx, s)
	}
	s.sl.jobs <- job
}

// sealJob is a full envelope (or none) and the decisions made before it,
// handed from the deciding goroutine to the sealer.
type sealJob struct {
	b         pending
	decisions map[[2]string]*decisionGroup
}

// sealer seals envelopes and commits them, in groups, while the deciding
// goroutine goes on: sealing and the database overlap classification.
type sealer struct {
	jobs      chan sealJob
	done      chan struct{}
	failed    atomic.Bool
	err       error // valid once failed is set, or done is closed
	closed    bool  // finish has run
	envelopes int   // valid once done is closed
	nextSeq   int64
}

// sealGroup is how many envelopes at most one transaction commits.
const sealGroup = 16

func (n *Sharer) startSealer(ctx context.Context, s *shareRun) *sealer {
	sl := &sealer{jobs: make(chan sealJob, 8), done: make(chan struct{})}
	// Sequence numbers of this share are assigned in submission order, which
	// is commit order: Share and Send hold shareMu, so nothing else assigns
	// records sequence numbers to this recipient meanwhile. A failed commit
	// ends the run and leaves next_out where it was.
	var err error
	if sl.nextSeq, err = n.out.NextSeq(ctx, s.a.Recipient, crypto.KindRecords); err != nil {
		sl.err = fmt.Errorf("share: %w", err)
		sl.failed.Store(true)
	}
	// jobs → dispatcher (assigns sequence numbers) → sealers (in parallel)
	// → committer (in order, in groups of what is ready).
	work := make(chan *sealed, 16)
	ordered := make(chan *sealed, 64)
	go func() {
		seq := sl.nextSeq
		for job := range sl.jobs {
			e := &sealed{job: job, ready: make(chan struct{})}
			if job.b.count > 0 {
				e.seq = seq
				seq++
				work <- e
			} else {
				close(e.ready)
			}
			ordered <- e
		}
		close(work)
		close(ordered)
	}()
	for w := 0; w < sealWorkers; w++ {
		go func() {
			for e := range work {
				e.err = s.seal(e)
				close(e.ready)
			}
		}()
	}
	go func() {
		defer close(sl.done)
		for e := range ordered {
			<-e.ready
			group := []*sealed{e}
		more:
			for len(group) < sealGroup {
				select {
				case next, ok := <-ordered:
					if !ok {
						break more
					}
					<-next.ready
					group = append(group, next)
				default:
					break more
				}
			}
			if sl.failed.Load() {
				continue // drain: the run has failed
			}
			if err := s.commitGroup(ctx, sl, group); err != nil {
				sl.err = err
				sl.failed.Store(true)
			}
		}
	}()
	return sl
}

// sealWorkers is how many envelopes are sealed at once.
const sealWorkers = 2

// sealed is an envelope on its way from the decider to the outbox.
type sealed struct {
	job   sealJob
	seq   int64
	eid   string
	data  []byte
	err   error
	ready chan struct{} // closed when data (or err) is set
}

// seal seals one envelope with its assigned sequence number.
func (s *shareRun) seal(e *sealed) error {
	eid, data, err := s.n.codec.Seal(crypto.Header{
		Recipient: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose), RecordType: e.job.b.typ,
		Count: uint32(e.job.b.count), Level: e.job.b.level.String(), Kind: crypto.KindRecords,
	}, s.to, e.seq, e.job.b.buf)
	if err != nil {
		return fmt.Errorf("share: %w", err)
	}
	e.eid, e.data = eid, data
	buf := e.job.b.buf[:0] // sealed: nothing refers to the plaintext any more
	e.job.b.buf = nil
	wireBufs.Put(&buf)
	return nil
}

// wireBufs holds envelope plaintext buffers between the sealer, done with
// one, and the next envelope: a few hundred KiB each, taken fresh they
// cost page faults and zeroing at every envelope.
var wireBufs sync.Pool

// The statements of commitGroup.
var (
	qInsertShared = store.NewQuery(`INSERT INTO shared(agreement, record_id, envelope_id) VALUES (?, ?, ?)`)
)

// commitGroup commits sealed envelopes in one transaction with the records
// they mark as shared, their deliveries, the evidence of the decisions and
// seals, and the pair's next sequence number.
func (s *shareRun) commitGroup(ctx context.Context, sl *sealer, group []*sealed) error {
	n := s.n
	seq := sl.nextSeq
	for _, e := range group {
		if e.err != nil {
			return e.err
		}
		if e.data != nil {
			seq = e.seq + 1
		}
	}
	subject := n.layout.DeliverSubject(s.a.Recipient, n.nodeID)
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		insShared, err := n.db.Stmt(ctx, tx, qInsertShared) // once per record of held records
		if err != nil {
			return fmt.Errorf("share: %w", err)
		}
		for _, e := range group {
			if err := s.writeDecisions(ctx, tx, e.job.decisions); err != nil {
				return err
			}
			if e.data == nil {
				continue
			}
			b := e.job.b
			fields, items := deliveredJSON(b.items)
			// As text: SQLite reads a JSON blob as JSONB.
			if err := n.out.Add(ctx, tx, outbox.Envelope{ID: e.eid, Recipient: s.a.Recipient, Kind: crypto.KindRecords,
				Subject: subject, Seq: e.seq, Records: b.count, Agreement: s.a.ID, Purpose: string(s.a.Purpose), RecordType: b.typ,
				Held: len(b.records) == b.count}, e.data, string(fields), string(items)); err != nil {
				return fmt.Errorf("share: %w", err)
			}
			for _, id := range b.records {
				if _, err := insShared.ExecContext(ctx, s.a.ID, id, e.eid); err != nil {
					return fmt.Errorf("share: mark shared: %w", err)
				}
			}
			if err := n.ev.Append(ctx, tx, evidence.Entry{
				Kind: evidence.KindSeal, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
				Envelope: e.eid, Count: b.count, Subjects: b.subjects, Detail: map[string]int{b.typ + "/" + b.level.String(): b.count},
			}); err != nil {
				return err
			}
		}
		if seq == sl.nextSeq {
			return nil
		}
		if err := n.out.SetNextSeq(ctx, tx, s.a.Recipient, crypto.KindRecords, seq); err != nil {
			return fmt.Errorf("share: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range group {
		if e.data != nil {
			sl.envelopes++
			n.m.Sealed.Inc()
			n.m.SealedRecords.Add(float64(e.job.b.count))
		}
	}
	sl.nextSeq = seq
	n.out.Wake()
	return nil
}

// deliveredJSON encodes an envelope's deliveries for the delivered table:
// the distinct field lists, and per record its subject, level and the index
// of its field list.
func deliveredJSON(items []deliveryItem) (fields, list []byte) {
	fields, list = append(fields, '['), append(list, '[')
	index := map[string]int{}
	for i, it := range items {
		k, ok := index[it.fields]
		if !ok {
			k = len(index)
			index[it.fields] = k
			if k > 0 {
				fields = append(fields, ',')
			}
			fields = schema.AppendJSONString(fields, it.fields)
		}
		if i > 0 {
			list = append(list, ',')
		}
		list = schema.AppendJSONString(append(list, '['), it.subject)
		list = schema.AppendJSONString(append(list, ','), it.level.String())
		list = append(strconv.AppendInt(append(list, ','), int64(k), 10), ']')
	}
	return append(fields, ']'), append(list, ']')
}

// writeDecisions appends decisions to the evidence log, one entry per rule
// and reason.
func (s *shareRun) writeDecisions(ctx context.Context, tx *sql.Tx, decisions map[[2]string]*decisionGroup) error {
	keys := make([][2]string, 0, len(decisions))
	for k := range decisions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		g := decisions[k]
		if err := s.n.ev.Append(ctx, tx, evidence.Entry{
			Kind: evidence.KindDecide, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
			Rule: g.rule, Reason: g.reason, Count: len(g.subjects), Subjects: g.subjects,
		}); err != nil {
			return err
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// keptFields lists the fields a permitted record takes out, comma-separated.
// Records of one feed mostly take the same fields out: the last list is
// kept and given again while the actions stay the same.
func (s *shareRun) keptFields(d policy.Decision) string {
	same := len(d.Actions) == len(s.lastActions) && (len(d.Actions) == 0 || &d.Actions[0] == &s.lastActions[0]) // policy reused them
	if s.lastKept != "" && (same || slices.Equal(d.Actions, s.lastActions)) {
		return s.lastKept
	}
	s.lastActions = d.Actions // a decision's actions are not modified
	s.lastKept = keptFields(d)
	return s.lastKept
}

func keptFields(d policy.Decision) string {
	var b []byte
	for _, a := range d.Actions {
		if a.Transform == policy.TransformDrop {
			continue
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = append(b, a.Field...)
	}
	return string(b)
}

// Unshare forgets that the records of envelope eid were shared: the
// envelope was dropped before it left, and they may be shared again.
func (n *Sharer) Unshare(ctx context.Context, tx *sql.Tx, eid string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM shared WHERE envelope_id = ?`, eid); err != nil {
		return fmt.Errorf("unmark shared: %w", err)
	}
	return nil
}

// consentState is what the ledger says for one record about to be decided.
// It is looked up only where consent can matter: a consent basis, sensitive
// data, or a minor.
func (s *shareRun) consentState(labels schema.Labels, now time.Time) policy.Consent {
	if len(s.consents) == 0 {
		return policy.Consent{}
	}
	need := s.a.LegalBasis == policy.BasisConsent || labels.Level >= s.n.rules.SensitiveLevel
	for _, f := range labels.Flags {
		need = need || f == "minor"
	}
	if !need {
		return policy.Consent{}
	}
	recs := s.consents[labels.Subject]
	if len(recs) == 0 {
		return policy.Consent{}
	}
	cats := policy.LeavingCategories(s.n.rules, s.a, labels)
	return policy.ConsentState(recs, labels.Subject, s.a.Purpose, s.a.Recipient, cats, now)
}

// labels is the classification of a held record at now: the one stored at
// ingest, which is the record's at any later time unless it was a minor's
// (C3 depends on the date: a minor comes of age) or another standard made
// it. The record is classified again in those cases, and when the stored
// labels do not parse.
func (n *Sharer) labels(rec schema.Record, stored []byte, now time.Time) (schema.Labels, error) {
	if stored != nil {
		l, err := n.std.ParseLabels(stored)
		switch {
		case err == nil && !slices.Contains(l.Flags, "minor"):
			return l, nil
		case err != nil && !errors.Is(err, schema.ErrOtherStandard):
			n.log.Warn("stored classification unreadable; classifying the record again", "err", err)
		}
	}
	return n.std.Classify(rec, now)
}

// Lock takes the shares lock: while it is held, no share or send commits.
func (n *Sharer) Lock() { n.lock.Lock() }

// Unlock releases the shares lock.
func (n *Sharer) Unlock() { n.lock.Unlock() }
