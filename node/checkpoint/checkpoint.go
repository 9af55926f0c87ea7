// Package checkpoint commits a node's evidence log on the space: every
// interval while the log grows, the node signs its head (entry count and
// last hash) with its checkpoint key and publishes it on the space's audit
// stream, and it keeps the checkpoints every node of the space publishes,
// its own included, each verified against the signer's credential. It owns
// the checkpoints table.
//
// It must never publish a checkpoint that does not cover the whole log as
// read at signing, never keep a checkpoint it has not verified, and never
// let a second, different checkpoint for the same node and count replace
// the one it holds. While its own log has gone uncovered by a published
// checkpoint for longer than the maximum age, [Keeper.SendingBlocked]
// reports that the node fails closed.
package checkpoint

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
)

// Deps is what a Keeper works with.
type Deps struct {
	DB       *store.DB
	Evidence *evidence.Log // the log whose head is signed
	Node     string        // this node's id
	Keys     *keys.Keys    // Keys.Checkpoint signs
	Registry *registry.Registry
	JS       jetstream.JetStream
	Layout   bus.Layout // its Space is the space checkpoints are of
	// Credential is this node's member credential as issued (JWT), kept
	// with its own checkpoints.
	Credential string
	Metrics    *metrics.Metrics
	Log        *slog.Logger
	Now        func() time.Time
	// Interval is how often Run publishes while the log grows.
	Interval time.Duration
	// MaxAge is how long the log may go uncovered before the node fails
	// closed.
	MaxAge time.Duration
	// TSA, when set, anchors each of this node's checkpoints with an RFC
	// 3161 time-stamp token over SHA-256 of the signed checkpoint, kept
	// with it. A TSA that fails leaves the checkpoint unanchored; it is
	// published all the same.
	TSA *timestamp.Client
}

// Keeper publishes this node's checkpoints and keeps every node's.
type Keeper struct {
	d Deps

	mu    sync.Mutex
	count int64 // entries covered by the last published checkpoint
	// published is when the log was last known fully covered; zero until
	// this process has seen it so. It only spares SendingBlocked a read:
	// the age itself comes from the log and the checkpoints kept.
	published time.Time
	// restored, when set, says how the space shows this node's database
	// to be an older copy than the one it published from (CheckRestored):
	// nothing is sent and no checkpoint published until it is recovered.
	restored atomic.Pointer[string]
	// space is the space's newest checkpoint of this node, as CheckRestored
	// read it: the head a recovery goes on from.
	space *spaceCheckpoint
	// anchorLogged is when a TSA failure was last logged.
	anchorLogged time.Time
}

// New returns a Keeper; Load reads what its checkpoints cover.
func New(d Deps) *Keeper {
	return &Keeper{d: d}
}

// Load reads how much of the log the node's own published checkpoints
// cover, as kept in the database, and whether a restore found out by a
// replay refusal awaits its recovery (Rewound). Until it has, the whole
// log counts as uncovered: a node that cannot tell fails closed.
func (k *Keeper) Load(ctx context.Context) error {
	var own sql.NullInt64
	if err := k.d.DB.R.QueryRowContext(ctx, `SELECT max(count) FROM checkpoints WHERE node = ?`, k.d.Node).Scan(&own); err != nil {
		return fmt.Errorf("read own checkpoints: %w", err)
	}
	k.mu.Lock()
	k.count = max(k.count, own.Int64)
	k.mu.Unlock()
	return k.loadRewound(ctx)
}

