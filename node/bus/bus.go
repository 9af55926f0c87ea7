// Package bus is a node's connection to the space over NATS JetStream: the
// embedded server of the default set-up, the connection, the streams and
// consumers, and the member registry bucket. The layout (subject names,
// stream settings) is the one place it is defined; Client holds a node's
// connection and consumers.
//
// It owns no table and reads no record. It must never listen beyond the
// address the configuration gives, and never let a node's credentials
// grant more than the permissions MemberPermissions generates.
package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. The
// receiver deduplicates on the envelope id for ever; this window only spares
// it the work.
const DuplicateWindow = 10 * time.Minute

var tokenRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidName reports whether s can be a space or node name: it becomes a
// NATS subject token and a stream-name part, so it is restricted to lower
// case letters, digits, '-' and '_'.
func ValidName(s string) bool { return tokenRE.MatchString(s) }

// Layout names the subjects, streams and buckets of one space.
type Layout struct {
	Space string
	// Replicas is how many copies of the space's streams and bucket a
	// clustered server keeps (3 at a hub cluster); 0 means 1.
	Replicas int
}

// DeliverSubject is where sender publishes envelopes of records for
// recipient. The sender is part of the subject so that the NATS server can
// enforce who publishes as whom (see nats-config).
func (l Layout) DeliverSubject(recipient, sender string) string {
	return "eds." + l.Space + ".deliver." + recipient + "." + sender
}

// DeliverFilter matches every delivery to node.
func (l Layout) DeliverFilter(node string) string {
	return "eds." + l.Space + ".deliver." + node + ".*"
}

// ReceiptSubject is where sender publishes signed receipts to recipient
// for envelopes recipient sent.
func (l Layout) ReceiptSubject(recipient, sender string) string {
	return "eds." + l.Space + ".receipt." + recipient + "." + sender
}

// ReceiptFilter matches every receipt to node.
func (l Layout) ReceiptFilter(node string) string {
	return "eds." + l.Space + ".receipt." + node + ".*"
}

// AuditSubject is where node publishes the signed checkpoints of its
// evidence log.
func (l Layout) AuditSubject(node string) string { return "eds." + l.Space + ".audit." + node }

// AuditFilter matches every node's checkpoints.
func (l Layout) AuditFilter() string { return "eds." + l.Space + ".audit.*" }

// AuditStream keeps every node's checkpoints for ever.
func (l Layout) AuditStream() string { return "EDS_" + l.Space + "_AUDIT" }

// AuditConsumer is node's durable consumer of everyone's checkpoints.
func (l Layout) AuditConsumer(node string) string { return "audit_" + node }

// ControlSubject is where sender publishes control messages to recipient:
// erasure requests and receipts, agreement proposals, acceptances and
// revocations, and the messages of aggregate rounds (node/aggregate/AGGREGATES.md).
func (l Layout) ControlSubject(recipient, sender string) string {
	return "eds." + l.Space + ".control." + recipient + "." + sender
}

// ControlFilter matches every control message to node.
func (l Layout) ControlFilter(node string) string {
	return "eds." + l.Space + ".control." + node + ".*"
}

// ControlConsumer is node's durable consumer of control messages.
func (l Layout) ControlConsumer(node string) string { return "control_" + node }

// InboxPrefix is node's own reply-subject prefix, so that the server can
// keep each node's replies (pulled messages among them) from the others.
func (l Layout) InboxPrefix(node string) string { return "_INBOX_" + node }

// ExchangeStream holds the deliveries and receipts of every node of the
// space, one subject per addressee.
func (l Layout) ExchangeStream() string { return "EDS_" + l.Space + "_EXCHANGE" }

// DeliverConsumer is node's durable consumer of its deliveries.
func (l Layout) DeliverConsumer(node string) string { return "deliver_" + node }

// ReceiptConsumer is node's durable consumer of receipts.
func (l Layout) ReceiptConsumer(node string) string { return "receipt_" + node }

