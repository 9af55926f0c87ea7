package node

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Env is what a node takes from its surroundings rather than its config.
type Env struct {
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Embedded, when set, is a NATS server in the same process that the node
	// connects to in-process (the demo and tests run several nodes on one).
	Embedded *bus.Embedded
	// Outbox holds the outbox's test seams; production leaves it zero.
	Outbox outbox.Options
	// Receive holds the receiving side's test seams; production leaves it
	// zero.
	Receive receive.Options
}

// Node is a running eduspace node.
type Node struct {
	cfg        Config
	log        *slog.Logger
	now        func() time.Time
	std        *schema.Standard
	rules      policy.Rulebook
	db         *store.DB
	ev         *evidence.Log
	keys       *keys.Keys
	cred       *crypto.Credential
	credToken  string // the credential as issued (JWT)
	layout     bus.Layout
	reg        *registry.Registry
	codec      *envelope.Codec
	out        *outbox.Outbox
	agreements *agreement.Book
	shares     *share.Sharer
	consents   *consent.Ledger
	m          *metrics.Metrics
	suite      crypto.SuiteID

	emb       *bus.Embedded // started by this node; nil when not
	nc        *nats.Conn
	js        jetstream.JetStream
	consumers []jetstream.ConsumeContext
	consMu    sync.Mutex
	cons      map[string]jetstream.Consumer // by kind: deliver, receipt, control, audit

	ckpt    *checkpoint.Keeper // publishes this node's checkpoints, keeps every node's
	recv    *receive.Receiver  // stores what peers send, confirms it, erases and expires it
	started bool               // Open completed
	shareMu sync.Mutex
	agg     *aggregate.Aggregator
	ready   atomic.Bool

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	servers   []*http.Server
	adminAddr string
	closers   []func() error // in order of opening; run in reverse by Close
	once      sync.Once
	closeErr  error
}

