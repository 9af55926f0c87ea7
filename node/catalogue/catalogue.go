// Package catalogue owns a node's catalogue of offered datasets
// (CATALOGUE.md): the datasets its operator offers (table
// catalogue_offers), their noised row counts, drawn once per set of record
// types and UTC day (catalogue_rows), and the catalogues the space's other members
// published to it (catalogue_received). It publishes the node's offers to
// every member in signed, sealed envelopes of kind 9, checks and stores
// the members' catalogues, and serves the node's own datasets at a
// Dataspace Protocol 2024/1 catalogue endpoint (dsp.go).
//
// It must never publish, store or serve a row count that is not noised,
// never draw a day's noise for a dataset twice (asking again would
// average it away), never put personal data in an offer or a catalogue
// (they carry field names, labels and noised counts only), never accept
// a catalogue whose publisher is not the member that signed it, and never
// read another package's tables: row counts come through Config.Rows.
package catalogue

import (
	"cmp"
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
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
)

// ErrUnknown is returned for a dataset the catalogue does not hold.
var ErrUnknown = errors.New("unknown dataset")

// ErrAuditor is returned when an auditor's node is asked to offer or
// publish: it sends no envelope.
var ErrAuditor = errors.New("an auditor's node offers no datasets and sends no envelope")

// ErrAmbiguous is returned when a dataset id names datasets of more than
// one publisher and none was given.
var ErrAmbiguous = errors.New("dataset id offered by more than one member")

// The noise of the row counts (CATALOGUE.md §3): one draw of the discrete
// Gaussian N_Z(0, σ²) per dataset and UTC day. A row changes a count by
// at most 1, so a draw is ρ = 1/(2σ²) = 0.001-zCDP per row.
const (
	// Sigma2 is σ² of the row counts' noise.
	Sigma2 = 500
	// Mechanism names the noise in catalogues.
	Mechanism = "discrete_gaussian"
)

// RhoPerDraw is the zCDP ρ of one day's noised count of one dataset, for
// one row: 1/(2σ²).
const RhoPerDraw = 1.0 / (2 * Sigma2)

// Config is what a Catalogue is built from.
type Config struct {
	NodeID      string
	Institution string      // the credential's institution name
	Role        crypto.Role // the credential's role: an auditor offers nothing
	Std         *schema.Standard
	DB          *store.DB
	Evidence    *evidence.Log
	Metrics     *metrics.Metrics
	Registry    *registry.Registry
	Outbox      *outbox.Outbox
	Layout      bus.Layout
	// Members lists the node ids of the space's members (this node may be
	// among them).
	Members func(ctx context.Context) ([]string, error)
	// Rows is how many records of recordType the node holds.
	Rows func(ctx context.Context, recordType string) (int64, error)
	// Endpoint is the URL of this node's DSP catalogue endpoint as
	// connectors reach it (dsp.url); empty when dsp.listen is off.
	Endpoint string
	// DSPRate and DSPBurst bound the DSP endpoint's requests per remote
	// address: a minute, and at once (dsp.rate_per_minute, dsp.burst);
	// 0 is DefaultDSPRate, DefaultDSPBurst.
	DSPRate, DSPBurst int
	// Rand is the noise's randomness; nil is crypto/rand.
	Rand      io.Reader
	Now       func() time.Time
	ClockSkew time.Duration
	Log       *slog.Logger
}

// Catalogue is a node's catalogue: its own offers and what the space's
// members offer.
type Catalogue struct {
	c       Config
	sampler *privacy.Sampler
	mu      sync.Mutex // the sampler
	wake    chan struct{}
}