// RegistryBucket is the key-value bucket of member credentials.
func (l Layout) RegistryBucket() string { return "eds_" + l.Space + "_registry" }

// RevocationBucket is the key-value bucket that holds the authority's
// signed revocation list (CREDENTIALS.md §6.1) under RevocationKey. Members
// may read and watch it; only the space operator may write it.
func (l Layout) RevocationBucket() string { return "eds_" + l.Space + "_revocations" }

// RevocationKey is the key of the revocation list in RevocationBucket.
const RevocationKey = "list"

// PolicyKey is the key of the space's signed policy (crypto.SpacePolicy)
// in RevocationBucket, which only the space operator may write.
const PolicyKey = "space-policy"

// Embedded is an in-process NATS server with JetStream.
type Embedded struct {
	srv *server.Server
}

// EmbeddedMaxPayload is the largest message the embedded server accepts:
// 8 MiB, the most NATS advises, against its default of 1 MiB. Nodes close
// envelopes at half their server's maximum (share.Sharer.EnvelopePlaintext),
// and envelopes of 2,000 rather than 900 records move 15 % more records
// per CPU second in `eduspace bench`. Servers of a space that exchange messages
// (a hub and its leaf nodes, a cluster) must agree on it: raise
// max_payload on all of them or on none.
const EmbeddedMaxPayload = 8 << 20

// ErrEmbeddedNotLoopback is the embedded server refusing an address beyond
// loopback: it has no accounts, so anyone who reached it could publish and
// read as any member.
var ErrEmbeddedNotLoopback = errors.New("the embedded server listens on loopback only (it has no accounts): for other nodes to join, run nats-server with the configuration `eduspace authority nats-config` generates")

// Loopback reports whether host names this machine's loopback interface
// only: localhost, or a loopback address.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// StartEmbedded starts a NATS server with JetStream storing in dir. With an
// empty listen address the server accepts only in-process connections;
// otherwise it listens there (host:port; port 0 picks a free one).
func StartEmbedded(dir, listen string) (*Embedded, error) {
	opts := &server.Options{
		ServerName: "eduspace-embedded",
		JetStream:  true,
		StoreDir:   filepath.Join(dir),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: EmbeddedMaxPayload,
	}
	if listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: %w", listen, err)
		}
		if !Loopback(host) {
			return nil, fmt.Errorf("embedded nats listen %q: %w", listen, ErrEmbeddedNotLoopback)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded nats listen %q: port: %w", listen, err)
		}
		if p == 0 {
			p = -1
		} else {
			// A port taken is said at once: the server itself would only
			// fail to become ready.
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return nil, fmt.Errorf("embedded nats listen %s: %w: another process (a node, a nats-server) listens there; choose another nats.listen", listen, err)
			}
			ln.Close()
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the server's client URL, or "" when it only accepts
// in-process connections.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// ConnectOptions says how to reach the NATS server.
type ConnectOptions struct {
	Name        string    // client name, shown in server monitoring
	URL         string    // server URL(s), comma-separated
	Credentials string    // a .creds file (JWT) or an nkey seed file, optional
	InboxPrefix string    // reply subjects' prefix; default _INBOX
	Embedded    *Embedded // connect in-process to this server instead of URL
	Logger      *slog.Logger
}

// Connect opens a connection that reconnects for ever.
func Connect(o ConnectOptions) (*nats.Conn, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("nats reconnected") }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("nats error", "err", err)
		}),
	}
	if o.Credentials != "" {
		opt, err := credentialsOption(o.Credentials)
		if err != nil {
			return nil, err
		}
		opts = append(opts, opt)
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	url := o.URL
	if o.Embedded != nil {
		opts = append(opts, nats.InProcessServer(o.Embedded.srv))
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w%s", err, connectHint(err, o.Credentials))
	}
	return nc, nil
}