// CheckRestored compares the node's log with last, the newest checkpoint
// of it the space holds (the audit stream, bus.Client.LastMessage; nil
// when there is none). A checkpoint that covers more entries than the log
// holds, or whose head differs from the log's at its count, shows the
// database restored from an older copy, or the log rewritten: the node
// then fails closed (SendingBlocked), publishes no checkpoint that would
// contradict the space's, and Restored says why. A checkpoint that cannot
// be verified (its key retired since) is logged and leaves the node as it
// is.
func (k *Keeper) CheckRestored(ctx context.Context, last []byte) error {
	if last == nil {
		return nil
	}
	node, keyID, err := crypto.CheckpointSigner(last)
	if err != nil || node != k.d.Node {
		k.d.Log.Warn("own newest checkpoint on the space unreadable; not compared", "err", err)
		return nil
	}
	cred, err := k.d.Registry.Lookup(ctx, k.d.Node)
	if err != nil {
		return fmt.Errorf("compare with the space's checkpoint: %w", err)
	}
	if !cred.HasCheckpointKey(keyID) {
		k.d.Log.Warn("own newest checkpoint on the space signed by a key the credential no longer lists; not compared", "key", keyID)
		return nil
	}
	c, err := cred.VerifyCheckpoint(last)
	if err != nil {
		k.d.Log.Warn("own newest checkpoint on the space does not verify; not compared", "err", err)
		return nil
	}
	count, _, err := k.d.Evidence.Head(ctx)
	if err != nil {
		return err
	}
	var why string
	if int64(c.Count) > count {
		why = fmt.Sprintf("the space holds this node's checkpoint of %d evidence entries (signed %s), its database has %d",
			c.Count, c.Time.UTC().Format(time.RFC3339), count)
	} else if h, err := k.d.Evidence.HashAt(ctx, int64(c.Count)); err != nil {
		return err
	} else if c.Count > 0 && !bytes.Equal(h, c.Head[:]) {
		why = fmt.Sprintf("the evidence log differs at entry %d from the checkpoint of it the space holds (signed %s)",
			c.Count, c.Time.UTC().Format(time.RFC3339))
	}
	if why == "" {
		return nil
	}
	why = "database restored from an older copy: " + why +
		"; nothing is sent until it is recovered: run `eduspace node recover` (deploy/README.md, Backup and restore)"
	k.failRestored(why, &spaceCheckpoint{c: *c, data: last})
	k.d.Log.Error("database older than the space's record of it: failing closed", "reason", why)
	return nil
}

