package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Watcher is the name of node's consumer on each key-value bucket it
// watches (the registry, for its own entry; the revocation bucket). The
// name is node's own, so the generated permissions let node create, read
// and delete that consumer and no other: a member cannot delete or take
// over another's watcher, nor open more than one on a bucket. nats.go's
// KeyValue.Watch names its ordered consumers at random, which a server
// can only permit for every member at once.
func (l Layout) Watcher(node string) string { return "watch_" + node }

// WatcherInactive is how long a watcher outlives its node: the server
// deletes a watcher nobody pulled from for this long.
const WatcherInactive = 2 * time.Minute

// KVChange is one change of a key as Watch sees it.
type KVChange struct {
	Key   string
	Op    jetstream.KeyValueOp // put, delete or purge
	Value []byte
}

// Watch hands update every change of the keys of bucket that filter
// selects ("" for the whole bucket), starting with each key's newest
// value, through the consumer named consumer (Layout.Watcher), until ctx
// ends (it returns nil then) or the watch fails: the consumer was deleted,
// the server stopped sending heartbeats, a pull or acknowledgement failed.
// A watch starts afresh: a consumer of the name left over is deleted
// first, so that every key's newest value comes again.
func Watch(ctx context.Context, js jetstream.JetStream, bucket, consumer, filter string, update func(KVChange)) error {
	stream := "KV_" + bucket
	prefix := "$KV." + bucket + "."
	if filter == "" {
		filter = ">"
	}
	if err := js.DeleteConsumer(ctx, stream, consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("watch %s: delete the consumer left over: %w", bucket, err)
	}
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Name:              consumer,
		FilterSubject:     prefix + filter,
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           30 * time.Second,
		MaxDeliver:        -1,
		MaxAckPending:     64,
		InactiveThreshold: WatcherInactive,
	})
	if err != nil {
		return fmt.Errorf("watch %s: create consumer %s: %w", bucket, consumer, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return fmt.Errorf("watch %s: %w", bucket, err)
	}
	defer it.Stop()
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("watch %s: %w", bucket, err)
		}
		c := KVChange{Key: strings.TrimPrefix(msg.Subject(), prefix), Op: jetstream.KeyValuePut, Value: msg.Data()}
		switch msg.Headers().Get("KV-Operation") {
		case "DEL":
			c.Op = jetstream.KeyValueDelete
		case "PURGE":
			c.Op = jetstream.KeyValuePurge
		}
		update(c)
		if err := msg.Ack(); err != nil {
			return fmt.Errorf("watch %s: acknowledge: %w", bucket, err)
		}
	}
}
