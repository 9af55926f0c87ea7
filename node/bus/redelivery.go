package bus

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RedeliveryDelay is how long a message that failed for a passing reason
// waits before it is delivered again: 250ms, doubled with each delivery so
// far, at most 30s.
func RedeliveryDelay(msg jetstream.Msg) time.Duration {
	d := 250 * time.Millisecond
	if md, err := msg.Metadata(); err == nil {
		for i := uint64(1); i < md.NumDelivered && d < 30*time.Second; i++ {
			d *= 2
		}
	}
	return min(d, 30*time.Second)
}