// Rewound fails the node closed when peer refused its envelopes as
// replayed: the peer holds other envelopes of this node under their
// sequence numbers, so its database was restored from a copy newer than
// its newest checkpoint on the space (which CheckRestored compares at
// start) and older than what it sent. Like CheckRestored, it freezes the
// evidence log until the node is recovered; the log goes on after its own
// newest checkpoint. The state is kept in the database (table rewound):
// a restart does not clear it.
func (k *Keeper) Rewound(ctx context.Context, peer string) {
	if k.restored.Load() != nil {
		return
	}
	why := "database restored from an older copy: " + peer + " refused envelopes of this node as replayed " +
		"(it holds others under their sequence numbers); nothing is sent until it is recovered: run `eduspace node recover` " +
		"(deploy/README.md, Backup and restore)"
	if err := k.d.DB.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO rewound(id, reason, at_ms) VALUES (1, ?, ?)`, why, k.d.Now().UnixMilli())
		return err
	}); err != nil {
		k.d.Log.Error("restore found out by a replay refusal not recorded; failing closed until restarted", "err", err)
	}
	k.rewind(ctx, why)
	k.d.Log.Error("a peer holds newer envelopes of this node than its database: failing closed", "peer", peer)
}

// rewind fails the node closed for why, found by a peer's replay refusal:
// its log goes on from its own head, after the newest checkpoint the
// database keeps of it.
func (k *Keeper) rewind(ctx context.Context, why string) {
	sc := &spaceCheckpoint{replay: true}
	var count int64
	var head []byte
	err := k.d.DB.R.QueryRowContext(ctx, `SELECT count, head FROM checkpoints WHERE node = ? ORDER BY count DESC LIMIT 1`, k.d.Node).Scan(&count, &head)
	if err == nil && len(head) == len(sc.c.Head) {
		sc.c.Count = uint64(count)
		copy(sc.c.Head[:], head)
	}
	k.failRestored(why, sc)
}

// failRestored fails the node closed for why, a restore, and freezes its
// evidence log until it is recovered after sc.
func (k *Keeper) failRestored(why string, sc *spaceCheckpoint) {
	k.mu.Lock()
	k.space = sc
	k.mu.Unlock()
	k.d.Evidence.Freeze(why)
	k.restored.Store(&why)
}

// loadRewound fails the node closed again when a restore found out by a
// replay refusal was not recovered before the node stopped.
func (k *Keeper) loadRewound(ctx context.Context) error {
	var why string
	err := k.d.DB.R.QueryRowContext(ctx, `SELECT reason FROM rewound WHERE id = 1`).Scan(&why)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read restore state: %w", err)
	}
	k.rewind(ctx, why)
	k.d.Log.Error("database restored from an older copy and not yet recovered: failing closed", "reason", why)
	return nil
}

// spaceCheckpoint is a checkpoint of this node the space holds.
type spaceCheckpoint struct {
	c    crypto.Checkpoint
	data []byte // as signed; nil for one the database keeps already (Rewound)
	// replay: the restore was found by a peer's replay refusal, after the
	// node had run on the copy for a while; when the copy was taken is
	// not known.
	replay bool
}

// SpaceCheckpoint is the space's newest checkpoint of this node when the
// node is restored from an older copy (Restored): what its log is
// recovered after (evidence.Log.AppendRecovery).
func (k *Keeper) SpaceCheckpoint() (evidence.Checkpoint, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.space == nil || k.restored.Load() == nil {
		return evidence.Checkpoint{}, false
	}
	return evidence.Checkpoint{Count: int64(k.space.c.Count), Head: k.space.c.Head[:]}, true
}

// FoundByReplay reports whether the restore was found by a peer's replay
// refusal (Rewound) rather than at start: the node has run on the copy
// since, so what it holds tells neither when the copy was taken nor what
// it received before.
func (k *Keeper) FoundByReplay() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.space != nil && k.space.replay
}

// KeepRecovered writes, inside tx, what a recovery settles of the restore:
// the space's checkpoint the log goes on from is kept among this node's
// own, and a restore found by a replay refusal is cleared.
func (k *Keeper) KeepRecovered(ctx context.Context, tx *sql.Tx) error {
	k.mu.Lock()
	sc := k.space
	k.mu.Unlock()
	if sc == nil {
		return errors.New("not restored from an older copy: nothing to recover")
	}
	if sc.data != nil { // the space's, which the copy does not hold
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO checkpoints(node, count, head, time_ms, data, credential) VALUES (?, ?, ?, ?, ?, ?)`,
			k.d.Node, sc.c.Count, sc.c.Head[:], sc.c.Time.UnixMilli(), sc.data, k.d.Credential); err != nil {
			return fmt.Errorf("keep the space's checkpoint: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM rewound`); err != nil {
		return fmt.Errorf("clear restore state: %w", err)
	}
	return nil
}

// Recovered ends the failing closed of a restored node once its recovery
// committed (node/recovery, with KeepRecovered): the next Publish covers
// the log from the checkpoint it recovered after.
func (k *Keeper) Recovered(ctx context.Context) error {
	k.mu.Lock()
	sc := k.space
	if sc == nil {
		k.mu.Unlock()
		return errors.New("not restored from an older copy: nothing to recover")
	}
	k.count = max(k.count, int64(sc.c.Count))
	k.space = nil
	k.mu.Unlock()
	k.restored.Store(nil)
	k.d.Log.Info("recovered from a restore: sending again", "checkpoint", sc.c.Count)
	return nil
}

// Restored says why the node's database is older than the space's record
// of it (CheckRestored), "" when it is not.
func (k *Keeper) Restored() string {
	if why := k.restored.Load(); why != nil {
		return *why
	}
	return ""
}

// Run signs and publishes a checkpoint every interval while the evidence
// log grows, until ctx ends. The first is published at once: a node
// restarted with a log that went uncovered too long fails closed until
// then.
func (k *Keeper) Run(ctx context.Context) {
	tick := time.NewTicker(k.d.Interval)
	defer tick.Stop()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := k.Publish(pctx); err != nil && ctx.Err() == nil {
			k.d.Log.Warn("checkpoint not published; will retry", "err", err, "uncovered_for", k.Age().Round(time.Second))
		}
		cancel()
	}
}

