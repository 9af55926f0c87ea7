package node

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/registry"
)

// checkpointState is what the node knows of its own last published
// checkpoint.
type checkpointState struct {
	mu        sync.Mutex
	count     int64     // entries covered by the last published checkpoint
	published time.Time // when the log was last known fully covered
}

func (c *checkpointState) init(now time.Time) {
	c.mu.Lock()
	c.published = now
	c.mu.Unlock()
}

// checkpointer signs and publishes a checkpoint every interval while the
// evidence log grows.
func (n *Node) checkpointer(ctx context.Context) {
	var own sql.NullInt64
	if err := n.db.R.QueryRowContext(ctx, `SELECT max(count) FROM checkpoints WHERE node = ?`, n.cfg.NodeID).Scan(&own); err == nil {
		n.ckpt.mu.Lock()
		n.ckpt.count = own.Int64
		n.ckpt.mu.Unlock()
	}
	tick := time.NewTicker(n.cfg.Checkpoint.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := n.publishCheckpoint(pctx); err != nil && ctx.Err() == nil {
			n.log.Warn("checkpoint not published; will retry", "err", err, "uncovered_for", n.checkpointAge().Round(time.Second))
		}
		cancel()
	}
}

// head reads the evidence chain's length and last hash.
func (n *Node) head(ctx context.Context) (int64, []byte, error) {
	var count int64
	var hash []byte
	err := n.db.R.QueryRowContext(ctx, `SELECT seq, hash FROM evidence ORDER BY seq DESC LIMIT 1`).Scan(&count, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read evidence head: %w", err)
	}
	return count, hash, nil
}

// publishCheckpoint signs the evidence head with the node's composite key,
// publishes it on the space and keeps it; nothing happens when the last
// published checkpoint already covers the whole log.
func (n *Node) publishCheckpoint(ctx context.Context) error {
	count, hash, err := n.head(ctx)
	if err != nil {
		return err
	}
	now := n.now()
	n.ckpt.mu.Lock()
	covered := count <= n.ckpt.count
	if covered {
		n.ckpt.published = now
	}
	n.ckpt.mu.Unlock()
	if covered {
		return nil
	}
	c := crypto.Checkpoint{Space: n.cfg.Space, Node: n.cfg.NodeID, Count: uint64(count), Time: now}
	copy(c.Head[:], hash)
	data, err := crypto.SignCheckpoint(n.keys.Checkpoint, c)
	if err != nil {
		return err
	}
	if _, err := n.js.Publish(ctx, n.layout.AuditSubject(n.cfg.NodeID), data,
		jetstream.WithMsgID(fmt.Sprintf("%s-%d", n.cfg.NodeID, count))); err != nil {
		return fmt.Errorf("publish checkpoint: %w", err)
	}
	if err := n.storeCheckpoint(ctx, n.cfg.NodeID, c, data, n.credToken); err != nil {
		return err
	}
	n.ckpt.mu.Lock()
	n.ckpt.count = max(n.ckpt.count, count)
	n.ckpt.published = now
	n.ckpt.mu.Unlock()
	n.m.CheckpointsPublished.Inc()
	return nil
}