// New is the catalogue of c.DB.
func New(c Config) *Catalogue {
	r := c.Rand
	if r == nil {
		r = rand.Reader
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Catalogue{c: c, sampler: privacy.NewSampler(r), wake: make(chan struct{}, 1)}
}

// Rows is a dataset's noised row count and how it was noised.
type Rows struct {
	Noised    int64   `json:"noised"`
	Day       string  `json:"day"` // the UTC day it was drawn for, YYYY-MM-DD
	Mechanism string  `json:"mechanism"`
	Sigma2    int64   `json:"sigma2"`
	Rho       float64 `json:"rho"` // zCDP ρ of the draw, per row
}

// Dataset is an offered dataset as the space sees it: the offer, labelled
// by the grading standard, with its noised row count and its publisher.
type Dataset struct {
	ID            string           `json:"id"`
	Publisher     string           `json:"publisher"`
	Institution   string           `json:"institution,omitempty"`
	Title         string           `json:"title"`
	Description   string           `json:"description,omitempty"`
	Language      string           `json:"language,omitempty"`
	RecordTypes   []string         `json:"record_types"`
	Fields        []Field          `json:"fields"`
	Level         string           `json:"level"` // the highest level of its fields
	Standard      string           `json:"standard"`
	Rows          Rows             `json:"rows"`
	Purposes      []policy.Purpose `json:"purposes"`
	Licence       string           `json:"licence"`
	RetentionDays int              `json:"retention_days"`
	Contact       string           `json:"contact"`
	Keywords      []string         `json:"keywords,omitempty"`
	Updated       time.Time        `json:"updated"`
	// Endpoint is the publisher's DSP catalogue endpoint, when it runs one.
	Endpoint string `json:"dsp_endpoint,omitempty"`
}

// Message is the plaintext of a catalogue envelope (kind 9): every dataset
// the publisher offers, as of Published. A newer message replaces an
// older one whole.
type Message struct {
	Publisher string    `json:"publisher"`
	Published time.Time `json:"published"`
	Datasets  []Dataset `json:"datasets"`
}

// Entry is a dataset of the space's catalogue as `dataset list` shows it.
type Entry struct {
	Dataset
	Own      bool       `json:"own"`                // offered by this node
	Received *time.Time `json:"received,omitempty"` // when this node received it (others' only)
}

func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Offer stores o (replacing an offer with the same id), draws its row
// count for today afresh, and publishes the catalogue to the members.
func (c *Catalogue) Offer(ctx context.Context, o *Offer) (Dataset, error) {
	if c.c.Role == crypto.RoleAuditor {
		return Dataset{}, ErrAuditor
	}
	if err := o.Validate(c.c.Std); err != nil {
		return Dataset{}, err
	}
	body, err := json.Marshal(o)
	if err != nil {
		return Dataset{}, fmt.Errorf("encode offer: %w", err)
	}
	if size, err := c.sizeWith(ctx, o); err != nil {
		return Dataset{}, err
	} else if size > MaxMessage {
		return Dataset{}, fmt.Errorf("offer %s: the node's catalogue would take %d KiB, above the %d KiB one message to the members carries: "+
			"list fewer fields (fields), or offer fewer datasets", o.ID, size>>10, MaxMessage>>10)
	}
	now := c.c.Now()
	err = c.c.DB.Write(ctx, func(tx *sql.Tx) error {
		var k int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM catalogue_offers WHERE id != ?`, o.ID).Scan(&k); err != nil {
			return fmt.Errorf("count offers: %w", err)
		}
		if k >= maxOffers {
			return fmt.Errorf("offer %s: this node offers %d datasets already, at most %d: withdraw one first", o.ID, k, maxOffers)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO catalogue_offers(id, body, updated_ms) VALUES (?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms`, o.ID, body, now.UnixMilli()); err != nil {
			return fmt.Errorf("store offer: %w", err)
		}
		return c.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindCatalogue, Reason: "offered", Digest: digest(body)})
	})
	if err != nil {
		return Dataset{}, err
	}
	d, err := c.own(ctx, o.ID)
	if err != nil {
		return Dataset{}, err
	}
	c.Wake()
	return d, nil
}

// MaxMessage bounds the catalogue message a node sends its members: half
// NATS's default maximum message size, with room for the envelope.
const MaxMessage = 512 << 10