// Open starts a node: database, keys, credential, NATS, the space's streams,
// the relay and the consumer, and the HTTP listeners. Close stops it.
func Open(ctx context.Context, cfg Config, env Env) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	n := &Node{
		cfg:    cfg,
		log:    env.Logger,
		now:    env.Now,
		std:    schema.Default(),
		rules:  policy.DefaultRulebook(),
		layout: bus.Layout{Space: cfg.Space, Replicas: cfg.NATS.Replicas},
		cons:   map[string]jetstream.Consumer{},
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("node", cfg.NodeID)
	if n.now == nil {
		n.now = time.Now
	}
	n.suite, _ = crypto.ParseSuite(cfg.Suite)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if cfg.Rulebook != "" {
		data, err := os.ReadFile(cfg.Rulebook)
		if err != nil {
			return nil, fmt.Errorf("rulebook: %w", err)
		}
		if n.rules, err = policy.ParseRulebook(data); err != nil {
			return nil, fmt.Errorf("rulebook %s: %w", cfg.Rulebook, err)
		}
	}
	if n.keys, err = keys.LoadKeys(cfg.DataDir); err != nil {
		return nil, err
	}
	root, err := crypto.ReadAuthorityPublicKey(cfg.AuthorityKey)
	if err != nil {
		return nil, fmt.Errorf("authority_public_key: %w", err)
	}
	if n.cred, n.credToken, err = cfg.loadCredential(root, n.now()); err != nil {
		return nil, err
	}
	// The credential decides which keys are current (CREDENTIALS.md §5).
	if err := n.keys.Use(n.cred); err != nil {
		return nil, fmt.Errorf("credential %s: %w", cfg.credentialPath(), err)
	}

	n.db, err = store.Open(ctx, filepath.Join(cfg.DataDir, "node.db"))
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, n.db.Close)
	n.ev = evidence.New(cfg.NodeID, n.keys.Derive("evidence subject"), n.now).UseDB(n.db)
	n.m = newMetrics(n.std)

	emb := env.Embedded
	if emb == nil && cfg.NATS.URL == "" {
		if n.emb, err = bus.StartEmbedded(filepath.Join(cfg.DataDir, "nats"), cfg.NATS.Listen); err != nil {
			return nil, err
		}
		n.closers = append(n.closers, func() error { n.emb.Shutdown(); return nil })
		emb = n.emb
	}
	n.nc, err = bus.Connect(bus.ConnectOptions{
		Name: "eduspace-" + cfg.NodeID, URL: cfg.NATS.URL, Credentials: cfg.NATS.Credentials,
		InboxPrefix: n.layout.InboxPrefix(cfg.NodeID),
		Embedded:    emb, Logger: n.log,
	})
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() error { return n.nc.Drain() })
	if cfg.NATS.Domain != "" {
		n.js, err = jetstream.NewWithDomain(n.nc, cfg.NATS.Domain)
	} else {
		n.js, err = jetstream.New(n.nc)
	}
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	kv, err := bus.Ensure(ctx, n.js, n.layout)
	if err != nil {
		return nil, err
	}
	n.reg = registry.New(kv, root, cfg.Space, n.now)
	n.codec = &envelope.Codec{NodeID: cfg.NodeID, Keys: n.keys, Registry: n.reg, Std: n.std, TTL: cfg.EnvelopeTTL, Now: n.now}
	n.out = outbox.New(outbox.Config{DB: n.db, Codec: n.codec, Evidence: n.ev, Metrics: n.m, Logger: n.log, Now: n.now,
		JetStream: n.js, MaxPayload: n.nc.MaxPayload, Blocked: func() bool { return n.ckpt.SendingBlocked() }, Options: env.Outbox})
	n.agreements = agreement.New(agreement.Config{NodeID: cfg.NodeID, Credential: n.cred, Std: n.std, DB: n.db, Evidence: n.ev,
		Keys: n.keys, Registry: n.reg, Outbox: n.out, Layout: n.layout, Now: n.now, Shares: &n.shareMu})
	n.consents = consent.New(consent.Config{NodeID: cfg.NodeID, DB: n.db, Evidence: n.ev, Metrics: n.m, Keys: n.keys,
		Registry: n.reg, Outbox: n.out, Layout: n.layout, Now: n.now, Shares: &n.shareMu})
	n.shares = share.New(share.Config{NodeID: cfg.NodeID, Std: n.std, Rules: n.rules, DB: n.db, Evidence: n.ev, Metrics: n.m,
		Logger: n.log, Now: n.now, Keys: n.keys, Registry: n.reg, Codec: n.codec, Outbox: n.out, Agreements: n.agreements,
		Layout: n.layout, MaxRecords: cfg.Batch.MaxRecords, MaxPayload: n.nc.MaxPayload, Consents: n.consents.For, Lock: &n.shareMu})
	n.out.OnDrop(n.shares.Unshare)
	n.agg = aggregate.New(aggregate.Deps{NodeID: cfg.NodeID, Cred: n.cred, Std: n.std, DB: n.db, Evidence: n.ev, Keys: n.keys,
		Registry: n.reg, Codec: n.codec, Metrics: n.m, Log: n.log, Now: n.now, Layout: n.layout, Enqueue: n.out.Enqueue,
		WakeRelay: n.out.Wake, ActiveAgreements: n.agreements.Active, ScanRecords: n.shares.ScanRecords})
	n.recv = receive.New(receive.Deps{NodeID: cfg.NodeID, DB: n.db, Evidence: n.ev, Codec: n.codec, Registry: n.reg,
		Outbox: n.out, Std: n.std, Metrics: n.m, Log: n.log, Now: n.now, Layout: n.layout, Agreement: n.receiveAgreement,
		ErasureReceipt: n.consents.ConfirmErasure, AgreementMessage: n.agreements.Handle, Aggregate: n.agg.Handle, Options: env.Receive})
	revKV, err := bus.Revocations(ctx, n.js, n.layout)
	if err != nil {
		return nil, err
	}
	if err := n.reg.LoadRevocations(ctx, revKV, cfg.DataDir, n.log); err != nil {
		return nil, err
	}
	if err := n.reg.Publish(ctx, cfg.NodeID, n.credToken); err != nil {
		return nil, err
	}
	n.ckpt = checkpoint.New(checkpoint.Deps{
		DB: n.db, Evidence: n.ev, Node: cfg.NodeID, Keys: n.keys, Registry: n.reg,
		JS: n.js, Layout: n.layout, Credential: n.credToken, Metrics: n.m, Log: n.log, Now: n.now,
		Interval: cfg.Checkpoint.Interval, MaxAge: cfg.Checkpoint.MaxAge,
	})

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		n.recv.Run(runCtx)
	}()
	go func() {
		defer n.wg.Done()
		n.reg.WatchRevocations(runCtx, revKV, n.log)
	}()
	for _, c := range []struct {
		stream, name, subject string
		handle                func(jetstream.Msg)
		buffer                jetstream.PullConsumeOpt
	}{
		// Deliveries are buffered by bytes: envelopes run to megabytes
		// (envelopePlaintext), so 256 of them could be a gigabyte.
		{n.layout.ExchangeStream(), n.layout.DeliverConsumer(cfg.NodeID), n.layout.DeliverFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Deliver(runCtx, msg) }, jetstream.PullMaxBytes(receive.DeliveryBufferBytes)},
		{n.layout.ExchangeStream(), n.layout.ReceiptConsumer(cfg.NodeID), n.layout.ReceiptFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Handle(runCtx, msg, n.out.AcceptReceipt) }, nil},
		{n.layout.ExchangeStream(), n.layout.ControlConsumer(cfg.NodeID), n.layout.ControlFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Handle(runCtx, msg, n.recv.Control) }, nil},
		{n.layout.AuditStream(), n.layout.AuditConsumer(cfg.NodeID), n.layout.AuditFilter(),
			func(msg jetstream.Msg) { n.ckpt.Handle(runCtx, msg) }, nil},
	} {
		cons, err := bus.Consumer(ctx, n.js, c.stream, c.name, c.subject)
		if err != nil {
			return nil, err
		}
		n.consMu.Lock()
		n.cons[strings.TrimSuffix(c.name, "_"+cfg.NodeID)] = cons
		n.consMu.Unlock()
		buffer := c.buffer
		if buffer == nil {
			buffer = jetstream.PullMaxMessages(256)
		}
		cc, err := cons.Consume(c.handle, buffer)
		if err != nil {
			return nil, fmt.Errorf("consume %s: %w", c.subject, err)
		}
		n.consumers = append(n.consumers, cc)
	}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		n.out.Run(runCtx)
	}()
	go func() {
		defer n.wg.Done()
		n.ckpt.Run(runCtx)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.agg.Run(runCtx)
	}()
	n.m.RegisterGauges(metrics.Gauges{
		OutboxDepth:     n.out.Depth,
		AwaitingReceipt: n.out.AwaitingReceipt,
		SequenceMissing: n.recv.SequenceMissing,
		ErasuresOpen:    n.consents.ErasuresOpen,
		EvidenceEntries: n.evidenceLength,
		ConsumerPending: n.consumerPending,
		CheckpointAge:   n.ckpt.Age,
		SendingBlocked:  n.ckpt.SendingBlocked,
	})
	if err := n.serveHTTP(); err != nil {
		return nil, err
	}
	n.started = true
	n.ready.Store(true)
	n.log.Info("node started", "space", cfg.Space, "role", string(n.cred.Role), "suite", n.suite.String(),
		"embedded_nats", emb != nil)
	return n, nil
}