// storeCheckpoint keeps a verified checkpoint. A second, different
// checkpoint for the same node and count is equivocation: it is kept out,
// counted and logged.
func (n *Node) storeCheckpoint(ctx context.Context, node string, c crypto.Checkpoint, data []byte, credential string) error {
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		var head []byte
		err := tx.QueryRowContext(ctx, `SELECT head FROM checkpoints WHERE node = ? AND count = ?`, node, c.Count).Scan(&head)
		switch {
		case err == nil:
			if !bytes.Equal(head, c.Head[:]) {
				n.m.CheckpointConflicts.Inc()
				n.log.Error("conflicting checkpoints: a node signed two different heads for the same count", "peer", node, "count", c.Count)
			}
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read checkpoints: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(node, count, head, time_ms, data, credential) VALUES (?, ?, ?, ?, ?, ?)`,
			node, c.Count, c.Head[:], c.Time.UnixMilli(), data, credential); err != nil {
			return fmt.Errorf("store checkpoint: %w", err)
		}
		return nil
	})
}

// receiveCheckpoint verifies and keeps a checkpoint published by any node
// of the space (this node's own included).
func (n *Node) receiveCheckpoint(ctx context.Context, msg jetstream.Msg) {
	err := n.acceptCheckpoint(ctx, msg.Subject(), msg.Data())
	var ref *envelope.Refusal
	switch {
	case err == nil:
		msg.Ack()
	case errors.As(err, &ref):
		n.log.Warn("checkpoint refused", "reason", ref.Reason, "err", ref.Err)
		n.m.Refused.WithLabelValues(ref.Reason).Inc()
		msg.Term()
	default:
		if ctx.Err() == nil {
			n.log.Warn("checkpoint not stored; will retry", "err", err)
			msg.NakWithDelay(redeliveryDelay(msg))
		}
	}
}

func (n *Node) acceptCheckpoint(ctx context.Context, subject string, data []byte) error {
	from := subject[strings.LastIndexByte(subject, '.')+1:]
	node, keyID, err := crypto.CheckpointSigner(data)
	if err != nil {
		return envelope.Refuse(envelope.RefuseMalformed, err)
	}
	if node != from {
		return envelope.Refuse(envelope.RefuseMisaddressed, fmt.Errorf("checkpoint of %q published on %q's subject", node, from))
	}
	cred, token, err := n.reg.LookupToken(ctx, node)
	if errors.Is(err, registry.ErrUnknownMember) {
		return envelope.Refuse(envelope.RefuseUnknownPeer, err)
	}
	if err != nil {
		return err
	}
	vk, ok := cred.CheckpointKey(keyID)
	if !ok {
		// Perhaps the node rotated its keys and the cached credential is
		// older than the checkpoint: read the registry again first.
		if fresh, err := n.reg.LookupFresh(ctx, node); err == nil {
			if vk, ok = fresh.CheckpointKey(keyID); ok {
				_, token, _ = n.reg.LookupToken(ctx, node)
			}
		}
	}
	if !ok {
		return envelope.Refuse(envelope.RefuseUnknownKey, fmt.Errorf("no checkpoint key %q", keyID))
	}
	c, err := crypto.ParseCheckpoint(data, vk)
	if err != nil {
		return envelope.Refuse(envelope.RefuseSignature, err)
	}
	if err := n.reg.CheckRevoked(node, keyID, n.now()); err != nil {
		return envelope.Refuse(envelope.RefuseRevoked, err)
	}
	if c.Space != n.cfg.Space || c.Node != node {
		return envelope.Refuse(envelope.RefuseMisaddressed, errors.New("checkpoint of another space or node"))
	}
	if err := n.storeCheckpoint(ctx, node, *c, data, token); err != nil {
		return err
	}
	n.m.CheckpointsReceived.Inc()
	return nil
}

// checkpointAge is how long the evidence log has had entries that no
// published checkpoint covers; zero when it is fully covered.
func (n *Node) checkpointAge() time.Duration {
	count, _, err := n.head(context.Background())
	n.ckpt.mu.Lock()
	defer n.ckpt.mu.Unlock()
	if err == nil && count <= n.ckpt.count {
		return 0
	}
	return n.now().Sub(n.ckpt.published)
}

// sendingBlocked reports whether the node fails closed: evidence has gone
// uncovered by a published checkpoint for longer than checkpoint.max_age.
//
// It is checkpointAge() > max_age, without reading the evidence head while
// the log was last known covered within max_age: checkpointAge is then at
// most that long ago whatever the head, so the answer is the same. The
// relay asks before every page, the readiness probe on every request.
func (n *Node) sendingBlocked() bool {
	n.ckpt.mu.Lock()
	recent := n.now().Sub(n.ckpt.published) <= n.cfg.Checkpoint.MaxAge
	n.ckpt.mu.Unlock()
	if recent && n.cfg.Checkpoint.MaxAge >= 0 {
		return false
	}
	return n.checkpointAge() > n.cfg.Checkpoint.MaxAge
}

// Checkpoint signs and publishes a checkpoint of the evidence log now, if
// the log has grown since the last one.
func (n *Node) Checkpoint(ctx context.Context) error { return n.publishCheckpoint(ctx) }

// CheckpointHeld is the highest entry count of node's evidence log that a
// checkpoint this node holds covers (0 when none).
func (n *Node) CheckpointHeld(ctx context.Context, node string) (int64, error) {
	var c sql.NullInt64
	err := n.db.R.QueryRowContext(ctx, `SELECT max(count) FROM checkpoints WHERE node = ?`, node).Scan(&c)
	return c.Int64, err
}
