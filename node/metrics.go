package node

import (
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/schema"
)

// newMetrics makes the node's instruments with every closed label set the
// node's parts own declared.
func newMetrics(std *schema.Standard) *metrics.Metrics {
	return metrics.New(std, metrics.Labels{Refused: envelope.RefuseReasons, Invalid: share.InvalidReasons, AggregateRefused: aggregate.RefuseReasons,
		LinkageRefused: linkage.Reasons})
}