// Publish signs the evidence head with the node's checkpoint key,
// publishes it on the space and keeps it; nothing happens when the last
// published checkpoint already covers the whole log.
func (k *Keeper) Publish(ctx context.Context) error {
	if why := k.Restored(); why != "" {
		return errors.New(why)
	}
	count, hash, err := k.d.Evidence.Head(ctx)
	if err != nil {
		return err
	}
	now := k.d.Now()
	k.mu.Lock()
	covered := count <= k.count
	if covered {
		k.published = now
	}
	k.mu.Unlock()
	if covered {
		return nil
	}
	c := crypto.Checkpoint{Space: k.d.Layout.Space, Node: k.d.Node, Count: uint64(count), Time: now}
	copy(c.Head[:], hash)
	data, err := k.d.Keys.SignCheckpoint(c)
	if err != nil {
		return err
	}
	token := k.anchor(ctx, data)
	if _, err := k.d.JS.Publish(ctx, k.d.Layout.AuditSubject(k.d.Node), data,
		jetstream.WithMsgID(fmt.Sprintf("%s-%d", k.d.Node, count))); err != nil {
		return fmt.Errorf("publish checkpoint: %w", err)
	}
	if err := k.store(ctx, k.d.Node, c, data, k.d.Credential, token); err != nil {
		return err
	}
	if token != nil {
		k.d.Metrics.CheckpointsAnchored.Inc()
	}
	k.mu.Lock()
	k.count = max(k.count, count)
	k.published = now
	k.mu.Unlock()
	k.d.Metrics.CheckpointsPublished.Inc()
	return nil
}

// anchorTimeout bounds a TSA request, so that a slow TSA leaves time to
// publish within Run's five seconds.
const anchorTimeout = 3 * time.Second

// anchor asks the TSA, if one is configured, for a time-stamp token over
// SHA-256 of the signed checkpoint data. A failure is counted and logged
// (at most once a minute) and returns nil: the checkpoint goes out
// unanchored.
func (k *Keeper) anchor(ctx context.Context, data []byte) []byte {
	if k.d.TSA == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, anchorTimeout)
	defer cancel()
	digest := evidence.Signed{Data: data}.Digest()
	token, _, err := k.d.TSA.Stamp(ctx, digest)
	if err == nil {
		return token
	}
	k.d.Metrics.AnchorFailures.Inc()
	now := k.d.Now()
	k.mu.Lock()
	quiet := !k.anchorLogged.IsZero() && now.Sub(k.anchorLogged) < time.Minute
	if !quiet {
		k.anchorLogged = now
	}
	k.mu.Unlock()
	if !quiet {
		k.d.Log.Warn("checkpoint not anchored: the TSA failed; publishing it unanchored", "err", err)
	}
	return nil
}

// Anchoring reports whether a TSA is configured to anchor checkpoints.
func (k *Keeper) Anchoring() bool { return k.d.TSA != nil }

// LastAnchored is the time, as its TSA stamped it, of this node's newest
// checkpoint kept with a time-stamp token; the zero time when there is
// none. The token is read as stored, not verified again.
func (k *Keeper) LastAnchored(ctx context.Context) (time.Time, error) {
	var der []byte
	err := k.d.DB.R.QueryRowContext(ctx, `SELECT tsa_token FROM checkpoints WHERE node = ? AND tsa_token IS NOT NULL ORDER BY count DESC LIMIT 1`, k.d.Node).Scan(&der)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read checkpoints: %w", err)
	}
	tok, err := timestamp.Parse(der)
	if err != nil {
		return time.Time{}, fmt.Errorf("read last anchored checkpoint: %w", err)
	}
	return tok.Time, nil
}