// sizeWith is the size of this node's catalogue message with o offered.
func (c *Catalogue) sizeWith(ctx context.Context, o *Offer) (int, error) {
	offers, updated, err := c.offers(ctx, "")
	if err != nil {
		return 0, err
	}
	now := c.c.Now()
	m := Message{Publisher: c.c.NodeID, Published: now}
	rows := Rows{Noised: 1 << 40, Day: day(now), Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw} // the widest figure
	add := func(o *Offer, at time.Time) {
		m.Datasets = append(m.Datasets, c.describe(o, o.fields(c.c.Std), schema.CORE, rows, at))
	}
	for i, old := range offers {
		if old.ID != o.ID {
			add(old, updated[i])
		}
	}
	add(o, now)
	data, err := json.Marshal(m)
	return len(data), err
}

// Withdraw removes the offer id and publishes the catalogue without it.
func (c *Catalogue) Withdraw(ctx context.Context, id string) error {
	err := c.c.DB.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM catalogue_offers WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("withdraw offer: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("withdraw offer: %w", err)
		} else if k == 0 {
			return fmt.Errorf("dataset %q: %w", id, ErrUnknown)
		}
		return c.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindCatalogue, Reason: "withdrawn", Digest: digest([]byte(id))})
	})
	if err == nil {
		c.Wake()
	}
	return err
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// offers reads this node's offers, by id.
func (c *Catalogue) offers(ctx context.Context, id string) ([]*Offer, []time.Time, error) {
	q, args := `SELECT body, updated_ms FROM catalogue_offers ORDER BY id`, []any{}
	if id != "" {
		q, args = `SELECT body, updated_ms FROM catalogue_offers WHERE id = ?`, []any{id}
	}
	rows, err := c.c.DB.R.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("read offers: %w", err)
	}
	defer rows.Close()
	var out []*Offer
	var updated []time.Time
	for rows.Next() {
		var body []byte
		var ms int64
		if err := rows.Scan(&body, &ms); err != nil {
			return nil, nil, fmt.Errorf("read offers: %w", err)
		}
		var o Offer
		if err := json.Unmarshal(body, &o); err != nil {
			return nil, nil, fmt.Errorf("decode offer: %w", err)
		}
		out = append(out, &o)
		updated = append(updated, time.UnixMilli(ms).UTC())
	}
	return out, updated, rows.Err()
}

