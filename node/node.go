package node

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/recovery"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/release"
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
	// DataKey holds the data key rotation's test seams; production leaves
	// it zero.
	DataKey DataKeyOptions
	// Linkage holds the linkage service's test seams; production leaves
	// it zero.
	Linkage linkage.Options
}

// Node is a running eduspace node: the parts along a record's way, wired
// together, and what runs them.
type Node struct {
	cfg        Config
	log        *slog.Logger
	logLimit   *limitState // the repeated warnings left out of log (logs.go)
	db         *store.DB
	bus        *bus.Client
	reg        *registry.Registry
	out        *outbox.Outbox
	ckpt       *checkpoint.Keeper
	agreements *agreement.Book
	consents   *consent.Ledger
	recv       *receive.Receiver
	shares     *share.Sharer
	releases   *release.Releaser
	agg        *aggregate.Aggregator
	cat        *catalogue.Catalogue
	dsp        dspServer
	recovery   *recovery.Service
	linkage    *linkage.Service
	admin      *admin.Server
	dataKeys   *dataKeys
	health     *health
	run        runner
}

// runner is what Open starts and Close stops: the node's goroutines, under
// one context, and what it closes, in reverse order of opening.
type runner struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []func() error // in order of opening
	started bool           // Open completed
	ready   atomic.Bool
	once    sync.Once
	err     error
}