// connectHint says what to do about a server that refused the
// connection's credentials, or the lack of them.
func connectHint(err error, creds string) string {
	switch {
	case errors.Is(err, nats.ErrNkeysNotSupported):
		return ": the server has no nkey users (a node's embedded server has none): connect to it without credentials, " +
			"or to a nats-server configured by `eduspace authority nats-config`"
	case errors.Is(err, nats.ErrAuthorization) && creds == "":
		return ": the server wants credentials: a member's nkey seed (node config nats.credentials) " +
			"or the operator's (--credentials AUTH/nats/operator.nk), which `eduspace authority nats-config` writes"
	case errors.Is(err, nats.ErrAuthorization):
		return fmt.Sprintf(": the server has no user for %s: regenerate its configuration with `eduspace authority nats-config` "+
			"from the authority directory that holds this seed, and reload the server", creds)
	}
	return ""
}

// credentialsOption reads a NATS credentials file: a user JWT with its
// seed (.creds, decentralized auth) or a bare nkey user seed (what
// `eduspace authority nats-config` generates).
func credentialsOption(path string) (nats.Option, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("nats credentials %s: no such file: `eduspace authority nats-config` writes the members' and the operator's nkey seeds in AUTH/nats/", path)
	}
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	if bytes.Contains(data, []byte("BEGIN NATS USER JWT")) {
		return nats.UserCredentials(path), nil
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		return nil, fmt.Errorf("nats credentials %s: neither a .creds file nor an nkey seed: %w", path, err)
	}
	return opt, nil
}

// Ensure makes sure the space's stream and registry bucket exist, creating
// them with the settings above when they do not. It does not change an
// existing stream: where the NATS server enforces permissions, the space
// operator creates them (`eduspace authority nats-setup`) and members may
// only look them up.
func Ensure(ctx context.Context, js jetstream.JetStream, l Layout) (jetstream.KeyValue, error) {
	for _, cfg := range []jetstream.StreamConfig{ExchangeStreamConfig(l), AuditStreamConfig(l)} {
		_, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				err = nil // another node created it first
			}
		}
		if err != nil {
			return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return Join(ctx, js, l)
}

// Join is Ensure for a member of a space whose server enforces the
// generated permissions: the operator made the streams, which a member
// may not look into (their state would show who exchanges how much with
// whom), so only the buckets are looked up, or created where they are
// missing and the server lets this connection create them.
func Join(ctx context.Context, js jetstream.JetStream, l Layout) (jetstream.KeyValue, error) {
	if _, err := Revocations(ctx, js, l); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, l.RegistryBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, RegistryConfig(l))
	}
	if err != nil {
		return nil, fmt.Errorf("ensure registry bucket %s: %w", l.RegistryBucket(), err)
	}
	if err := noRollup(ctx, js, "KV_"+l.RegistryBucket()); err != nil {
		return nil, fmt.Errorf("ensure registry bucket %s: %w", l.RegistryBucket(), err)
	}
	return kv, nil
}

// noRollup makes stream refuse messages with a Nats-Rollup header: in the
// registry, a member may write only its own key, and a rollup of all
// subjects on it would delete every other member's entry. Key-value
// buckets are created with rollups allowed (a purge is one); nothing of
// eduspace purges the registry. Where the NATS server enforces the
// generated permissions only the space operator can update the stream, so
// a member's node that finds rollups allowed says so.
func noRollup(ctx context.Context, js jetstream.JetStream, stream string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	if !cfg.AllowRollup {
		return nil
	}
	cfg.AllowRollup = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("refuse rollups (run `eduspace authority nats-setup` as the space operator): %w", err)
	}
	return nil
}

// Revocations looks up the revocation list bucket, creating it when it does
// not exist (which, where the NATS server enforces permissions, only the
// space operator may: `eduspace authority nats-setup`).
func Revocations(ctx context.Context, js jetstream.JetStream, l Layout) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, l.RevocationBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, RevocationConfig(l))
	}
	if err != nil {
		return nil, fmt.Errorf("ensure revocation bucket %s: %w", l.RevocationBucket(), err)
	}
	return kv, nil
}