// Own is the datasets this node offers, with today's noised row counts:
// the offers and their stored counts of the day in two queries, whatever
// the number of offers; a count not yet drawn today is drawn (rows).
func (c *Catalogue) Own(ctx context.Context) ([]Dataset, error) {
	offers, updated, err := c.offers(ctx, "")
	if err != nil {
		return nil, err
	}
	today := day(c.c.Now())
	drawn, err := c.drawn(ctx, today, offers)
	if err != nil {
		return nil, err
	}
	out := make([]Dataset, 0, len(offers))
	for i, o := range offers {
		d, err := c.dataset(ctx, o, updated[i], today, drawn)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// qDrawn is drawn's query: the counts of day of the draw keys given as a
// JSON array, each found by the primary key (dataset, day), so that the
// days gone by are never read.
const qDrawn = `SELECT dataset, noised FROM catalogue_rows WHERE day = ? AND dataset IN (SELECT value FROM json_each(?))`

// drawn is the noised row counts of offers stored for day, by drawKey.
func (c *Catalogue) drawn(ctx context.Context, day string, offers []*Offer) (map[string]int64, error) {
	out := map[string]int64{}
	if len(offers) == 0 {
		return out, nil
	}
	keys := make([]string, len(offers))
	for i, o := range offers {
		keys[i] = drawKey(o)
	}
	list, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("read row counts: %w", err)
	}
	rows, err := c.c.DB.R.QueryContext(ctx, qDrawn, day, string(list))
	if err != nil {
		return nil, fmt.Errorf("read row counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		var n int64
		if err := rows.Scan(&key, &n); err != nil {
			return nil, fmt.Errorf("read row counts: %w", err)
		}
		out[key] = n
	}
	return out, rows.Err()
}

// own is this node's dataset id.
func (c *Catalogue) own(ctx context.Context, id string) (Dataset, error) {
	if id == "" {
		return Dataset{}, fmt.Errorf("dataset %q: %w", id, ErrUnknown)
	}
	offers, updated, err := c.offers(ctx, id)
	if err != nil {
		return Dataset{}, err
	}
	if len(offers) == 0 {
		return Dataset{}, fmt.Errorf("dataset %q: %w", id, ErrUnknown)
	}
	return c.dataset(ctx, offers[0], updated[0], day(c.c.Now()), nil)
}

// dataset is offer o with its noised row count for today: from drawn
// (the day's stored counts, by drawKey) when there, else read or drawn
// (rows) and added to drawn.
func (c *Catalogue) dataset(ctx context.Context, o *Offer, updated time.Time, today string, drawn map[string]int64) (Dataset, error) {
	rows := Rows{Day: today, Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw}
	if n, ok := drawn[drawKey(o)]; ok {
		rows.Noised = n
	} else {
		var err error
		if rows, err = c.rows(ctx, o, today); err != nil {
			return Dataset{}, err
		}
		if drawn != nil {
			drawn[drawKey(o)] = rows.Noised
		}
	}
	fields := o.fields(c.c.Std)
	level := schema.L1
	for _, f := range fields {
		if l, err := schema.ParseLevel(f.Level); err == nil && l > level {
			level = l
		}
	}
	return c.describe(o, fields, level, rows, updated), nil
}

// describe is offer o as this node publishes it, with fields (o's, as
// the standard labels them), level, rows and updated.
func (c *Catalogue) describe(o *Offer, fields []Field, level schema.Level, rows Rows, updated time.Time) Dataset {
	return Dataset{ID: o.ID, Publisher: c.c.NodeID, Institution: c.c.Institution, Title: o.Title, Description: o.Description,
		Language: cmp.Or(o.Language, "en"), RecordTypes: o.RecordTypes, Fields: fields, Level: level.String(), Standard: c.c.Std.Ref(),
		Rows: rows, Purposes: o.Purposes, Licence: o.Licence, RetentionDays: o.RetentionDays, Contact: o.Contact,
		Keywords: o.Keywords, Updated: updated, Endpoint: c.c.Endpoint}
}

// drawKey names the count a dataset's noised row count is drawn for: the
// set of its record types, not its id, since the count depends on those
// only. Datasets over the same record types, and an offer made again,
// show one draw a day: offering the same records under many ids must not
// publish many draws of one count, which averaged would take the noise
// away.
func drawKey(o *Offer) string {
	types := slices.Sorted(slices.Values(o.RecordTypes))
	return "types:" + strings.Join(slices.Compact(types), ",")
}

// rows is the dataset's noised row count for today: the stored one for
// its record types, or a fresh draw stored before it is shown. Of two
// draws racing, the first stored wins and the other is never shown.
func (c *Catalogue) rows(ctx context.Context, o *Offer, today string) (Rows, error) {
	key := drawKey(o)
	r := Rows{Day: today, Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw}
	err := c.c.DB.R.QueryRowContext(ctx, `SELECT noised FROM catalogue_rows WHERE dataset = ? AND day = ?`, key, today).Scan(&r.Noised)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Rows{}, fmt.Errorf("read row count: %w", err)
	}
	var count int64
	for _, t := range o.RecordTypes {
		k, err := c.c.Rows(ctx, t)
		if err != nil {
			return Rows{}, err
		}
		count += k
	}
	noise, err := c.draw()
	if err != nil {
		return Rows{}, err
	}
	// Clamping at 0 is post-processing: it costs no privacy.
	noised := max(count+noise, 0)
	err = c.c.DB.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO catalogue_rows(dataset, day, noised, drawn_ms) VALUES (?, ?, ?, ?)`,
			key, today, noised, c.c.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("store row count: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil || k == 0 {
			return err // another draw was stored first
		}
		return c.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindCatalogue, Reason: "rows_noised",
			Detail: map[string]int{"rho_nano": int(RhoPerDraw * 1e9)}})
	})
	if err != nil {
		return Rows{}, err
	}
	if err := c.c.DB.R.QueryRowContext(ctx, `SELECT noised FROM catalogue_rows WHERE dataset = ? AND day = ?`, key, today).Scan(&r.Noised); err != nil {
		return Rows{}, fmt.Errorf("read row count: %w", err)
	}
	return r, nil
}

func (c *Catalogue) draw() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sampler.DiscreteGaussian(big.NewRat(Sigma2, 1))
}

// List is the space's catalogue as this node holds it: its own datasets,
// then the members' newest, by publisher and id; a member the authority
// revoked is left out.
func (c *Catalogue) List(ctx context.Context) ([]Entry, error) {
	own, err := c.Own(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(own))
	for _, d := range own {
		out = append(out, Entry{Dataset: d, Own: true})
	}
	return c.received(ctx, out, "", "")
}

// Counts is how many datasets this node offers and how many of the
// members' it holds (the revoked members' left out), without drawing a
// row count.
func (c *Catalogue) Counts(ctx context.Context) (offered, members int, err error) {
	offers, _, err := c.offers(ctx, "")
	if err != nil {
		return 0, 0, err
	}
	received, err := c.received(ctx, nil, "", "")
	if err != nil {
		return 0, 0, err
	}
	return len(offers), len(received), nil
}

// received appends to out the datasets the members published to this
// node, by publisher: of publisher only when not "", with id only when
// not ""; a member the authority revoked is left out.
func (c *Catalogue) received(ctx context.Context, out []Entry, publisher, id string) ([]Entry, error) {
	q, args := `SELECT received_ms, body FROM catalogue_received ORDER BY publisher`, []any{}
	if publisher != "" {
		q, args = `SELECT received_ms, body FROM catalogue_received WHERE publisher = ?`, []any{publisher}
	}
	rows, err := c.c.DB.R.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read received catalogues: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ms int64
		var body []byte
		if err := rows.Scan(&ms, &body); err != nil {
			return nil, fmt.Errorf("read received catalogues: %w", err)
		}
		var m Message
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("decode received catalogue: %w", err)
		}
		if c.c.Registry != nil && c.c.Registry.Revoked(m.Publisher, "", c.c.Now()) {
			continue // the authority revoked the publisher: its offers stand no more
		}
		at := time.UnixMilli(ms).UTC()
		for _, d := range m.Datasets {
			if id == "" || d.ID == id {
				out = append(out, Entry{Dataset: d, Received: &at})
			}
		}
	}
	return out, rows.Err()
}

// Get is one dataset of the space's catalogue: of publisher, or, with
// publisher "", this node's own or else the one member's that offers id
// (ErrAmbiguous when several do). It reads that one offer of this node
// and the members' catalogues (of publisher, when given), not the whole
// list: no other offer's row count is read or drawn.
func (c *Catalogue) Get(ctx context.Context, id, publisher string) (Entry, error) {
	if id == "" {
		return Entry{}, fmt.Errorf("dataset %q: %w", id, ErrUnknown)
	}
	var found []Entry
	if publisher == "" || publisher == c.c.NodeID {
		d, err := c.own(ctx, id)
		switch {
		case err == nil && publisher == "":
			return Entry{Dataset: d, Own: true}, nil
		case err == nil:
			found = append(found, Entry{Dataset: d, Own: true})
		case !errors.Is(err, ErrUnknown):
			return Entry{}, err
		}
	}
	found, err := c.received(ctx, found, publisher, id)
	if err != nil {
		return Entry{}, err
	}
	switch len(found) {
	case 0:
		return Entry{}, fmt.Errorf("dataset %q: %w", id, ErrUnknown)
	case 1:
		return found[0], nil
	}
	var pubs []string
	for _, e := range found {
		pubs = append(pubs, e.Publisher)
	}
	return Entry{}, fmt.Errorf("dataset %q is offered by %v: %w; name the publisher", id, pubs, ErrAmbiguous)
}

// Publish sends this node's catalogue to every other member of the space
// that holds a valid credential, one sealed envelope each, in one
// transaction; it returns how many were queued.
func (c *Catalogue) Publish(ctx context.Context) (int, error) {
	if c.c.Role == crypto.RoleAuditor {
		return 0, ErrAuditor
	}
	own, err := c.Own(ctx)
	if err != nil {
		return 0, err
	}
	members, err := c.c.Members(ctx)
	if err != nil {
		return 0, fmt.Errorf("publish catalogue: members: %w", err)
	}
	now := c.c.Now()
	body, err := json.Marshal(Message{Publisher: c.c.NodeID, Published: now.UTC(), Datasets: own})
	if err != nil {
		return 0, fmt.Errorf("encode catalogue: %w", err)
	}
	type peer struct {
		id string
		to *crypto.KEMPublicKey
	}
	var peers []peer
	for _, m := range members {
		if m == c.c.NodeID {
			continue
		}
		cred, err := c.c.Registry.Lookup(ctx, m)
		if err != nil {
			// An expired, revoked or unverifiable credential: the member
			// is not sent to. Registry errors other than that abort.
			if errors.Is(err, registry.ErrUnknownMember) {
				continue
			}
			return 0, fmt.Errorf("publish catalogue: %s: %w", m, err)
		}
		to := cred.CurrentKEMKey()
		if to == nil || c.c.Registry.Revoked(m, to.KeyID(), now) || cred.Role == crypto.RoleAuditor {
			continue // an auditor reads no envelope
		}
		peers = append(peers, peer{m, to})
	}
	err = c.c.DB.Write(ctx, func(tx *sql.Tx) error {
		for _, p := range peers {
			if _, err := c.c.Outbox.Enqueue(ctx, tx, crypto.Header{Recipient: p.id, Count: uint32(max(len(own), 1)), Kind: crypto.KindCatalogue},
				p.to, c.c.Layout.ControlSubject(p.id, c.c.NodeID), body, 0); err != nil {
				return fmt.Errorf("publish catalogue to %s: %w", p.id, err)
			}
		}
		return c.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindCatalogue, Reason: "published",
			Count: len(peers), Digest: digest(body), Detail: map[string]int{"datasets": len(own)}})
	})
	if err != nil {
		return 0, err
	}
	c.c.Metrics.Catalogue.Published.Add(float64(len(peers)))
	c.c.Outbox.Wake()
	return len(peers), nil
}

// Wake asks Run to publish now.
func (c *Catalogue) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// republish is how often Run looks whether the day changed.
const republish = time.Hour

// Run publishes the catalogue when an offer changes (Wake), and at start
// and once each UTC day while the node offers datasets (the day's new
// noised counts, and members that joined since), until ctx ends.
func (c *Catalogue) Run(ctx context.Context) {
	last := ""
	t := time.NewTicker(republish)
	defer t.Stop()
	publish := func(always bool) {
		if !always {
			var k int
			if err := c.c.DB.R.QueryRowContext(ctx, `SELECT count(*) FROM catalogue_offers`).Scan(&k); err != nil || k == 0 {
				return // nothing offered: members hold nothing of this node to renew
			}
		}
		if _, err := c.Publish(ctx); err != nil {
			if ctx.Err() == nil {
				c.c.Log.Warn("catalogue not published; tried again within the hour", "err", err)
			}
			last = "" // the next tick tries again
			return
		}
		last = day(c.c.Now())
	}
	publish(false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			publish(true)
		case <-t.C:
			if day(c.c.Now()) != last {
				publish(false)
			}
		}
	}
}

// Handle checks and stores a member's catalogue (envelope kind 9, its
// signature verified by the receiver): the message must name the signing
// sender as publisher, and so must each dataset. A refusal is an
// envelope.Refusal, which the receiver counts and records; this counts it
// by reason too.
func (c *Catalogue) Handle(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	refuse := func(reason string, err error) error {
		c.c.Metrics.Catalogue.Refused.WithLabelValues(reason).Inc()
		return envelope.Refuse(envelope.RefuseContent, err)
	}
	m, reason, err := ParseMessage(plain, h.Sender, c.c.Now().Add(c.c.ClockSkew))
	if err != nil {
		return refuse(reason, err)
	}
	if sender == nil || sender.NodeID != h.Sender {
		return refuse("publisher_mismatch", errors.New("catalogue sender's credential is another member's"))
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	stored := false
	err = c.c.DB.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO catalogue_received(publisher, published_ms, received_ms, envelope_id, body) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(publisher) DO UPDATE SET published_ms = excluded.published_ms, received_ms = excluded.received_ms,
				envelope_id = excluded.envelope_id, body = excluded.body
			WHERE excluded.published_ms > catalogue_received.published_ms`,
			m.Publisher, m.Published.UnixMilli(), c.c.Now().UnixMilli(), h.IDString(), body)
		if err != nil {
			return fmt.Errorf("store catalogue: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil || k == 0 {
			return err // an older catalogue than the one held: kept out
		}
		stored = true
		return c.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindCatalogue, Peer: h.Sender, Envelope: h.IDString(),
			Reason: "received", Count: len(m.Datasets), Digest: digest(plain)})
	})
	if err == nil && stored {
		c.c.Metrics.Catalogue.Received.Inc()
	}
	return err
}

