package node

import (
	"github.com/eduspace/eduspace/node/metrics"
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

// newMetrics makes the node's instruments with every closed label set the
// node's parts own declared.
func newMetrics(std *schema.Standard) *metrics.Metrics {
	return metrics.New(std, metrics.Labels{Refused: refuseReasons, Invalid: invalidReasons, AggregateRefused: aggRefuseReasons})
}
