package node

import "github.com/prometheus/client_golang/prometheus"

// aggMetrics are the aggregate instruments (node/METRICS.md). Labels come
// from closed sets: round events, participation events, refusal reasons,
// cell outcomes.
type aggMetrics struct {
	rounds        *prometheus.CounterVec // event: started, completed, failed (center)
	participation *prometheus.CounterVec // event: joined, contributed, declined (university)
	refused       *prometheus.CounterVec // reason: aggRefuseReasons
	cells         *prometheus.CounterVec // outcome: released, suppressed (center)
	rho           prometheus.Counter     // ρ debited (university) or released (center)
}

func (m *metrics) initAggregate() {
	m.agg = aggMetrics{
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_aggregate_rounds_total",
			Help: "Aggregate rounds run by this center, by event (started, completed, failed).",
		}, []string{"event"}),
		participation: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_aggregate_participations_total",
			Help: "Aggregate rounds this university was asked to join, by event (joined, contributed, declined).",
		}, []string{"event"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_aggregate_queries_refused_total",
			Help: "Aggregate queries or rounds this node refused or declined, by reason.",
		}, []string{"reason"}),
		cells: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eduspace_aggregate_cells_total",
			Help: "Cells of aggregate releases, by outcome (released, suppressed under k).",
		}, []string{"outcome"}),
		rho: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eduspace_aggregate_rho_spent_total",
			Help: "Privacy loss in zCDP rho: debited from this university's ledger, or carried by this center's releases.",
		}),
	}
	m.reg.MustRegister(m.agg.rounds, m.agg.participation, m.agg.refused, m.agg.cells, m.agg.rho)
	for _, e := range []string{"started", "completed", "failed"} {
		m.agg.rounds.WithLabelValues(e)
	}
	for _, e := range []string{"joined", "contributed", "declined"} {
		m.agg.participation.WithLabelValues(e)
	}
	for _, r := range aggRefuseReasons {
		m.agg.refused.WithLabelValues(r)
	}
	for _, o := range []string{"released", "suppressed"} {
		m.agg.cells.WithLabelValues(o)
	}
}
