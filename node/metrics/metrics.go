// Package metrics owns a node's Prometheus instruments and its registry:
// their names, help texts, label names and the closed sets of label values
// declared up front. Every other part of the node counts through the
// fields of Metrics; gauges read their figure at scrape time through the
// functions given to Gauges, each under a deadline.
//
// It must never take a label value from a record, a request or a peer
// outside a closed set (record types, levels, reason codes, roles), and
// never registers on the global Prometheus registry.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// ScrapeTimeout bounds each gauge's read at scrape time: a gauge whose
// query runs past it reads -1 and the scrape goes on.
const ScrapeTimeout = 2 * time.Second

// Metrics are one node's instruments, on the node's own registry. Every
// label value comes from a closed set: record types of the standard,
// levels, policy reason codes, refusal reasons.
type Metrics struct {
	Registry *prometheus.Registry

	Ingested      *prometheus.CounterVec // type, level
	Invalid       *prometheus.CounterVec // reason
	Decisions     *prometheus.CounterVec // outcome, reason
	Sealed        prometheus.Counter
	SealedRecords prometheus.Counter
	Sent          prometheus.Counter
	Received      prometheus.Counter
	Stored        prometheus.Counter
	Refused       *prometheus.CounterVec // reason
	Retried       *prometheus.CounterVec // consumer
	Receipts      prometheus.Counter
	RefusedByPeer *prometheus.CounterVec // reason

	Consents       *prometheus.CounterVec // action
	Erasures       *prometheus.CounterVec // event: requested, confirmed, performed
	RecordsErased  prometheus.Counter
	RecordsExpired prometheus.Counter

	CheckpointsPublished prometheus.Counter
	CheckpointsReceived  prometheus.Counter
	CheckpointConflicts  prometheus.Counter
	CheckpointsAnchored  prometheus.Counter
	AnchorFailures       prometheus.Counter
	Latency              prometheus.Histogram

	Aggregate Aggregate
	Catalogue Catalogue
	Linkage   Linkage
}

// Linkage are the linkage instruments (node/linkage/LINKAGE.md). Labels
// come from closed sets: refusal reasons, sides.
type Linkage struct {
	Refused     *prometheus.CounterVec // reason
	Evaluations *prometheus.CounterVec // event: evaluated (at the evaluator), requested (verified at the requester)
}

// Catalogue are the catalogue's instruments (node/catalogue/CATALOGUE.md).
// Labels come from closed sets: CatalogueRefusals, DSPOutcomes.
type Catalogue struct {
	Published prometheus.Counter     // catalogue envelopes queued to members
	Received  prometheus.Counter     // members' catalogues accepted and stored
	Refused   *prometheus.CounterVec // reason
	DSP       *prometheus.CounterVec // outcome
}

// CatalogueRefusals are the reasons a member's catalogue is refused, the
// closed set of eduspace_catalogue_refused_total's label.
var CatalogueRefusals = []string{"publisher_mismatch", "invalid"}

// DSPOutcomes are the outcomes of requests to the Dataspace Protocol
// catalogue endpoint, the closed set of eduspace_dsp_requests_total's label.
var DSPOutcomes = []string{"catalog", "dataset", "bad_request", "not_found", "method_not_allowed", "rate_limited"}

// Aggregate are the aggregate instruments (node/aggregate/AGGREGATES.md).
// Labels come from closed sets: round events, participation events,
// refusal reasons, cell outcomes.
type Aggregate struct {
	Rounds        *prometheus.CounterVec // event: started, completed, failed (center)
	Participation *prometheus.CounterVec // event: joined, contributed, declined (university)
	Refused       *prometheus.CounterVec // reason
	Cells         *prometheus.CounterVec // outcome: released, suppressed (center)
	Rho           prometheus.Counter     // ρ debited (university) or released (center)
}

// Labels are the closed sets of label values that other packages own and
// Metrics declares up front, so that a scrape shows zeros rather than
// nothing.
type Labels struct {
	Refused          []string // envelope refusal reasons
	Invalid          []string // ingest refusal reasons
	AggregateRefused []string // aggregate refusal reasons
	LinkageRefused   []string // linkage refusal reasons
}

