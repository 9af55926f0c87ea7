// Package authority keeps the space operator's files: the root key pair in
// a directory, and the issuing of member credentials from the request files
// that nodes write at init, the NATS server's member permissions and nkeys,
// and the revocation lists it signs and publishes. It owns no node table.
//
// It must never write the root key where group or others can read it, and
// never issue a credential for keys other than those a node's request
// names.
package authority

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/keys"
)

// Files inside an authority directory.
const (
	PrivateKeyFile = "authority.key.pem"
	PublicKeyFile  = "authority.pub.pem"
)

// Init creates a root key pair in dir: the private key 0600, the public key
// as PEM SubjectPublicKeyInfo. It refuses to overwrite an existing key.
func Init(dir string) (crypto.AuthorityPublicKey, error) { return InitFor(dir, crypto.DefaultSuite) }

// InitFor is Init for a space on suite s: for the GM/T suite the root key
// has an SM2 key too, which signs the space's credentials
// (crypto/CREDENTIALS.md §3.3).
func InitFor(dir string, s crypto.SuiteID) (crypto.AuthorityPublicKey, error) {
	priv := filepath.Join(dir, PrivateKeyFile)
	if _, err := os.Stat(priv); err == nil {
		return crypto.AuthorityPublicKey{}, fmt.Errorf("authority init: %s already exists", priv)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return crypto.AuthorityPublicKey{}, fmt.Errorf("authority init: %w", err)
	}
	k, err := crypto.GenerateAuthorityKeyFor(s, rand.Reader)
	if err != nil {
		return crypto.AuthorityPublicKey{}, fmt.Errorf("authority init: %w", err)
	}
	if err := crypto.WriteAuthorityKeyFile(priv, k); err != nil {
		return crypto.AuthorityPublicKey{}, fmt.Errorf("authority init: %w", err)
	}
	if err := crypto.WriteAuthorityPublicKey(filepath.Join(dir, PublicKeyFile), k.Public()); err != nil {
		return crypto.AuthorityPublicKey{}, fmt.Errorf("authority init: %w", err)
	}
	return k.Public(), nil
}

// Load reads the root private key from dir.
func Load(dir string) (*crypto.AuthorityKey, error) {
	k, err := crypto.ReadAuthorityKeyFile(filepath.Join(dir, PrivateKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no authority key in %s: run `eduspace authority init --dir %s` first", dir, dir)
	}
	return k, err
}

// Member is what the operator decides about a member when issuing.
type Member struct {
	Space       string
	Institution string
	Role        crypto.Role
	Valid       time.Duration
}

// Issue reads a node's request file and returns the member credential (a
// compact JWT) binding the node's public keys to m.
func Issue(k *crypto.AuthorityKey, requestPath string, m Member, now time.Time) (string, error) {
	data, err := os.ReadFile(requestPath)
	if err != nil {
		return "", fmt.Errorf("read request: %w", err)
	}
	var req keys.Request
	if err := json.Unmarshal(data, &req); err != nil {
		return "", fmt.Errorf("request %s: %w", requestPath, err)
	}
	return k.Issue(crypto.Credential{
		Space: m.Space, NodeID: req.NodeID, Institution: m.Institution, Role: m.Role,
		KEMKeys: req.KEMKeys, SigningKeys: req.SigningKeys, CheckpointKeys: req.CheckpointKeys,
		IssuedAt: now, Expires: now.Add(m.Valid),
	})
}

// Provision enrols a node in one step, for the demo, the benchmark and
// tests: it creates the node's keys in dir (keys.InitKeys), issues its
// credential from the request they wrote, and puts the credential at
// dir/credential.jwt. A real member does the two halves on two machines
// (`eduspace node init`, `eduspace authority issue`).
func Provision(k *crypto.AuthorityKey, dir, nodeID string, suite crypto.SuiteID, m Member, now time.Time) (*keys.Keys, error) {
	ks, err := keys.InitKeys(dir, nodeID, suite)
	if err != nil {
		return nil, err
	}
	tok, err := Issue(k, filepath.Join(dir, keys.RequestFile), m, now)
	if err != nil {
		return nil, err
	}
	if err := crypto.WriteFileBytes(filepath.Join(dir, "credential.jwt"), []byte(tok+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write credential: %w", err)
	}
	return ks, nil
}