// ParseMessage reads a catalogue message that sender signed and checks
// it (CATALOGUE.md §7): publisher and every dataset's publisher are
// sender, at most maxOffers datasets with distinct ids, each well formed,
// published no later than latest. A refusal gives its reason,
// publisher_mismatch or invalid (metrics.CatalogueRefusals).
func ParseMessage(plain []byte, sender string, latest time.Time) (*Message, string, error) {
	var m Message
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, "invalid", errors.New("not a catalogue message")
	}
	if m.Publisher != sender {
		return nil, "publisher_mismatch", errors.New("catalogue publisher is not the member that signed it")
	}
	if len(m.Datasets) > maxOffers {
		return nil, "invalid", fmt.Errorf("catalogue of %d datasets, at most %d", len(m.Datasets), maxOffers)
	}
	if m.Published.IsZero() || m.Published.After(latest) {
		return nil, "invalid", errors.New("catalogue published time missing or in the future")
	}
	ids := map[string]bool{}
	for i, d := range m.Datasets {
		if d.Publisher != sender {
			return nil, "publisher_mismatch", fmt.Errorf("dataset %d names another publisher", i)
		}
		if err := d.check(); err != nil {
			return nil, "invalid", fmt.Errorf("dataset %d: %w", i, err)
		}
		if ids[d.ID] {
			return nil, "invalid", fmt.Errorf("dataset %d: id offered twice", i)
		}
		ids[d.ID] = true
	}
	return &m, "", nil
}