// New makes a node's instruments on a registry of their own, with every
// series of the closed label sets declared.
func New(std *schema.Standard, labels Labels) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	vec := func(name, help, label string, values ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		reg.MustRegister(v)
		for _, value := range values {
			v.WithLabelValues(value)
		}
		return v
	}
	m := &Metrics{
		Registry: reg,
		Ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_ingest_records_total",
			Help: "Records ingested and classified, by record type and level.",
		}, []string{"type", "level"}),
		Invalid: vec("eduspace_ingest_invalid_total",
			"Records rejected at ingest by validation, by reason.", "reason", labels.Invalid...),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_policy_decisions_total",
			Help: "Policy decisions on records, by outcome (permit, deny) and reason code.",
		}, []string{"outcome", "reason"}),
		Sealed:        counter("eduspace_envelopes_sealed_total", "Envelopes sealed and written to the outbox."),
		SealedRecords: counter("eduspace_envelope_records_sealed_total", "Records sealed into envelopes."),
		Sent:          counter("eduspace_envelopes_sent_total", "Envelopes published and acknowledged by JetStream."),
		Received:      counter("eduspace_envelopes_received_total", "Envelopes accepted from peers and stored."),
		Stored:        counter("eduspace_records_received_total", "Records received from peers and stored."),
		Refused: vec("eduspace_envelopes_refused_total",
			"Envelopes refused at receipt, by reason; never stored.", "reason", labels.Refused...),
		Retried: vec("eduspace_messages_retried_total",
			"Messages handed back to be redelivered after a temporary failure (the database, the registry, NATS), by consumer.",
			"consumer", Consumers...),
		Receipts: counter("eduspace_receipts_received_total",
			"Signed receipts received from recipients for envelopes this node sent."),
		RefusedByPeer: vec("eduspace_envelopes_refused_by_peer_total",
			"Envelopes this node sent that their recipient refused, by the reason its signed receipt gives; their records never arrived.",
			"reason", labels.Refused...),
		Consents: vec("eduspace_consents_total",
			"Consent ledger changes, by action (grant, withdraw).", "action", "grant", "withdraw"),
		Erasures: vec("eduspace_erasures_total",
			"Erasure events: requested (sent to a recipient), confirmed (its signed receipt came back), performed (done here for a provider).",
			"event", "requested", "confirmed", "performed"),
		RecordsErased: counter("eduspace_records_erased_total",
			"Received records deleted here on a provider's erasure request."),
		RecordsExpired: counter("eduspace_records_expired_total",
			"Received records deleted here when their agreement's retention period ended."),
		CheckpointsPublished: counter("eduspace_checkpoints_published_total",
			"Signed checkpoints of this node's evidence log published on the space."),
		CheckpointsReceived: counter("eduspace_checkpoints_received_total",
			"Signed checkpoints (of any node, this one included) verified and kept."),
		CheckpointConflicts: counter("eduspace_checkpoint_conflicts_total",
			"Checkpoints that contradict one already kept for the same node and count (equivocation)."),
		CheckpointsAnchored: counter("eduspace_checkpoints_anchored_total",
			"This node's checkpoints stored with an RFC 3161 time-stamp token from the configured TSA."),
		AnchorFailures: counter("eduspace_checkpoint_anchor_failures_total",
			"Checkpoints published unanchored because the configured TSA did not answer with a token that checks."),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "eduspace_delivery_latency_seconds",
			Help:    "Time from sealing an envelope to storing it at the recipient.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		Aggregate: Aggregate{
			Rounds: vec("eduspace_aggregate_rounds_total",
				"Aggregate rounds run by this center, by event (started, completed, failed).",
				"event", "started", "completed", "failed"),
			Participation: vec("eduspace_aggregate_participations_total",
				"Aggregate rounds this university was asked to join, by event (joined, contributed, declined, refunded).",
				"event", "joined", "contributed", "declined", "refunded"),
			Refused: vec("eduspace_aggregate_queries_refused_total",
				"Aggregate queries or rounds this node refused or declined, by reason.",
				"reason", labels.AggregateRefused...),
			Cells: vec("eduspace_aggregate_cells_total",
				"Cells of aggregate releases, by outcome (released, suppressed under k).",
				"outcome", "released", "suppressed"),
			Rho: counter("eduspace_aggregate_rho_spent_total",
				"Privacy loss in zCDP rho: debited from this university's ledger, or carried by this center's releases."),
		},
		Catalogue: Catalogue{
			Published: counter("eduspace_catalogue_published_total",
				"Catalogue envelopes (this node's offered datasets) queued to the space's members."),
			Received: counter("eduspace_catalogue_received_total",
				"Members' catalogues accepted and stored."),
			Refused: vec("eduspace_catalogue_refused_total",
				"Members' catalogues refused, by reason (publisher_mismatch, invalid); each also an evidence entry.",
				"reason", CatalogueRefusals...),
			DSP: vec("eduspace_dsp_requests_total",
				"Requests to the Dataspace Protocol catalogue endpoint, by outcome.",
				"outcome", DSPOutcomes...),
		},
		Linkage: Linkage{
			Refused: vec("eduspace_linkage_refused_total",
				"Linkage evaluation requests (at the evaluator) and answers (at the requester) refused, by reason.",
				"reason", labels.LinkageRefused...),
			Evaluations: vec("eduspace_linkage_evaluations_total",
				"Linkage elements evaluated here for members (event evaluated) or obtained here with their proofs verified (event requested).",
				"event", "evaluated", "requested"),
		},
	}
	reg.MustRegister(m.Ingested, m.Decisions, m.Latency)
	for _, t := range std.Types() {
		for l := schema.L1; l <= schema.IMP; l++ {
			m.Ingested.WithLabelValues(t, l.String())
		}
	}
	for _, r := range policy.Reasons() {
		outcome := "deny"
		if r == policy.ReasonPermit {
			outcome = "permit"
		}
		m.Decisions.WithLabelValues(outcome, string(r))
	}
	return m
}

