package node

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
)

// receive handles one message with accept: a refused envelope is recorded
// and terminated, a transient failure is retried later, an accepted
// envelope is stored and then acknowledged.
func (n *Node) receive(ctx context.Context, msg jetstream.Msg, accept func(context.Context, []byte) (crypto.Header, error)) {
	h, err := accept(ctx, msg.Data())
	var ref *envelope.Refusal
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			// The envelope is stored; a redelivery will be seen as a duplicate.
			n.log.Warn("ack delivery", "err", err)
		}
	case errors.As(err, &ref):
		n.m.Refused.WithLabelValues(ref.Reason).Inc()
		n.log.Warn("envelope refused", "reason", ref.Reason, "sender", h.Sender, "envelope", h.IDString(), "err", ref.Err)
		if err := n.db.Write(ctx, func(tx *sql.Tx) error {
			return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: h.Sender,
				Envelope: h.IDString(), Reason: ref.Reason})
		}); err != nil {
			n.log.Error("record refusal in evidence log; will retry", "err", err)
			msg.NakWithDelay(time.Second)
			return
		}
		msg.Term()
	default:
		if ctx.Err() != nil {
			return // shutting down: the message is redelivered after AckWait
		}
		n.log.Warn("delivery failed; will retry", "err", err)
		msg.NakWithDelay(redeliveryDelay(msg))
	}
}

func redeliveryDelay(msg jetstream.Msg) time.Duration {
	d := 250 * time.Millisecond
	if md, err := msg.Metadata(); err == nil {
		for i := uint64(1); i < md.NumDelivered && d < 30*time.Second; i++ {
			d *= 2
		}
	}
	return min(d, 30*time.Second)
}
