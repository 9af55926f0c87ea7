// Package admin serves a node to the people who run it: the /v1 HTTP API
// behind the node's bearer token (ingest, agreements, shares, consent,
// subject reports, aggregates, status), the health probes, the operator's
// status page (loopback only) and the Prometheus endpoint. It owns no
// table: every answer comes from the package that owns the data, through
// its typed API.
//
// It must never put record contents, tokens or keys in a response's error
// detail or a log line, never serve the /v1 API without the bearer token,
// and never serve the status page beyond loopback.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/consent"
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
	"github.com/eduspace/eduspace/schema"
)

// Config is what a Server is built from: the node's identity, and the
// parts whose data it serves.
type Config struct {
	NodeID, Space string
	Credential    *crypto.Credential
	Suite         crypto.SuiteID
	// Token is the bearer token of the /v1 API.
	Token         string
	CheckpointMax time.Duration
	Std           *schema.Standard
	DB            *store.DB
	Evidence      *evidence.Log
	Metrics       *metrics.Metrics
	Registry      *registry.Registry
	Outbox        *outbox.Outbox
	Checkpoints   *checkpoint.Keeper
	Agreements    *agreement.Book
	Consents      *consent.Ledger
	Receiver      *receive.Receiver
	Shares        *share.Sharer
	Aggregates    *aggregate.Aggregator
	Recovery      *recovery.Service
	Releases      *release.Releaser
	// Catalogue is the space's catalogue of offered datasets.
	Catalogue *catalogue.Catalogue
	Linkage   *linkage.Service
	// DataKey rotates the data key and reports the rotation's progress.
	DataKey DataKeys
	// Ready reports whether the node serves (readiness); Connected whether
	// it is connected to NATS.
	Ready, Connected func() bool
	// Health is what keeps the node from being ready besides starting and
	// NATS (node/health.go), a sentence each; nil when none.
	Health func() []string
	Logger *slog.Logger
	Now    func() time.Time
}

// DataKeys is the node's data key as the API rotates it
// (node/keys/KEYS.md §1).
type DataKeys interface {
	Rotate(context.Context) (keys.DataKeyState, error)
	State(context.Context) (keys.DataKeyState, error)
}

// Server is a node's admin and metrics listeners.
type Server struct {
	nodeID, space string
	cred          *crypto.Credential
	suite         crypto.SuiteID
	token         string
	checkpointMax time.Duration
	std           *schema.Standard
	db            *store.DB
	ev            *evidence.Log
	m             *metrics.Metrics
	reg           *registry.Registry
	out           *outbox.Outbox
	ckpt          *checkpoint.Keeper
	agreements    *agreement.Book
	consents      *consent.Ledger
	recv          *receive.Receiver
	shares        *share.Sharer
	agg           *aggregate.Aggregator
	recovery      *recovery.Service
	releases      *release.Releaser
	cat           *catalogue.Catalogue
	linkage       *linkage.Service
	dataKey       DataKeys
	ready         func() bool
	health        func() []string
	connected     func() bool
	log           *slog.Logger
	now           func() time.Time

	servers []*http.Server
	addr    string
	wg      sync.WaitGroup
}

// New is the admin server of a node; Listen starts it.
func New(c Config) *Server {
	return &Server{nodeID: c.NodeID, space: c.Space, cred: c.Credential, suite: c.Suite, token: c.Token,
		checkpointMax: c.CheckpointMax, std: c.Std, db: c.DB, ev: c.Evidence, m: c.Metrics, reg: c.Registry,
		out: c.Outbox, ckpt: c.Checkpoints, agreements: c.Agreements, consents: c.Consents, recv: c.Receiver,
		shares: c.Shares, agg: c.Aggregates, recovery: c.Recovery, releases: c.Releases, cat: c.Catalogue, linkage: c.Linkage, dataKey: c.DataKey, ready: c.Ready, health: c.Health,
		connected: c.Connected, log: c.Logger, now: c.Now}
}

// Listener is an address to serve on and the host names clients reach it
// by, besides loopback's and the address's own host.
type Listener struct {
	Addr  string
	Hosts []string
}

// Listen serves the admin API on admin and the metrics on metrics; with
// metrics.Addr "", /metrics is served on the admin listener, and with
// admin.Addr "" the admin API is not served. Each answers only requests
// whose Host header names it (hostOnly).
func (s *Server) Listen(admin, metrics Listener) error {
	api := s.adminHandler()
	m := s.m.Handler()
	if metrics.Addr == "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m)
		mux.Handle("/", api)
		api = mux
	} else if _, err := s.listen(metrics.Addr, s.hostOnly(metrics, m)); err != nil {
		return err
	}
	if admin.Addr != "" {
		addr, err := s.listen(admin.Addr, s.hostOnly(admin, api))
		s.addr = addr
		return err
	}
	return nil
}

// hostOnly answers only requests whose Host header names l: a loopback
// name, l's own host, or one of l.Hosts. Others get 421 Misdirected
// Request: a page that rebinds a name of its own to this machine reaches
// nothing.
func (s *Server) hostOnly(l Listener, next http.Handler) http.Handler {
	allowed := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	if host, _, err := net.SplitHostPort(l.Addr); err == nil && host != "" {
		allowed[strings.ToLower(host)] = true
	}
	for _, h := range l.Hosts {
		allowed[strings.ToLower(strings.Trim(h, "[]"))] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !allowed[strings.ToLower(strings.Trim(host, "[]"))] {
			s.writeProblem(w, http.StatusMisdirectedRequest, "unknown-host",
				"This listener does not answer to that host name", "add it to the listener's hosts in the node's config")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Addr is the address the admin API listens on ("" when disabled); it
// resolves a configured port 0 to the port chosen.
func (s *Server) Addr() string { return s.addr }

func (s *Server) listen(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Addr: ln.Addr().String(), Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "addr", addr, "err", err)
		}
	})
	s.log.Info("listening", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}

// Shutdown stops the listeners, waiting for requests under way until ctx
// ends; what is still open then is closed. A client's connection that has
// not sent its request yet counts as open for five seconds (net/http), so
// a grace period that ends is no failure of the node: the work a cut-off
// request started holds its own locks and transactions, and Node.Close
// waits for those. Only a listener that fails to close is an error.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.servers {
		err := srv.Shutdown(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() == nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
			continue
		}
		s.log.Warn("connections still open at the end of the shutdown grace period are closed", "addr", srv.Addr)
		if err := srv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close http: %w", err))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// evidenceEntries is how many entries the evidence log holds.
func (s *Server) evidenceEntries(ctx context.Context) (float64, error) {
	count, _, err := s.ev.Head(ctx)
	return float64(count), err
}

// Token is the bearer token of the /v1 API.
func (s *Server) Token() string { return s.token }
