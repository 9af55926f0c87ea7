package node

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/eduspace/eduspace/crypto"
)

// Key files inside a node's data directory.
const (
	kemKeyFile     = "keys/kem.pem"
	signingKeyFile = "keys/signing.pem"
	checkpointFile = "keys/checkpoint.pem"
	secretFile     = "keys/node-secret.pem"
	adminTokenFile = "admin.token"
	// RequestFile is the public half of a node's keys, written by InitKeys
	// for the authority to issue the node's credential from.
	RequestFile = "node-request.json"
)

// pemSecret is the PEM block type of the node secret, from which the
// token and evidence keys are derived.
const pemSecret = "EDUSPACE NODE SECRET"

// Keys is a node's key material.
type Keys struct {
	KEM     *crypto.KEMPrivateKey
	Signing *crypto.SigningKey
	// Checkpoint is the composite (Ed25519 + ML-DSA-65) key that signs the
	// evidence log's checkpoints.
	Checkpoint *crypto.CompositeKey
	secret     []byte
	// AdminToken is the bearer token of the admin API.
	AdminToken string
}

// derive returns a key for one use, derived from the node secret.
func (k *Keys) derive(label string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("eduspace node key v1\x00" + label))
	return m.Sum(nil)
}

// Request is the public part of a node's keys, handed to the authority.
type Request struct {
	NodeID         string                    `json:"node_id"`
	KEMKeys        []crypto.KEMKeyInfo       `json:"kem_keys"`
	SigningKeys    []crypto.SigningKeyInfo   `json:"signing_keys"`
	CheckpointKeys []crypto.CompositeKeyInfo `json:"checkpoint_keys"`
}

// Request returns what the authority needs to issue this node's credential.
func (k *Keys) Request(nodeID string) Request {
	pub := k.KEM.Public()
	vk := k.Signing.Public()
	ck := k.Checkpoint.Public()
	return Request{
		NodeID:         nodeID,
		KEMKeys:        []crypto.KEMKeyInfo{{ID: pub.KeyID(), Suite: pub.Suite(), Key: pub.Bytes()}},
		SigningKeys:    []crypto.SigningKeyInfo{{ID: vk.KeyID(), Key: vk.Bytes()}},
		CheckpointKeys: []crypto.CompositeKeyInfo{{ID: ck.KeyID(), Key: ck.Bytes()}},
	}
}

// InitKeys creates a node's keys in dir (files 0600) and writes the public
// request file beside them. It refuses to overwrite existing keys.
func InitKeys(dir, nodeID string, suite crypto.SuiteID) (*Keys, error) {
	if _, err := os.Stat(filepath.Join(dir, kemKeyFile)); err == nil {
		return nil, fmt.Errorf("init keys: %s already exists", filepath.Join(dir, kemKeyFile))
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	kem, err := crypto.GenerateKEMKey(suite, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	sig, err := crypto.GenerateSigningKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	ck, err := crypto.GenerateCompositeKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	k := &Keys{KEM: kem, Signing: sig, Checkpoint: ck, secret: make([]byte, 32)}
	rand.Read(k.secret)
	tok := make([]byte, 24)
	rand.Read(tok)
	k.AdminToken = hex.EncodeToString(tok)

	if err := crypto.WriteKEMKeyFile(filepath.Join(dir, kemKeyFile), kem); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := crypto.WriteSigningKeyFile(filepath.Join(dir, signingKeyFile), sig); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := crypto.WriteCompositeKeyFile(filepath.Join(dir, checkpointFile), ck); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := crypto.WriteKeyFile(filepath.Join(dir, secretFile), pemSecret, k.secret); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, adminTokenFile), []byte(k.AdminToken+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	req, err := json.MarshalIndent(k.Request(nodeID), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, RequestFile), append(req, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	return k, nil
}

// LoadKeys reads a node's keys from dir, refusing key files that others can
// read.
func LoadKeys(dir string) (*Keys, error) {
	kem, err := crypto.ReadKEMKeyFile(filepath.Join(dir, kemKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load keys: no keys in %s: run `eduspace node init` first", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	sig, err := crypto.ReadSigningKeyFile(filepath.Join(dir, signingKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	ck, err := crypto.ReadCompositeKeyFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	secret, err := crypto.ReadKeyFile(filepath.Join(dir, secretFile), pemSecret)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	if len(secret) != 32 {
		return nil, fmt.Errorf("load keys: %s: want 32 bytes", secretFile)
	}
	tokPath := filepath.Join(dir, adminTokenFile)
	fi, err := os.Stat(tokPath)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load keys: %s is readable by others (mode %v): chmod 600 it", tokPath, fi.Mode().Perm())
	}
	tok, err := os.ReadFile(tokPath)
	if err != nil {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	return &Keys{KEM: kem, Signing: sig, Checkpoint: ck, secret: secret, AdminToken: string(bytes.TrimSpace(tok))}, nil
}
