package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Refusal reasons for envelopes a node will not accept. Like policy reasons
// they are stable metric label values and evidence entries.
const (
	RefuseMalformed    = "malformed"
	RefuseMisaddressed = "misaddressed"
	RefuseUnknownKey   = "unknown_key"
	RefuseExpired      = "expired"
	RefuseUnknownPeer  = "unknown_sender"
	RefuseSignature    = "bad_signature"
	RefuseDecrypt      = "decrypt_failed"
	RefuseReplayed     = "replayed"
	RefuseNoAgreement  = "no_agreement"
	RefuseContent      = "bad_content"
	RefuseRevoked      = "revoked"
)

var refuseReasons = []string{
	RefuseMalformed, RefuseMisaddressed, RefuseUnknownKey, RefuseExpired, RefuseUnknownPeer,
	RefuseSignature, RefuseDecrypt, RefuseReplayed, RefuseNoAgreement, RefuseContent,
	RefuseRevoked,
}

// reasonCoreRefused is the ingest refusal of a record classified CORE.
const reasonCoreRefused = "core_refused"

// invalidReasons are the reasons a record is refused at ingest.
var invalidReasons = []string{
	schema.ReasonUnknownField, schema.ReasonRequired, schema.ReasonType, schema.ReasonDate,
	schema.ReasonNegative, schema.ReasonEnum, schema.ReasonChecksum, schema.ReasonUnknownType,
	schema.ReasonSyntax, reasonCoreRefused,
}

// metrics are one node's instruments, on the node's own registry. Every
// label value comes from a closed set: record types of the standard,
// levels, policy reason codes, refusal reasons.
type metrics struct {
	reg *prometheus.Registry

	ingested  *prometheus.CounterVec // type, level
	invalid   *prometheus.CounterVec // reason
	decisions *prometheus.CounterVec // outcome, reason
	sealed    prometheus.Counter
	sealedRec prometheus.Counter
	sent      prometheus.Counter
	received  prometheus.Counter
	stored    prometheus.Counter
	refused   *prometheus.CounterVec // reason
	receipts  prometheus.Counter

	consents       *prometheus.CounterVec // action
	erasures       *prometheus.CounterVec // event: requested, confirmed, performed
	recordsErased  prometheus.Counter
	recordsExpired prometheus.Counter

	checkpointsPublished prometheus.Counter
	checkpointsReceived  prometheus.Counter
	checkpointConflicts  prometheus.Counter
	latency              prometheus.Histogram

	agg aggMetrics // node/aggregate_metrics.go
}

// gauges are the figures a scrape reads from the database.
type gauges interface {
	outboxDepth(context.Context) float64
	evidenceLength(context.Context) float64
	awaitingReceipt(context.Context) float64
	sequenceMissing(context.Context) float64
	erasuresOpen(context.Context) float64
	consumerPending(kind string) float64
	checkpointAge() time.Duration
	sendingBlocked() bool
}