// ReceivedRecords is how many records this node has stored from peers
// since it started, less those erased or expired since.
func (n *Node) ReceivedRecords() int64 { return n.recv.ReceivedRecords() }

// ExpireRetention deletes received records whose agreement's retention
// period has ended, without being asked: one pass (the node runs one at
// start and every ten minutes).
func (n *Node) ExpireRetention(ctx context.Context) error { return n.recv.ExpireRetention(ctx) }

// receiveAgreement is the agreement with id for the receiving side, which
// refuses what no active agreement covers.
func (n *Node) receiveAgreement(ctx context.Context, id string) (*policy.Agreement, error) {
	a, err := n.agreements.Get(ctx, id)
	if errors.Is(err, agreement.ErrUnknown) || errors.Is(err, agreement.ErrNotActive) {
		return nil, receive.NoAgreement(err)
	}
	return a, err
}

// Aggregator is the node's side of aggregate rounds: the center's queries
// and releases, and the node's privacy budgets.
func (n *Node) Aggregator() *aggregate.Aggregator { return n.agg }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// AdminToken is the bearer token of the admin API.
func (n *Node) AdminToken() string { return n.keys.AdminToken }

// Ready reports whether the node is serving: started, connected to NATS,
// and not failing closed for want of published checkpoints.
func (n *Node) Ready() bool {
	return n.ready.Load() && n.nc != nil && n.nc.IsConnected() && !n.ckpt.SendingBlocked()
}