// Gauges are the figures a scrape reads from the node's state. A nil
// function reads 0. Functions that take a context get one that ends after
// ScrapeTimeout; an error reads -1.
type Gauges struct {
	OutboxDepth     func(context.Context) (float64, error)
	AwaitingReceipt func(context.Context) (float64, error)
	SequenceMissing func(context.Context) (float64, error)
	ErasuresOpen    func(context.Context) (float64, error)
	EvidenceEntries func(context.Context) (float64, error)
	// ConsumerPending is how many messages wait on one of the node's
	// consumers (deliver, receipt, control, audit).
	ConsumerPending func(ctx context.Context, consumer string) (float64, error)
	CheckpointAge   func() time.Duration
	SendingBlocked  func() bool
}

// Consumers are the node's JetStream consumers, the closed set of the
// consumer label.
var Consumers = []string{"deliver", "receipt", "control", "audit"}

// RegisterGauges registers the scrape-time gauges; call it once.
func (m *Metrics) RegisterGauges(g Gauges) {
	query := func(f func(context.Context) (float64, error)) func() float64 {
		return func() float64 {
			if f == nil {
				return 0
			}
			ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
			defer cancel()
			v, err := f(ctx)
			if err != nil {
				return -1
			}
			return v
		}
	}
	gauge := func(name, help string, f func() float64) {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("eduspace_outbox_depth", "Envelopes sealed but not yet acknowledged by JetStream.", query(g.OutboxDepth))
	gauge("eduspace_envelopes_awaiting_receipt",
		"Envelopes of records sent and acknowledged by JetStream whose recipient has not yet returned a signed receipt.",
		query(g.AwaitingReceipt))
	gauge("eduspace_sequence_missing",
		"Envelopes of records from peers whose sequence number has been passed but which have not arrived (late or lost).",
		query(g.SequenceMissing))
	for _, kind := range Consumers {
		f := func(ctx context.Context) (float64, error) {
			if g.ConsumerPending == nil {
				return 0, nil
			}
			return g.ConsumerPending(ctx, kind)
		}
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "eduspace_consumer_pending_messages",
			Help:        "Messages waiting for this node on one of its JetStream consumers: not yet delivered plus delivered and not yet acknowledged (consumer lag).",
			ConstLabels: prometheus.Labels{"consumer": kind},
		}, query(f)))
	}
	gauge("eduspace_erasures_open",
		"Erasure requests sent whose recipient has not yet confirmed them with a signed receipt.", query(g.ErasuresOpen))
	gauge("eduspace_checkpoint_age_seconds",
		"How long the evidence log has had entries no published checkpoint covers; 0 when covered.",
		func() float64 {
			if g.CheckpointAge == nil {
				return 0
			}
			return g.CheckpointAge().Seconds()
		})
	gauge("eduspace_sending_blocked",
		"1 while the node fails closed (checkpoint age above checkpoint.max_age) and sends nothing, else 0.",
		func() float64 {
			if g.SendingBlocked != nil && g.SendingBlocked() {
				return 1
			}
			return 0
		})
	gauge("eduspace_evidence_entries", "Entries in the node's evidence hash chain.", query(g.EvidenceEntries))
}

// Handler serves the registry in the Prometheus and OpenMetrics formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{EnableOpenMetrics: true})
}