func newMetrics(std *schema.Standard, g gauges) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	m := &metrics{
		reg: reg,
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_ingest_records_total",
			Help: "Records ingested and classified, by record type and level.",
		}, []string{"type", "level"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_ingest_invalid_total",
			Help: "Records rejected at ingest by validation, by reason.",
		}, []string{"reason"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_policy_decisions_total",
			Help: "Policy decisions on records, by outcome (permit, deny) and reason code.",
		}, []string{"outcome", "reason"}),
		sealed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_envelopes_sealed_total",
			Help: "Envelopes sealed and written to the outbox.",
		}),
		sealedRec: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_envelope_records_sealed_total",
			Help: "Records sealed into envelopes.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_envelopes_sent_total",
			Help: "Envelopes published and acknowledged by JetStream.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_envelopes_received_total",
			Help: "Envelopes accepted from peers and stored.",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_records_received_total",
			Help: "Records received from peers and stored.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_envelopes_refused_total",
			Help: "Envelopes refused at receipt, by reason; never stored.",
		}, []string{"reason"}),
		receipts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_receipts_received_total",
			Help: "Signed receipts received from recipients for envelopes this node sent.",
		}),
		consents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_consents_total",
			Help: "Consent ledger changes, by action (grant, withdraw).",
		}, []string{"action"}),
		erasures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_erasures_total",
			Help: "Erasure events: requested (sent to a recipient), confirmed (its signed receipt came back), performed (done here for a provider).",
		}, []string{"event"}),
		recordsErased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_records_erased_total",
			Help: "Received records deleted here on a provider's erasure request.",
		}),
		recordsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_records_expired_total",
			Help: "Received records deleted here when their agreement's retention period ended.",
		}),
		checkpointsPublished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_checkpoints_published_total",
			Help: "Signed checkpoints of this node's evidence log published on the space.",
		}),
		checkpointsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_checkpoints_received_total",
			Help: "Signed checkpoints (of any node, this one included) verified and kept.",
		}),
		checkpointConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_checkpoint_conflicts_total",
			Help: "Checkpoints that contradict one already kept for the same node and count (equivocation).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "eduspace_delivery_latency_seconds",
			Help:    "Time from sealing an envelope to storing it at the recipient.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
	}
	reg.MustRegister(m.ingested, m.invalid, m.decisions, m.sealed, m.sealedRec, m.sent, m.received,
		m.stored, m.refused, m.receipts, m.consents, m.erasures, m.recordsErased, m.recordsExpired, m.checkpointsPublished, m.checkpointsReceived, m.checkpointConflicts, m.latency)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_outbox_depth",
		Help: "Envelopes sealed but not yet acknowledged by JetStream.",
	}, func() float64 { return g.outboxDepth(context.Background()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_envelopes_awaiting_receipt",
		Help: "Envelopes of records sent and acknowledged by JetStream whose recipient has not yet returned a signed receipt.",
	}, func() float64 { return g.awaitingReceipt(context.Background()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_sequence_missing",
		Help: "Envelopes of records from peers whose sequence number has been passed but which have not arrived (late or lost).",
	}, func() float64 { return g.sequenceMissing(context.Background()) }))
	for _, kind := range []string{"deliver", "receipt", "control", "audit"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "eduspace_consumer_pending_messages",
			Help:        "Messages waiting for this node on one of its JetStream consumers: not yet delivered plus delivered and not yet acknowledged (consumer lag).",
			ConstLabels: prometheus.Labels{"consumer": kind},
		}, func() float64 { return g.consumerPending(kind) }))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_erasures_open",
		Help: "Erasure requests sent whose recipient has not yet confirmed them with a signed receipt.",
	}, func() float64 { return g.erasuresOpen(context.Background()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_checkpoint_age_seconds",
		Help: "How long the evidence log has had entries no published checkpoint covers; 0 when covered.",
	}, func() float64 { return g.checkpointAge().Seconds() }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_sending_blocked",
		Help: "1 while the node fails closed (checkpoint age above checkpoint.max_age) and sends nothing, else 0.",
	}, func() float64 {
		if g.sendingBlocked() {
			return 1
		}
		return 0
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eduspace_evidence_entries",
		Help: "Entries in the node's evidence hash chain.",
	}, func() float64 { return g.evidenceLength(context.Background()) }))

	// Pre-declare every series of the closed label sets, so that a scrape
	// shows zeros rather than nothing.
	for _, t := range std.Types() {
		for l := schema.L1; l <= schema.IMP; l++ {
			m.ingested.WithLabelValues(t, l.String())
		}
	}
	for _, r := range policy.Reasons() {
		outcome := "deny"
		if r == policy.ReasonPermit {
			outcome = "permit"
		}
		m.decisions.WithLabelValues(outcome, string(r))
	}
	for _, r := range refuseReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range invalidReasons {
		m.invalid.WithLabelValues(r)
	}
	for _, a := range []string{"grant", "withdraw"} {
		m.consents.WithLabelValues(a)
	}
	for _, e := range []string{"requested", "confirmed", "performed"} {
		m.erasures.WithLabelValues(e)
	}
	m.initAggregate()
	return m
}
