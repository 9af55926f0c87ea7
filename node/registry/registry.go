// Package registry owns the node's view of the space's membership: each
// member's credential, read from the space's registry bucket and verified
// against the authority's root key, and the newest revocation list the node
// has verified, kept in its data directory so that it never goes back to an
// older one.
//
// It must never trust an entry it has not verified, never take an older
// revocation list over a newer one, and never let a lookup error pass for
// a member's absence.
package registry

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
)

// ErrUnknownMember is returned for a node id the registry does not hold.
var ErrUnknownMember = errors.New("not a member of the space")

// ErrRevoked is returned when a peer, or the key of a peer an envelope would
// be sealed to, is on the space's revocation list.
var ErrRevoked = errors.New("revoked by the space authority")

// Registry is the space's member registry: each member's credential, kept
// in a JetStream key-value bucket under its node id. Anybody may read it;
// an entry counts only when it verifies against the authority's root key,
// so a node may publish its own credential.
type Registry struct {
	kv    jetstream.KeyValue
	root  crypto.AuthorityPublicKey
	space string
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cachedCredential

	// rl is the newest revocation list verified so far (nil: none yet).
	// revFile keeps it across restarts, so that a node never goes back to
	// an older list.
	rl atomic.Pointer[crypto.RevocationList]
	// policy is the newest space policy verified (nil: none yet), kept in
	// policyFile like the revocation list.
	policy     atomic.Pointer[crypto.SpacePolicy]
	policyFile string
	policyMu   sync.Mutex // serialises takePolicy
	revMu      sync.Mutex // serialises offers
	revFile    string
}

type cachedCredential struct {
	cred    *crypto.Credential
	token   string
	fetched time.Time
}

// CacheTTL bounds how long a looked-up credential is used before it is
// read again, so that a re-issued credential takes effect: peers learn a
// node's new keys within it.
const CacheTTL = time.Minute

// New is the registry in bucket kv, whose entries verify against root for
// space, read at the time now gives.
func New(kv jetstream.KeyValue, root crypto.AuthorityPublicKey, space string, now func() time.Time) *Registry {
	return &Registry{kv: kv, root: root, space: space, now: now, cache: map[string]cachedCredential{}}
}

func (r *Registry) Publish(ctx context.Context, node, token string) error {
	if _, err := r.kv.Put(ctx, node, []byte(token)); err != nil {
		return fmt.Errorf("publish credential: %w", err)
	}
	return nil
}

// Lookup returns the verified credential of node. A credential that fails
// to verify (expired, wrong signature) is an error wrapping the reason.
func (r *Registry) Lookup(ctx context.Context, node string) (*crypto.Credential, error) {
	c, _, err := r.LookupToken(ctx, node)
	return c, err
}

// refreshAfter is how old a cached credential must be before LookupFresh
// reads it again.
const refreshAfter = 5 * time.Second

// LookupFresh is Lookup for an envelope that names a key the cached
// credential does not list, as after the sender rotated its keys: the
// registry is read again unless the cached copy is younger than
// refreshAfter (which bounds the reads envelopes naming made-up keys can
// cause).
func (r *Registry) LookupFresh(ctx context.Context, node string) (*crypto.Credential, error) {
	r.mu.Lock()
	if c, ok := r.cache[node]; ok && r.now().Sub(c.fetched) >= refreshAfter {
		delete(r.cache, node)
	}
	r.mu.Unlock()
	return r.Lookup(ctx, node)
}

