package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
)

// errUnknownMember is returned for a node id the registry does not hold.
var errUnknownMember = errors.New("not a member of the space")

// registry is the space's member registry: each member's credential, kept
// in a JetStream key-value bucket under its node id. Anybody may read it;
// an entry counts only when it verifies against the authority's root key,
// so a node may publish its own credential.
type registry struct {
	kv    jetstream.KeyValue
	root  crypto.AuthorityPublicKey
	space string
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cachedCredential
}

type cachedCredential struct {
	cred    *crypto.Credential
	token   string
	fetched time.Time
}

// registryTTL bounds how long a looked-up credential is used before it is
// read again, so that a re-issued credential takes effect.
const registryTTL = time.Minute

func newRegistry(kv jetstream.KeyValue, root crypto.AuthorityPublicKey, space string, now func() time.Time) *registry {
	return &registry{kv: kv, root: root, space: space, now: now, cache: map[string]cachedCredential{}}
}

func (r *registry) publish(ctx context.Context, node, token string) error {
	if _, err := r.kv.Put(ctx, node, []byte(token)); err != nil {
		return fmt.Errorf("publish credential: %w", err)
	}
	return nil
}

// lookup returns the verified credential of node. A credential that fails
// to verify (expired, wrong signature) is an error wrapping the reason.
func (r *registry) lookup(ctx context.Context, node string) (*crypto.Credential, error) {
	c, _, err := r.lookupToken(ctx, node)
	return c, err
}

// lookupToken is lookup that also returns the credential as published (the
// JWT), for records that must be verifiable offline later.
func (r *registry) lookupToken(ctx context.Context, node string) (*crypto.Credential, string, error) {
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[node]
	r.mu.Unlock()
	if ok && now.Sub(c.fetched) < registryTTL && now.Before(c.cred.Expires) {
		return c.cred, c.token, nil
	}
	e, err := r.kv.Get(ctx, node)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, "", fmt.Errorf("node %q: %w", node, errUnknownMember)
	}
	if err != nil {
		return nil, "", fmt.Errorf("registry lookup: %w", err)
	}
	token := string(e.Value())
	cred, err := crypto.ParseCredential(token, r.root, r.space, now)
	if err != nil {
		return nil, "", fmt.Errorf("node %q: credential: %w: %w", node, errUnknownMember, err)
	}
	if cred.NodeID != node {
		return nil, "", fmt.Errorf("node %q: registry entry holds the credential of %q: %w", node, cred.NodeID, errUnknownMember)
	}
	r.mu.Lock()
	r.cache[node] = cachedCredential{cred: cred, token: token, fetched: now}
	r.mu.Unlock()
	return cred, token, nil
}