// Open starts a node: database, keys, credential, NATS, the space's
// streams, the parts along a record's way and their loops, the consumers,
// and the HTTP listeners. Close stops it.
func Open(ctx context.Context, cfg Config, env Env) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	n := &Node{cfg: cfg, log: env.Logger}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.log = n.log.With("node", cfg.NodeID)
	limited := newLimitedHandler(n.log.Handler(), time.Now)
	n.log, n.logLimit = slog.New(limited), limited.st
	now := env.Now
	if now == nil {
		now = time.Now
	}
	suite, err := crypto.ParseSuite(cfg.Suite)
	if err != nil {
		return nil, fmt.Errorf("config: suite: %w", err)
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	rules := policy.DefaultRulebook()
	if cfg.Rulebook != "" {
		data, err := os.ReadFile(cfg.Rulebook)
		if err != nil {
			return nil, fmt.Errorf("rulebook: %w", err)
		}
		if rules, err = policy.ParseRulebook(data); err != nil {
			return nil, fmt.Errorf("rulebook %s: %w", cfg.Rulebook, err)
		}
	}
	ks, err := keys.LoadKeys(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	root, err := crypto.ReadAuthorityPublicKey(cfg.AuthorityKey)
	if err != nil {
		return nil, fmt.Errorf("authority_public_key: %w", err)
	}
	cred, credToken, err := cfg.loadCredential(root, now())
	if err != nil {
		return nil, err
	}
	// The credential decides which keys are current (CREDENTIALS.md §5).
	if err := ks.Use(cred); err != nil {
		return nil, fmt.Errorf("credential %s: %w", cfg.CredentialPath(), err)
	}

	if n.db, err = store.Open(ctx, filepath.Join(cfg.DataDir, "node.db")); err != nil {
		return nil, err
	}
	n.run.closers = append(n.run.closers, n.db.Close)
	n.db.OnCheckpointError(func(err error) {
		n.log.Warn("database checkpoint failed; tried again after the next commit", "err", err)
	})
	std := schema.Default()
	ev := evidence.New(cfg.NodeID, ks.Derive("evidence subject"), now).UseDB(n.db).ForSuite(suite)
	m := newMetrics(std)

	layout := bus.Layout{Space: cfg.Space, Replicas: cfg.NATS.Replicas}
	if n.bus, err = bus.Dial(bus.DialOptions{
		ConnectOptions: bus.ConnectOptions{Name: "eduspace-" + cfg.NodeID, URL: cfg.NATS.URL, Credentials: cfg.NATS.Credentials,
			InboxPrefix: layout.InboxPrefix(cfg.NodeID), Embedded: env.Embedded, Logger: n.log},
		Domain: cfg.NATS.Domain, EmbeddedDir: filepath.Join(cfg.DataDir, "nats"), EmbeddedListen: cfg.NATS.Listen,
	}); err != nil {
		return nil, err
	}
	n.run.closers = append(n.run.closers, n.bus.Close)
	// A node with credentials joins a space whose operator made the
	// streams; without, it makes what is missing itself.
	ensure := bus.Ensure
	if cfg.NATS.Credentials != "" {
		ensure = bus.Join
	}
	kv, err := ensure(ctx, n.bus.JS, layout)
	if err != nil {
		return nil, err
	}
	if env.Embedded == nil && cfg.NATS.URL == "" {
		// The server is this node's own, embedded: the node is its
		// operator, and brings streams an older binary made up to the
		// current settings. On a shared server the operator does
		// (`eduspace authority nats-setup`).
		if err := bus.Update(ctx, n.bus.JS, layout); err != nil {
			return nil, err
		}
	}
	revKV, err := bus.Revocations(ctx, n.bus.JS, layout)
	if err != nil {
		return nil, err
	}
	n.reg = registry.New(kv, root, cfg.Space, now)
	if err := n.reg.LoadRevocations(ctx, revKV, cfg.DataDir, n.log); err != nil {
		return nil, err
	}
	if err := n.reg.LoadPolicy(ctx, revKV, cfg.DataDir, n.log); err != nil {
		return nil, err
	}
	if err := n.reg.Policy().Refusal(suite); err != nil {
		return nil, fmt.Errorf("suite: %w: rotate to a suite the space's policy allows", err)
	}
	if err := n.reg.Publish(ctx, cfg.NodeID, credToken); err != nil {
		return nil, err
	}

	// The parts, from the bottom of a record's way up.
	var sharesLock sync.Mutex // one share, send, revocation or withdrawal at a time
	codec := &envelope.Codec{NodeID: cfg.NodeID, Keys: ks, Registry: n.reg, Std: std, TTL: cfg.EnvelopeTTL, Now: now,
		IdentityPurposes: rules.IdentityPurposes, ClearIdentityPurposes: rules.ClearIdentityPurposes}
	var tsa *timestamp.Client
	if cfg.Checkpoint.TSAURL != "" {
		pemCert, err := os.ReadFile(cfg.Checkpoint.TSACert)
		if err != nil {
			return nil, fmt.Errorf("checkpoint.tsa_cert: %w", err)
		}
		trusted, err := timestamp.ParseCertificates(pemCert)
		if err != nil {
			return nil, fmt.Errorf("checkpoint.tsa_cert: %w", err)
		}
		tsa = &timestamp.Client{URL: cfg.Checkpoint.TSAURL, Trusted: trusted}
	}
	n.ckpt = checkpoint.New(checkpoint.Deps{
		DB: n.db, Evidence: ev, Node: cfg.NodeID, Keys: ks, Registry: n.reg,
		JS: n.bus.JS, Layout: layout, Credential: credToken, Metrics: m, Log: n.log, Now: now,
		Interval: cfg.Checkpoint.Interval, MaxAge: cfg.Checkpoint.MaxAge, TSA: tsa,
	})
	if err := n.ckpt.Load(ctx); err != nil {
		return nil, err
	}
	// A database restored from an older copy is told by the space's
	// record of this node: its newest checkpoint.
	if last, err := n.bus.LastMessage(ctx, layout.AuditStream(), layout.AuditSubject(cfg.NodeID)); err != nil {
		n.log.Warn("own newest checkpoint on the space not read: a database restored from an older copy would go unnoticed "+
			"(run `eduspace authority nats-setup` and regenerate the server configuration)", "err", err)
	} else if err := n.ckpt.CheckRestored(ctx, last); err != nil {
		return nil, err
	}

	n.out = outbox.New(outbox.Config{DB: n.db, Codec: codec, Evidence: ev, Metrics: m, Logger: n.log, Now: now,
		JetStream: n.bus.JS, MaxPayload: n.bus.MaxPayload, Blocked: n.ckpt.SendingBlocked, Replayed: n.ckpt.Rewound, Options: env.Outbox})
	n.agreements = agreement.New(agreement.Config{NodeID: cfg.NodeID, Credential: cred, Std: std, DB: n.db, Evidence: ev,
		Keys: ks, Registry: n.reg, Outbox: n.out, Layout: layout, Now: now, Shares: &sharesLock})
	// Records at rest are sealed under the data key (storage.encrypt).
	var dk *keys.DataKey
	if cfg.Storage.Encrypt {
		if dk, err = keys.LoadDataKey(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	n.consents = consent.New(consent.Config{NodeID: cfg.NodeID, DB: n.db, Evidence: ev, Metrics: m, Keys: ks,
		Registry: n.reg, Outbox: n.out, Layout: layout, Now: now, Shares: &sharesLock,
		DataKey: dk,
		SubjectInClear: func(ctx context.Context, id string) bool {
			a, err := n.agreements.Get(ctx, id)
			if a == nil || err != nil && !errors.Is(err, agreement.ErrNotActive) {
				return false
			}
			for typ := range a.RecordTypes {
				if t, ok := std.Type(typ); ok && t.SubjectKey() != "" && rules.IdentifierInClear(a, t.SubjectKey()) {
					return true
				}
			}
			return false
		},
		// A release gives each person a token of its own (node/release
		// RELEASES.md §2): the erasure request names them all. n.releases
		// is made below, before any withdrawal can run.
		ReleaseTokens: func(ctx context.Context, tx *sql.Tx, subject, recipient, agreement string) ([]string, error) {
			return n.releases.ErasureTokens(ctx, tx, subject, recipient, agreement)
		}})
	n.shares = share.New(share.Config{NodeID: cfg.NodeID, Std: std, Rules: rules, DB: n.db, Evidence: ev, Metrics: m,
		Logger: n.log, Now: now, Keys: ks, Registry: n.reg, Codec: codec, Outbox: n.out, Agreements: n.agreements,
		Layout: layout, MaxRecords: cfg.Batch.MaxRecords, MaxPayload: n.bus.MaxPayload, Consents: n.consents.For, Lock: &sharesLock, DataKey: dk})
	n.out.OnDrop(n.shares.Unshare)
	n.agg = aggregate.New(aggregate.Deps{NodeID: cfg.NodeID, Cred: cred, Std: std, DB: n.db, Evidence: ev, Keys: ks,
		Registry: n.reg, Codec: codec, Metrics: m, Log: n.log, Now: now, Layout: layout, Enqueue: n.out.Enqueue,
		WakeRelay: n.out.Wake, ActiveAgreements: n.agreements.Active, ScanRecords: n.shares.ScanRecords,
		MinColluders: cfg.Aggregate.Colluders,
		// Joined aggregates link persons through this node's linkage
		// pseudonyms (node/linkage); they never leave the aggregator.
		Pseudonyms: func(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, error) {
			ps, _, err := n.linkage.Pseudonyms(ctx, purpose, epoch, nil)
			return ps, err
		}})
	// A differentially private release is charged to the aggregate
	// privacy ledger (node/release RELEASES.md §4): the recipient's
	// person-level budget is one, whether it asks for rounds or releases.
	n.releases = release.New(release.Config{NodeID: cfg.NodeID, Std: std, Rules: rules, DB: n.db, Evidence: ev,
		Shares: n.shares, Agreements: n.agreements, Metrics: m.Registry, Logger: n.log, Now: now,
		Registry: n.reg, Outbox: n.out, Layout: layout, Keys: ks, Role: cred.Role,
		K: cfg.Release.K, MaxSuppress: cfg.Release.MaxSuppress, Budget: n.agg})
	// The catalogue's endpoint is bound first, so that the catalogue
	// names the address actually bound (dsp.listen with port 0 in tests).
	if err := n.dsp.bind(cfg); err != nil {
		return nil, err
	}
	n.cat = catalogue.New(catalogue.Config{NodeID: cfg.NodeID, Institution: cred.Institution, Role: cred.Role, Std: std, DB: n.db, Evidence: ev,
		Metrics: m, Registry: n.reg, Outbox: n.out, Layout: layout, Endpoint: n.dsp.url, DSPRate: cfg.DSP.RatePerMinute, DSPBurst: cfg.DSP.Burst, Now: now, ClockSkew: cfg.ClockSkew, Log: n.log,
		Members: func(ctx context.Context) ([]string, error) { return n.reg.Members(ctx, n.bus.JS, layout) },
		Rows:    n.shares.HeldOfType})
	n.recv = receive.New(receive.Deps{NodeID: cfg.NodeID, DB: n.db, Evidence: ev, Codec: codec, Registry: n.reg,
		Outbox: n.out, Std: std, Metrics: m, Log: n.log, Now: now, Layout: layout, ClockSkew: cfg.ClockSkew, Agreement: n.receiveAgreement,
		ErasureReceipt: n.consents.ConfirmErasure, AgreementMessage: n.agreements.Handle, Aggregate: n.agg.Handle, Catalogue: n.cat.Handle, DataKey: dk,
		Recovery: func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
			return n.recovery.Handle(ctx, h, sender, plain)
		},
		Release: n.releases.AcceptManifest, Provenance: n.releases.AcceptDeclaration,
		Linkage: func(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
			return n.linkage.Handle(ctx, h, sender, plain)
		},
		Options: env.Receive})
	n.linkage = linkage.New(linkage.Deps{NodeID: cfg.NodeID, Role: cred.Role, DataDir: cfg.DataDir, DB: n.db, Evidence: ev,
		Registry: n.reg, Layout: layout, Enqueue: n.out.Enqueue, WakeRelay: n.out.Wake, ScanRecords: n.shares.ScanRecords,
		MaxPayload: n.bus.MaxPayload(), Limits: cfg.Linkage, Metrics: m, Log: n.log, Now: now, Options: env.Linkage})
	// The evaluator the space policy names says at start what keeps it
	// from answering: a role that may not evaluate (the center), or no
	// key matching the policy's.
	if st, err := n.linkage.Status(ctx); err == nil && st.IsEvaluator && st.Problem != "" {
		n.log.Error("linkage evaluator named by the space policy cannot answer", "problem", st.Problem)
	}
	n.recovery = recovery.New(recovery.Deps{NodeID: cfg.NodeID, DB: n.db, Evidence: ev, Keeper: n.ckpt, Outbox: n.out,
		Receiver: n.recv, Registry: n.reg, Layout: layout, ClockSkew: cfg.ClockSkew, Now: now, Log: n.log,
		Relearn: n.consents.Relearn,
		Withdraw: func(ctx context.Context, id string) error {
			_, err := n.consents.Withdraw(ctx, id)
			return err
		},
		AgreementsWith: func(ctx context.Context, peer string) ([]string, error) {
			active, err := n.agreements.Active(ctx)
			var ids []string
			for _, a := range active {
				if a.Provider == peer || a.Recipient == peer {
					ids = append(ids, a.ID)
				}
			}
			return ids, err
		}})
	// A recovery killed after it reopened the evidence log withdraws
	// again, before anything is sent, the consents it learnt back.
	if k, err := n.recovery.Resume(ctx); err != nil {
		return nil, fmt.Errorf("finish the recovery from a restore: %w", err)
	} else if k > 0 {
		n.log.Info("recovery from a restore finished: consents withdrawn again", "consents", k)
	}
	n.dataKeys = &dataKeys{dk: dk, db: n.db, ev: ev, log: n.log, now: now, grace: cmp.Or(env.DataKey.Grace, dataKeyGrace), page: env.DataKey.Page, wake: make(chan struct{}, 1),
		parts: []sealedPart{{"held records", n.shares.SealHeld, n.shares.UnsealedHeld},
			{"received records", n.recv.SealReceived, n.recv.UnsealedReceived}, {"consent ledger", n.consents.SealLedger, n.consents.UnsealedLedger},
			{"kept erasure requests", n.recv.SealErased, n.recv.UnsealedErased}}}
	n.health = &health{db: n.db, dir: cfg.DataDir, minFree: uint64(cfg.Storage.MinFreeMiB) << 20, cred: cred,
		keyID: ks.Signing.Public().KeyID(), reg: n.reg, bus: n.bus, restored: n.ckpt.Restored, log: n.log, now: now}
	n.health.check(ctx)
	n.admin = admin.New(admin.Config{NodeID: cfg.NodeID, Space: cfg.Space, Credential: cred, Suite: suite, Token: ks.AdminToken,
		CheckpointMax: cfg.Checkpoint.MaxAge, Std: std, DB: n.db, Evidence: ev, Metrics: m, Registry: n.reg, Outbox: n.out,
		Checkpoints: n.ckpt, Agreements: n.agreements, Consents: n.consents, Receiver: n.recv, Shares: n.shares, Aggregates: n.agg,
		Recovery: n.recovery, DataKey: n.dataKeys, Releases: n.releases, Catalogue: n.cat, Linkage: n.linkage,
		Ready: n.Ready, Health: n.health.problems, Connected: n.bus.Connected, Logger: n.log, Now: now})

	runCtx, cancel := context.WithCancel(context.Background())
	n.run.cancel = cancel
	for _, loop := range []func(context.Context){
		n.recv.Run,
		func(ctx context.Context) { n.reg.WatchSpace(ctx, n.bus.JS, layout, cfg.NodeID, n.log) },
		func(ctx context.Context) { n.reg.Keep(ctx, n.bus.JS, layout, cfg.NodeID, credToken, n.log) },
		n.health.run,
	} {
		n.run.wg.Go(func() { loop(runCtx) })
	}
	for _, c := range []struct {
		kind, stream, name, subject string
		handle                      func(jetstream.Msg)
		buffer                      jetstream.PullConsumeOpt
	}{
		// Deliveries are buffered by bytes: envelopes run to megabytes
		// (share.Sharer.EnvelopePlaintext), so 256 of them could be a
		// gigabyte.
		{"deliver", layout.ExchangeStream(), layout.DeliverConsumer(cfg.NodeID), layout.DeliverFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Deliver(runCtx, msg) }, jetstream.PullMaxBytes(receive.DeliveryBufferBytes)},
		{"receipt", layout.ExchangeStream(), layout.ReceiptConsumer(cfg.NodeID), layout.ReceiptFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Handle(runCtx, msg, n.out.AcceptReceipt) }, jetstream.PullMaxMessages(256)},
		{"control", layout.ExchangeStream(), layout.ControlConsumer(cfg.NodeID), layout.ControlFilter(cfg.NodeID),
			func(msg jetstream.Msg) { n.recv.Handle(runCtx, msg, n.recv.Control) }, jetstream.PullMaxMessages(256)},
		{"audit", layout.AuditStream(), layout.AuditConsumer(cfg.NodeID), layout.AuditFilter(),
			func(msg jetstream.Msg) { n.ckpt.Handle(runCtx, msg) }, jetstream.PullMaxMessages(256)},
	} {
		// An auditor reads checkpoints and never an envelope: its NATS
		// user may consume only the audit stream (bus.AuditorPermissions).
		if cred.Role == crypto.RoleAuditor && c.kind != "audit" {
			continue
		}
		if err := n.bus.Consume(ctx, c.kind, c.stream, c.name, c.subject, c.handle, c.buffer); err != nil {
			return nil, err
		}
	}
	loops := []func(context.Context){n.out.Run, n.ckpt.Run, n.agg.Run, n.shareContinuous, n.dataKeys.run, n.logLimit.run}
	if cred.Role != crypto.RoleAuditor { // an auditor offers nothing and sends no envelope
		loops = append(loops, n.cat.Run)
	}
	for _, loop := range loops {
		n.run.wg.Go(func() { loop(runCtx) })
	}
	m.RegisterGauges(metrics.Gauges{
		OutboxDepth:     n.out.Depth,
		AwaitingReceipt: n.out.AwaitingReceipt,
		SequenceMissing: n.recv.SequenceMissing,
		ErasuresOpen:    n.consents.ErasuresOpen,
		EvidenceEntries: func(ctx context.Context) (float64, error) {
			count, _, err := ev.Head(ctx)
			return float64(count), err
		},
		ConsumerPending: n.bus.Pending,
		CheckpointAge:   n.ckpt.Age,
		SendingBlocked:  n.ckpt.SendingBlocked,
	})
	if err := n.admin.Listen(admin.Listener{Addr: cfg.Admin.Listen, Hosts: cfg.Admin.Hosts},
		admin.Listener{Addr: cfg.Metrics.Listen, Hosts: cfg.Metrics.Hosts}); err != nil {
		return nil, err
	}
	n.dsp.serve(n.cat.DSPHandler(), n.log)
	n.run.started = true
	n.run.ready.Store(true)
	n.log.Info("node started", "space", cfg.Space, "role", string(cred.Role), "suite", suite.String(),
		"embedded_nats", env.Embedded != nil || n.bus.EmbeddedStarted())
	return n, nil
}