// Close stops the node: HTTP first (with a fresh bounded context), then the
// consumer and the relay, then NATS, then the database — the reverse of
// opening. It is safe to call more than once.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.ready.Store(false)
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range n.servers {
			if err := s.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop http: %w", err))
			}
		}
		for _, cc := range n.consumers {
			cc.Drain()
		}
		for _, cc := range n.consumers {
			select {
			case <-cc.Closed():
			case <-ctx.Done():
			}
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		// A share still running (its request outlived the HTTP shutdown, or
		// a caller in this process) finishes before anything closes.
		n.shareMu.Lock()
		if n.started {
			// A last checkpoint, after everything else has stopped writing,
			// so that the log as it is at shutdown is covered on the space.
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := n.ckpt.Publish(cctx); err != nil {
				n.log.Warn("final checkpoint not published", "err", err)
			}
			ccancel()
		}
		n.shareMu.Unlock()
		for i := len(n.closers) - 1; i >= 0; i-- {
			if err := n.closers[i](); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.closeErr
}

func (n *Node) serveHTTP() error {
	admin := n.adminHandler()
	metrics := n.metricsHandler()
	if n.cfg.Metrics.Listen == "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics)
		mux.Handle("/", admin)
		admin = mux
	} else if _, err := n.listen(n.cfg.Metrics.Listen, metrics); err != nil {
		return err
	}
	if n.cfg.Admin.Listen != "" {
		addr, err := n.listen(n.cfg.Admin.Listen, admin)
		n.adminAddr = addr
		return err
	}
	return nil
}

// AdminAddr is the address the admin API listens on ("" when disabled); it
// resolves a configured port 0 to the port chosen.
func (n *Node) AdminAddr() string { return n.adminAddr }

func (n *Node) listen(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	n.servers = append(n.servers, s)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "addr", addr, "err", err)
		}
	}()
	n.log.Info("listening", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}

// consumerPending is how many messages wait for this node on one of its
// consumers (deliver, receipt, control, audit): not yet delivered plus
// delivered and not yet acknowledged. -1 when the server cannot say.
func (n *Node) consumerPending(ctx context.Context, kind string) (float64, error) {
	n.consMu.Lock()
	c := n.cons[kind]
	n.consMu.Unlock()
	if c == nil {
		return 0, fmt.Errorf("no %s consumer", kind)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return float64(info.NumPending) + float64(info.NumAckPending), nil
}

// Checkpoint signs and publishes a checkpoint of the evidence log now, if
// the log has grown since the last one.
func (n *Node) Checkpoint(ctx context.Context) error { return n.ckpt.Publish(ctx) }

// CheckpointHeld is the highest entry count of node's evidence log that a
// checkpoint this node holds covers (0 when none).
func (n *Node) CheckpointHeld(ctx context.Context, node string) (int64, error) {
	count, _, err := n.ckpt.Latest(ctx, node)
	return count, err
}

// RevocationSerial is the serial of the newest revocation list this node
// has verified and checks peers against, 0 when it holds none.
func (n *Node) RevocationSerial() uint64 { return n.reg.RevocationSerial() }

// count runs a query returning one number.
func (n *Node) count(ctx context.Context, query string) (float64, error) {
	var k sql.NullInt64
	if err := n.db.R.QueryRowContext(ctx, query).Scan(&k); err != nil {
		return 0, err
	}
	return float64(k.Int64), nil
}

func (n *Node) evidenceLength(ctx context.Context) (float64, error) {
	return n.count(ctx, `SELECT coalesce(max(seq), 0) FROM evidence`)
}

// enqueue seals and queues one envelope to the outbox inside tx.
func (n *Node) enqueue(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error) {
	return n.out.Enqueue(ctx, tx, h, to, subject, plaintext, records)
}

// wakeRelay makes the relay look at the outbox now.
func (n *Node) wakeRelay() { n.out.Wake() }