// check validates a dataset received from a member: what the space's
// catalogue shows must be well formed, whatever standard the publisher
// labels by.
func (d *Dataset) check() error {
	o := Offer{ID: d.ID, Title: d.Title, Description: d.Description, Language: d.Language, RecordTypes: d.RecordTypes,
		Purposes: d.Purposes, Licence: d.Licence, RetentionDays: d.RetentionDays, Contact: d.Contact, Keywords: d.Keywords}
	if err := o.validateText(); err != nil {
		return err
	}
	if len(d.Fields) > 10000 {
		return errors.New("fields: too many")
	}
	for i, f := range d.Fields {
		if !slices.Contains(d.RecordTypes, f.RecordType) || !fieldRE.MatchString(f.Name) {
			return fmt.Errorf("fields[%d]: not a field of the dataset's record types", i)
		}
		if _, err := schema.ParseLevel(f.Level); err != nil {
			return fmt.Errorf("fields[%d].level: %w", i, err)
		}
	}
	if _, err := schema.ParseLevel(d.Level); err != nil {
		return fmt.Errorf("level: %w", err)
	}
	if d.Rows.Noised < 0 || d.Rows.Mechanism != Mechanism || d.Rows.Sigma2 <= 0 {
		return errors.New("rows: a non-negative noised count of a named mechanism expected")
	}
	return nil
}