// store keeps a verified checkpoint, with its time-stamp token if any. A second, different checkpoint for the
// same node and count is equivocation: it is kept out, counted and logged.
func (k *Keeper) store(ctx context.Context, node string, c crypto.Checkpoint, data []byte, credential string, token []byte) error {
	return k.d.DB.Write(ctx, func(tx *sql.Tx) error {
		var head, data0, token0 []byte
		err := tx.QueryRowContext(ctx, `SELECT head, data, tsa_token FROM checkpoints WHERE node = ? AND count = ?`, node, c.Count).Scan(&head, &data0, &token0)
		switch {
		case err == nil:
			if !bytes.Equal(head, c.Head[:]) {
				k.d.Metrics.CheckpointConflicts.Inc()
				k.d.Log.Error("conflicting checkpoints: a node signed two different heads for the same count", "peer", node, "count", c.Count)
				return nil
			}
			// This node's own checkpoint may come back on the audit stream
			// and be kept before Publish keeps it with its token: the
			// token, which stamps these very bytes, is added then.
			if token != nil && token0 == nil && bytes.Equal(data0, data) {
				if _, err := tx.ExecContext(ctx, `UPDATE checkpoints SET tsa_token = ? WHERE node = ? AND count = ?`, token, node, c.Count); err != nil {
					return fmt.Errorf("store checkpoint token: %w", err)
				}
			}
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read checkpoints: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(node, count, head, time_ms, data, credential, tsa_token) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			node, c.Count, c.Head[:], c.Time.UnixMilli(), data, credential, token); err != nil {
			return fmt.Errorf("store checkpoint: %w", err)
		}
		return nil
	})
}

// Handle verifies and keeps a checkpoint published by any node of the
// space (this node's own included), as the audit consumer delivers it: a
// refused checkpoint is terminated, one that could not be stored is
// delivered again later.
func (k *Keeper) Handle(ctx context.Context, msg jetstream.Msg) {
	err := k.accept(ctx, msg.Subject(), msg.Data())
	var ref *envelope.Refusal
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			k.d.Log.Warn("ack checkpoint", "err", err)
		}
	case errors.As(err, &ref):
		k.d.Log.Warn("checkpoint refused", "reason", ref.Reason, "err", ref.Err)
		k.d.Metrics.Refused.WithLabelValues(ref.Reason).Inc()
		if err := msg.Term(); err != nil {
			k.d.Log.Warn("term checkpoint", "err", err)
		}
	default:
		if ctx.Err() != nil {
			return // shutting down: the message is redelivered after AckWait
		}
		k.d.Log.Warn("checkpoint not stored; will retry", "err", err)
		k.d.Metrics.Retried.WithLabelValues("audit").Inc()
		if err := msg.NakWithDelay(bus.RedeliveryDelay(msg)); err != nil {
			k.d.Log.Warn("nak checkpoint", "err", err)
		}
	}
}

func (k *Keeper) accept(ctx context.Context, subject string, data []byte) error {
	from := subject[strings.LastIndexByte(subject, '.')+1:]
	node, keyID, err := crypto.CheckpointSigner(data)
	if err != nil {
		return envelope.Refuse(envelope.RefuseMalformed, err)
	}
	if node != from {
		return envelope.Refuse(envelope.RefuseMisaddressed, fmt.Errorf("checkpoint of %q published on %q's subject", node, from))
	}
	reg := k.d.Registry
	cred, token, err := reg.LookupToken(ctx, node)
	if errors.Is(err, registry.ErrUnknownMember) {
		return envelope.Refuse(envelope.RefuseUnknownPeer, err)
	}
	if err != nil {
		return err
	}
	ok := cred.HasCheckpointKey(keyID)
	if !ok {
		// Perhaps the node rotated its keys and the cached credential is
		// older than the checkpoint: read the registry again first.
		fresh, err := reg.LookupFresh(ctx, node)
		if err != nil {
			k.d.Log.Warn("registry not read again for an unknown checkpoint key", "peer", node, "key", keyID, "err", err)
		} else if ok = fresh.HasCheckpointKey(keyID); ok {
			cred = fresh
			if _, token, err = reg.LookupToken(ctx, node); err != nil {
				return err
			}
		}
	}
	if !ok {
		return envelope.Refuse(envelope.RefuseUnknownKey, fmt.Errorf("no checkpoint key %q", keyID))
	}
	c, err := cred.VerifyCheckpoint(data)
	if err != nil {
		return envelope.Refuse(envelope.RefuseSignature, err)
	}
	if err := reg.CheckRevoked(node, keyID, k.d.Now()); err != nil {
		return envelope.Refuse(envelope.RefuseRevoked, err)
	}
	if c.Space != k.d.Layout.Space || c.Node != node {
		return envelope.Refuse(envelope.RefuseMisaddressed, errors.New("checkpoint of another space or node"))
	}
	if err := k.store(ctx, node, *c, data, token, nil); err != nil {
		return err
	}
	k.d.Metrics.CheckpointsReceived.Inc()
	return nil
}

