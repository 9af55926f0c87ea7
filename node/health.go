package node

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
)

// healthEvery is how often the health loop probes the database with a
// write and measures the free disk space.
const healthEvery = 10 * time.Second

// credentialWarn is how long before its credential expires a node says so
// (in its problems' sibling, the status page; it stays ready).
const credentialWarn = 14 * 24 * time.Hour

// health is what keeps a started, connected node from being ready: its
// database (damaged, full, failing to write), its disk (below
// storage.min_free_mib), its own credential (expired, revoked). The loop
// refreshes what costs a system call or a write; the rest is read when
// asked.
type health struct {
	db      *store.DB
	dir     string
	minFree uint64 // bytes
	cred    *crypto.Credential
	keyID   string // the node's current signing key
	reg     *registry.Registry
	bus     *bus.Client
	// restored says why the database is older than the space's record of
	// the node (checkpoint.Keeper.Restored), "" when it is not.
	restored func() string
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	probe   error  // the last write probe's failure
	free    uint64 // bytes free under dir at the last look
	freeErr error
	stopped atomic.Bool // consumers stopped for a damaged database
}

// problems are the reasons the node is not ready, each a sentence saying
// what is wrong and what to do; none when it is healthy.
func (h *health) problems() []string {
	var out []string
	if why := h.restored(); why != "" {
		out = append(out, why)
	}
	if err := h.db.Fault(); err != nil {
		out = append(out, err.Error())
	}
	h.mu.Lock()
	probe, free, freeErr := h.probe, h.free, h.freeErr
	h.mu.Unlock()
	if probe != nil && h.db.Fault() == nil {
		out = append(out, fmt.Sprintf("database write probe failed: %v", probe))
	}
	switch {
	case freeErr != nil:
		out = append(out, fmt.Sprintf("free disk space under %s unknown: %v", h.dir, freeErr))
	case h.minFree > 0 && free < h.minFree:
		out = append(out, fmt.Sprintf("disk nearly full: %d MiB free under %s, storage.min_free_mib is %d: make room",
			free>>20, h.dir, h.minFree>>20))
	}
	now := h.now()
	if !now.Before(h.cred.Expires) {
		out = append(out, fmt.Sprintf("own credential expired on %s: have the authority issue a new one and restart",
			h.cred.Expires.UTC().Format(time.DateOnly)))
	}
	if h.reg.Revoked(h.cred.NodeID, h.keyID, now) {
		out = append(out, "own credential or signing key revoked by the space authority: peers refuse what this node sends")
	}
	return out
}

// run probes the database and the disk every healthEvery until ctx ends.
// A damaged database stops the consumers: what arrives waits on the space
// for a restored node instead of being retried against a file that will
// not take it.
func (h *health) run(ctx context.Context) {
	for {
		h.check(ctx)
		if err := h.db.Fault(); err != nil && store.Damaged(err) && h.stopped.CompareAndSwap(false, true) {
			h.log.Error("database damaged: receiving stopped until it is restored", "err", err)
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			h.bus.StopConsuming(sctx)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(healthEvery):
		}
	}
}

// check takes one look: a write probe and the free space.
func (h *health) check(ctx context.Context) {
	probe := h.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO health_probe(id, at_ms) VALUES (1, ?)
			ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms`, h.now().UnixMilli())
		return err
	})
	if ctx.Err() != nil {
		return
	}
	var st syscall.Statfs_t
	freeErr := syscall.Statfs(h.dir, &st)
	h.mu.Lock()
	defer h.mu.Unlock()
	if probe != nil && h.probe == nil {
		h.log.Warn("database write probe failed", "err", probe)
	}
	h.probe = probe
	h.freeErr = freeErr
	if freeErr == nil {
		h.free = st.Bavail * uint64(st.Bsize)
	}
}
