package node

import (
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/schema"
)

// reasonCoreRefused is the ingest refusal of a record classified CORE.
const reasonCoreRefused = "core_refused"

// invalidReasons are the reasons a record is refused at ingest.
var invalidReasons = []string{
	schema.ReasonUnknownField, schema.ReasonRequired, schema.ReasonType, schema.ReasonDate,
	schema.ReasonNegative, schema.ReasonEnum, schema.ReasonChecksum, schema.ReasonUnknownType,
	schema.ReasonSyntax, reasonCoreRefused,
}

// newMetrics makes the node's instruments with every closed label set the
// node's parts own declared.
func newMetrics(std *schema.Standard) *metrics.Metrics {
	return metrics.New(std, metrics.Labels{Refused: envelope.RefuseReasons, Invalid: invalidReasons, AggregateRefused: aggregate.RefuseReasons})
}