// LookupToken is Lookup that also returns the credential as published (the
// JWT), for records that must be verifiable offline later.
func (r *Registry) LookupToken(ctx context.Context, node string) (*crypto.Credential, string, error) {
	if !bus.ValidName(node) {
		return nil, "", fmt.Errorf("not a valid node id: %w", ErrUnknownMember)
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[node]
	r.mu.Unlock()
	if ok && now.Sub(c.fetched) < CacheTTL && now.Before(c.cred.Expires) {
		return c.cred, c.token, nil
	}
	e, err := r.kv.Get(ctx, node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, "", fmt.Errorf("node %q: %w", node, ErrUnknownMember)
	}
	if err != nil {
		return nil, "", fmt.Errorf("registry lookup: %w", err)
	}
	token := string(e.Value())
	cred, err := crypto.ParseCredential(token, r.root, r.space, now)
	if err != nil {
		return nil, "", fmt.Errorf("node %q: credential: %w: %w", node, ErrUnknownMember, err)
	}
	if cred.NodeID != node {
		return nil, "", fmt.Errorf("node %q: registry entry holds the credential of %q: %w", node, cred.NodeID, ErrUnknownMember)
	}
	r.mu.Lock()
	r.cache[node] = cachedCredential{cred: cred, token: token, fetched: now}
	r.mu.Unlock()
	return cred, token, nil
}

// revocationFile is where a node keeps the newest revocation list it has
// verified, inside its data directory.
const revocationFile = "revocations.edrl"

// Revoked reports whether node, or its key keyID, is revoked at time at
// by the newest list held.
func (r *Registry) Revoked(node, keyID string, at time.Time) bool {
	return r.rl.Load().Revoked(node, keyID, at)
}

// CheckRevoked returns an error wrapping ErrRevoked when node or its key
// keyID is revoked at time at.
func (r *Registry) CheckRevoked(node, keyID string, at time.Time) error {
	rl := r.rl.Load()
	if !rl.Revoked(node, keyID, at) {
		return nil
	}
	if rl.Revoked(node, "", at) {
		return fmt.Errorf("node %q: %w (revocation list %d)", node, ErrRevoked, rl.Serial)
	}
	return fmt.Errorf("node %q: key %s: %w (revocation list %d)", node, keyID, ErrRevoked, rl.Serial)
}

// RevocationSerial is the serial of the list held, 0 when none.
func (r *Registry) RevocationSerial() uint64 {
	if rl := r.rl.Load(); rl != nil {
		return rl.Serial
	}
	return 0
}

// OfferRevocations takes data as the space's revocation list if it verifies
// against the root key, is for this space and supersedes the list held
// (CREDENTIALS.md §6.1); it then becomes the list checked and, when keep is
// set, is written to the data directory. It reports whether the list was
// taken; the same list again is not an error, an older one or one that
// does not verify is.
func (r *Registry) OfferRevocations(data []byte, keep bool) (bool, error) {
	rl, err := crypto.ParseRevocationList(data, r.root, r.space)
	if err != nil {
		return false, err
	}
	r.revMu.Lock()
	defer r.revMu.Unlock()
	held := r.rl.Load()
	if !rl.Supersedes(held) {
		if rl.Serial == held.Serial {
			return false, nil
		}
		return false, fmt.Errorf("revocation list %d is older than the list held (%d): ignored", rl.Serial, held.Serial)
	}
	if keep && r.revFile != "" {
		if err := crypto.WriteFileBytes(r.revFile, data, 0o600); err != nil {
			return false, fmt.Errorf("keep revocation list: %w", err)
		}
	}
	r.rl.Store(rl)
	return true, nil
}

// LoadRevocations reads the list kept in the data directory, then the one
// published on the space, keeping the newer. A published list that does not
// verify or is older is logged and ignored; one kept locally that does not
// verify is an error (the data directory was tampered with).
func (r *Registry) LoadRevocations(ctx context.Context, kv jetstream.KeyValue, dataDir string, log *slog.Logger) error {
	r.revFile = filepath.Join(dataDir, revocationFile)
	data, err := os.ReadFile(r.revFile)
	switch {
	case err == nil:
		if _, err := r.OfferRevocations(data, false); err != nil {
			return fmt.Errorf("revocation list %s: %w", r.revFile, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("revocation list: %w", err)
	}
	e, err := kv.Get(ctx, bus.RevocationKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read revocation list: %w", err)
	}
	r.takeRevocations(e.Value(), log)
	return nil
}

// takeRevocations offers a published list and logs the outcome.
func (r *Registry) takeRevocations(data []byte, log *slog.Logger) {
	took, err := r.OfferRevocations(data, true)
	switch {
	case err != nil:
		log.Warn("revocation list ignored", "err", err, "serial_held", r.RevocationSerial())
	case took:
		rl := r.rl.Load()
		log.Info("revocation list taken", "serial", rl.Serial, "entries", len(rl.Entries))
	}
}

// WatchSpace follows the revocation bucket until ctx ends, through node's
// watcher (bus.Watch): it takes every newer revocation list and space
// policy that verifies, as they are published.
func (r *Registry) WatchSpace(ctx context.Context, js jetstream.JetStream, l bus.Layout, node string, log *slog.Logger) {
	watch(ctx, "the revocation bucket", log, func(ctx context.Context) error {
		return bus.Watch(ctx, js, l.RevocationBucket(), l.Watcher(node), "", func(c bus.KVChange) {
			if c.Op != jetstream.KeyValuePut {
				return
			}
			switch c.Key {
			case bus.RevocationKey:
				r.takeRevocations(c.Value, log)
			case bus.PolicyKey:
				if err := r.takePolicy(c.Value, log); err != nil {
					log.Error("space policy not kept", "err", err)
				}
			}
		})
	})
}

// watch runs one watch after another until ctx ends, waiting a little
// longer after each failure (1 s, doubling up to 30 s); what names the
// watched keys in log lines.
func watch(ctx context.Context, what string, log *slog.Logger, run func(context.Context) error) {
	wait := time.Second
	for ctx.Err() == nil {
		err := run(ctx)
		if ctx.Err() != nil {
			return
		}
		log.Warn("watching "+what+" stopped; watching again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// Root is the authority's root key entries verify against.
func (r *Registry) Root() crypto.AuthorityPublicKey { return r.root }

// Keep holds node's own entry in the registry until ctx ends: whenever the
// entry is deleted, purged or replaced by anything but token, the
// credential as issued, it is put back. A member can write only its own
// key where the server enforces the generated permissions, but the
// registry is the one place peers learn a node's keys from: a node that
// lost its entry would receive nothing.
func (r *Registry) Keep(ctx context.Context, js jetstream.JetStream, l bus.Layout, node, token string, log *slog.Logger) {
	watch(ctx, "own registry entry", log, func(ctx context.Context) error {
		return bus.Watch(ctx, js, l.RegistryBucket(), l.Watcher(node), node, func(c bus.KVChange) {
			if c.Op == jetstream.KeyValuePut && string(c.Value) == token {
				return // the entry as it should be
			}
			log.Warn("own registry entry changed by someone else; putting it back", "operation", c.Op.String())
			if err := r.Publish(ctx, node, token); err != nil && ctx.Err() == nil {
				log.Error("put own registry entry back", "err", err)
			}
		})
	})
}

// policyFile is where a node keeps the newest space policy it has verified,
// inside its data directory.
const policyFile = "space-policy.edsp"

// Policy is the newest space policy verified, nil when the space has none:
// nil allows every known suite (crypto.SpacePolicy.Allows).
func (r *Registry) Policy() *crypto.SpacePolicy {
	if r == nil {
		return nil
	}
	return r.policy.Load()
}

// LoadPolicy reads the space policy kept in the data directory, then the
// one published on the space, keeping the newer; the newer is kept in the
// data directory, so that a node never goes back to an older policy. One
// kept that does not verify is an error (the data directory was tampered
// with); one published that does not verify, or is older, is logged and
// ignored.
func (r *Registry) LoadPolicy(ctx context.Context, kv jetstream.KeyValue, dataDir string, log *slog.Logger) error {
	r.policyFile = filepath.Join(dataDir, policyFile)
	data, err := os.ReadFile(r.policyFile)
	switch {
	case err == nil:
		p, err := crypto.ParseSpacePolicy(data, r.root, r.space)
		if err != nil {
			return fmt.Errorf("space policy %s: %w", r.policyFile, err)
		}
		r.policy.Store(p)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("space policy: %w", err)
	}
	e, err := kv.Get(ctx, bus.PolicyKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read space policy: %w", err)
	}
	return r.takePolicy(e.Value(), log)
}

// takePolicy takes a published space policy that verifies and is newer
// than the one held, keeping it in the data directory; one that does not
// verify, or is older, is logged and ignored. The error is the data
// directory's.
func (r *Registry) takePolicy(data []byte, log *slog.Logger) error {
	r.policyMu.Lock()
	defer r.policyMu.Unlock()
	p, err := crypto.ParseSpacePolicy(data, r.root, r.space)
	if err != nil {
		log.Warn("space policy ignored", "err", err)
		return nil
	}
	if held := r.policy.Load(); held != nil && p.Serial <= held.Serial {
		if p.Serial < held.Serial {
			log.Warn("space policy ignored: older than the one held", "serial", p.Serial, "serial_held", held.Serial)
		}
		return nil
	}
	if err := crypto.WriteFileBytes(r.policyFile, data, 0o600); err != nil {
		return fmt.Errorf("keep space policy: %w", err)
	}
	r.policy.Store(p)
	log.Info("space policy taken", "serial", p.Serial, "min_suite", p.MinSuite.String())
	return nil
}

// Members lists the node ids that have an entry in the space's registry
// bucket (held in js, laid out by l), sorted: the subjects of the bucket's
// stream, read with a stream-info request members are permitted to make
// (bus.MemberPermissions). An id listed may hold an expired, revoked or
// deleted credential: Lookup each before use.
func (r *Registry) Members(ctx context.Context, js jetstream.JetStream, l bus.Layout) ([]string, error) {
	st, err := js.Stream(ctx, "KV_"+l.RegistryBucket())
	if err != nil {
		return nil, fmt.Errorf("registry members: %w", err)
	}
	prefix := "$KV." + l.RegistryBucket() + "."
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("registry members: %w", err)
	}
	var ids []string
	for subj := range info.State.Subjects {
		if id, ok := strings.CutPrefix(subj, prefix); ok && bus.ValidName(id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}