// Age is how long the evidence log has had entries that no published
// checkpoint covers: since the first such entry was written, as the log
// records it, so that it survives a restart; zero when it is fully
// covered. A log that cannot be read counts as uncovered for ever.
func (k *Keeper) Age() time.Duration {
	age, err := k.age(context.Background())
	if err != nil {
		k.d.Log.Error("checkpoint age unknown: the node fails closed", "err", err)
		return time.Duration(math.MaxInt64)
	}
	return age
}

func (k *Keeper) age(ctx context.Context) (time.Duration, error) {
	count, _, err := k.d.Evidence.Head(ctx)
	if err != nil {
		return 0, err
	}
	now := k.d.Now()
	k.mu.Lock()
	covered := k.count
	if count <= covered {
		k.published = now
	}
	k.mu.Unlock()
	if count <= covered {
		return 0, nil
	}
	first, err := k.d.Evidence.EntryTime(ctx, covered+1)
	if err != nil {
		return 0, err
	}
	return max(now.Sub(first), 0), nil
}

// SendingBlocked reports whether the node fails closed: evidence has gone
// uncovered by a published checkpoint for longer than MaxAge.
//
// It is Age() > MaxAge, without reading the log while this process last
// saw it covered within MaxAge: Age is then at most that long whatever
// the head, so the answer is the same. The relay asks before every page,
// the readiness probe on every request.
func (k *Keeper) SendingBlocked() bool {
	if k.restored.Load() != nil {
		return true
	}
	k.mu.Lock()
	recent := !k.published.IsZero() && k.d.Now().Sub(k.published) <= k.d.MaxAge
	k.mu.Unlock()
	if recent && k.d.MaxAge >= 0 {
		return false
	}
	return k.Age() > k.d.MaxAge
}

// Held is the latest checkpoint of one node's evidence log that this node
// holds.
type Held struct {
	Node  string
	Count int64     // entries it covers
	At    time.Time // when it was signed
}

// Latest is the highest entry count of node's evidence log that a
// checkpoint this node holds covers, and the latest signing time among
// them; 0 and the zero time when it holds none.
func (k *Keeper) Latest(ctx context.Context, node string) (count int64, at time.Time, err error) {
	var c, t sql.NullInt64
	if err := k.d.DB.R.QueryRowContext(ctx, `SELECT max(count), max(time_ms) FROM checkpoints WHERE node = ?`, node).Scan(&c, &t); err != nil {
		return 0, time.Time{}, fmt.Errorf("read checkpoints: %w", err)
	}
	if t.Valid {
		at = time.UnixMilli(t.Int64)
	}
	return c.Int64, at, nil
}

// Nodes is Latest for every node this node holds checkpoints of, in no
// particular order.
func (k *Keeper) Nodes(ctx context.Context) ([]Held, error) {
	rows, err := k.d.DB.R.QueryContext(ctx, `SELECT node, max(count), max(time_ms) FROM checkpoints GROUP BY node`)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Held
	for rows.Next() {
		var h Held
		var t int64
		if err := rows.Scan(&h.Node, &h.Count, &t); err != nil {
			return nil, fmt.Errorf("read checkpoints: %w", err)
		}
		h.At = time.UnixMilli(t)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return out, nil
}

// Credential verifies, as of now, the member credential that came with
// node's latest checkpoint.
func (k *Keeper) Credential(ctx context.Context, node string, now time.Time) (*crypto.Credential, error) {
	var tok string
	if err := k.d.DB.R.QueryRowContext(ctx, `SELECT credential FROM checkpoints WHERE node = ? ORDER BY count DESC LIMIT 1`, node).Scan(&tok); err != nil {
		return nil, err
	}
	return crypto.ParseCredential(tok, k.d.Registry.Root(), k.d.Layout.Space, now)
}