// LinkagePseudonyms returns the linkage pseudonym, for purpose and epoch
// (a year such as "2026" or a named epoch; "" is the current year), of
// every person this node holds a student record with a valid, unambiguous
// resident id for, keyed by student_id, and the report of what was
// evaluated and left out (node/linkage/LINKAGE.md). Two members holding the
// same person get the same pseudonym for the same purpose and epoch. The
// pseudonyms are personal data: keep them in memory or sealed, never in
// logs or clear files.
//
// The evaluator's answers arrive through the node's control consumer:
// never call this from a handler of a control message (an aggregate
// round's, say), which would hold that consumer while waiting for them;
// call it from a goroutine of its own, or before the round. Pseudonyms
// obtained before for the same purpose, epoch and key come from memory,
// without asking the evaluator again.
func (n *Node) LinkagePseudonyms(ctx context.Context, purpose policy.Purpose, epoch string) (map[string][32]byte, linkage.Report, error) {
	return n.linkage.Pseudonyms(ctx, purpose, epoch, nil)
}

// shareContinuous shares, once at start, what an ingest stored and a stop
// kept from its continuous shares.
func (n *Node) shareContinuous(ctx context.Context) {
	shared, err := n.shares.ShareContinuous(ctx)
	if err != nil {
		n.log.Warn("continuous shares at start", "err", err)
		return
	}
	for _, c := range shared {
		if c.Error == "" && c.Considered > 0 {
			n.log.Info("continuous share at start", "agreement", c.Agreement, "considered", c.Considered, "permitted", c.Permitted)
		}
	}
}