// ExchangePerPair bounds what waits on the exchange stream under one
// subject, that is from one sender to one addressee of one kind: beyond
// it the server refuses the sender's next message (it stays in the
// sender's outbox, which retries) and never discards one waiting. It must
// exceed any backlog a sender may honestly build for an addressee that is
// away (a million erasure requests, or two billion records at the default
// batch.max_records): the relay publishes in order, so a pair at its
// bound holds back the sender's later envelopes to everyone until the
// addressee reads. It keeps a member from growing the hub's store without
// end under its own subjects; the generated permissions keep it to real
// addressees.
const ExchangePerPair = 1_000_000

// ExchangeStreamConfig is the exchange stream's configuration.
func ExchangeStreamConfig(l Layout) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Replicas:             max(l.Replicas, 1),
		Name:                 l.ExchangeStream(),
		Description:          "eduspace envelopes and receipts, one subject per addressee and sender",
		Subjects:             []string{"eds." + l.Space + ".deliver.*.*", "eds." + l.Space + ".receipt.*.*", "eds." + l.Space + ".control.*.*"},
		Storage:              jetstream.FileStorage,
		Retention:            jetstream.WorkQueuePolicy,
		Duplicates:           DuplicateWindow,
		MaxAge:               30 * 24 * time.Hour,
		MaxMsgsPerSubject:    ExchangePerPair,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
	}
}

// The audit stream's bounds. A signed checkpoint is about 3.5 KiB (a
// composite Ed25519 and ML-DSA-65 signature); every node keeps the
// checkpoints it receives in its own database, so the stream is how they
// travel and how a node that joins later catches up, not their archive.
// Per node, the newest AuditPerNode stay: one member flooding its subject
// displaces only its own, and holds at most AuditPerNode × AuditMaxMsg
// bytes of the hub's disk.
const (
	AuditMaxMsg  = 16 << 10
	AuditPerNode = 100_000
)

// AuditStreamConfig is the audit stream's configuration: nothing expires
// with age, each node's subject keeps its newest AuditPerNode checkpoints.
func AuditStreamConfig(l Layout) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Replicas:          max(l.Replicas, 1),
		Name:              l.AuditStream(),
		Description:       "eduspace signed evidence checkpoints, one subject per node",
		Subjects:          []string{l.AuditFilter()},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Duplicates:        DuplicateWindow,
		MaxMsgSize:        AuditMaxMsg,
		MaxMsgsPerSubject: AuditPerNode,
		// A node reads its own newest checkpoint back at start, to tell
		// whether its database was restored from an older copy.
		AllowDirect: true,
	}
}

// Update brings the space's streams to their current configuration, as
// the operator (`eduspace authority nats-setup`): Ensure creates what is
// missing but, as members may not, changes nothing that exists.
func Update(ctx context.Context, js jetstream.JetStream, l Layout) error {
	for _, cfg := range []jetstream.StreamConfig{ExchangeStreamConfig(l), AuditStreamConfig(l)} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("update stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// RegistryConfig is the registry bucket's configuration.
func RegistryConfig(l Layout) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Replicas:    max(l.Replicas, 1),
		Bucket:      l.RegistryBucket(),
		Description: "eduspace member credentials (JWT), by node id",
		History:     5,
		Storage:     jetstream.FileStorage,
	}
}

// RevocationConfig is the revocation bucket's configuration. A few older
// lists are kept for the record; nodes only ever take a newer one.
func RevocationConfig(l Layout) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      l.RevocationBucket(),
		Description: "eduspace signed revocation list (CREDENTIALS.md §6.1), under key " + RevocationKey,
		History:     10,
		Storage:     jetstream.FileStorage,
	}
}

// Consumer creates or updates a durable pull consumer on stream: name,
// filtered to subject.
func Consumer(ctx context.Context, js jetstream.JetStream, stream, name, subject string) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       name,
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       15 * time.Second,
		MaxAckPending: 1024,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", name, err)
	}
	return c, nil
}