// receiveAgreement is the agreement with id for the receiving side, which
// refuses what no active agreement covers.
func (n *Node) receiveAgreement(ctx context.Context, id string) (*policy.Agreement, error) {
	a, err := n.agreements.Get(ctx, id)
	if errors.Is(err, agreement.ErrUnknown) || errors.Is(err, agreement.ErrNotActive) {
		return nil, receive.NoAgreement(err)
	}
	return a, err
}

// Ready reports whether the node is serving: started, connected to NATS,
// not failing closed for want of published checkpoints, and healthy (its
// database, disk and credential: Problems).
func (n *Node) Ready() bool {
	return n.run.ready.Load() && n.bus != nil && n.bus.Connected() && !n.ckpt.SendingBlocked() && len(n.health.problems()) == 0
}

// Problems are what keeps the node from being ready besides starting,
// NATS and failing closed: its database (damaged, full, failing to
// write), its disk (below storage.min_free_mib) and its own credential
// (expired, revoked), a sentence each saying what to do.
func (n *Node) Problems() []string { return n.health.problems() }

// Close stops the node: HTTP first (with a fresh bounded context), then the
// consumers and the loops, then NATS, then the database — the reverse of
// opening. It is safe to call more than once.
func (n *Node) Close() error {
	n.run.once.Do(func() {
		n.run.ready.Store(false)
		var errs []error
		// Each stage has a grace period of its own: requests that used up
		// the API's leave the consumers theirs to finish the message in hand.
		grace := func(stop func(context.Context)) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stop(ctx)
		}
		if n.admin != nil {
			grace(func(ctx context.Context) {
				if err := n.admin.Shutdown(ctx); err != nil {
					errs = append(errs, err)
				}
			})
		}
		grace(func(ctx context.Context) {
			if err := n.dsp.shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		})
		if n.bus != nil {
			grace(n.bus.StopConsuming)
		}
		if n.run.cancel != nil {
			n.run.cancel()
		}
		n.run.wg.Wait()
		if n.agg != nil {
			n.agg.Drain()
		}
		if n.run.started {
			// A share still running (its request outlived the HTTP
			// shutdown, or a caller in this process) finishes first; then a
			// last checkpoint, after everything else has stopped writing,
			// so that the log as it is at shutdown is covered on the space.
			n.shares.Lock()
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := n.ckpt.Publish(cctx); err != nil {
				n.log.Warn("final checkpoint not published", "err", err)
			}
			ccancel()
			n.shares.Unlock()
		}
		for i := len(n.run.closers) - 1; i >= 0; i-- {
			if err := n.run.closers[i](); err != nil {
				errs = append(errs, err)
			}
		}
		n.run.err = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.run.err
}
