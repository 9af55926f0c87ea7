// Package keys owns a node's key material in its data directory: the
// generations of KEM, signing and checkpoint key pairs, the node secret the
// token and evidence keys are derived from, the admin token, and the steps
// of a rotation (KEYS.md).
//
// It must never write a private key where group or others can read it,
// never return the node secret itself (only keys derived from it under a
// label), and never log key material.
package keys

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
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/eduspace/eduspace/crypto"
)

// Key files inside a node's data directory (KEYS.md). The keys of
// generation 1 (node init) are in keys/ itself, those of generation n ≥ 2
// (node rotate) in keys/<n>/, under the same three names.
const (
	keysDir        = "keys"
	kemKeyName     = "kem.pem"
	signingKeyName = "signing.pem"
	checkpointName = "checkpoint.pem"
	kemKeyFile     = "keys/" + kemKeyName
	signingKeyFile = "keys/" + signingKeyName
	checkpointFile = "keys/" + checkpointName
	secretFile     = "keys/node-secret.pem"
	adminTokenFile = "admin.token"
	// RequestFile is the public half of a node's keys, written by InitKeys
	// for the authority to issue the node's credential from.
	RequestFile = "node-request.json"
)

// pemSecret is the PEM block type of the node secret, from which the
// token and evidence keys are derived.
const pemSecret = "EDUSPACE NODE SECRET"

// Keys is a node's key material: one or more generations of key pairs, of
// which one is current, the node secret and the admin token.
type Keys struct {
	// KEM, Signing and Checkpoint are the current keys. Once the node's
	// credential is known (Open, [Keys.Use]) they are the ones the
	// credential lists first (CREDENTIALS.md §5); before, those of the
	// newest generation held.
	KEM     *crypto.KEMPrivateKey
	Signing *crypto.SigningKey
	// Checkpoint is the composite (Ed25519 + ML-DSA-65) key that signs the
	// evidence log's checkpoints, except on the GM/T suite, where Signing
	// does ([Keys.SignCheckpoint]).
	Checkpoint *crypto.CompositeKey
	// Generations are every generation of keys held, oldest first.
	Generations []KeySet
	// kem are the KEM private keys the node opens envelopes with, by key
	// id: after Use, only those its credential lists.
	kem    map[string]*crypto.KEMPrivateKey
	secret []byte
	// AdminToken is the bearer token of the admin API.
	AdminToken string
}

// KeySet is one generation of a node's keys, created together by node init
// (generation 1) or node rotate (2, 3, …).
type KeySet struct {
	Generation int
	KEM        *crypto.KEMPrivateKey
	Signing    *crypto.SigningKey
	Checkpoint *crypto.CompositeKey
}

// KEMKey returns the private KEM key with key id id, if the node holds it
// and (once Use has run) its credential lists it.
func (k *Keys) KEMKey(id string) (*crypto.KEMPrivateKey, bool) {
	p, ok := k.kem[id]
	return p, ok
}

// Open decrypts env with the KEM key its header names (ENVELOPE.md §6 step
// 4): a node that has rotated its keys opens envelopes sealed to any key
// its credential still lists. Call it only after the envelope was checked.
func (k *Keys) Open(env *crypto.Envelope) ([]byte, error) {
	priv, ok := k.KEMKey(env.Header.RecipientKeyID)
	if !ok {
		return nil, fmt.Errorf("open envelope: no KEM key %q: %w", env.Header.RecipientKeyID, crypto.ErrDecrypt)
	}
	return env.Open(priv)
}

// Use makes the keys that cred lists first the current ones, and limits the
// KEM keys envelopes are opened with to those cred lists. It fails when the
// node does not hold the private half of a current key: a credential issued
// for keys this node does not have, or keys deleted too early.
func (k *Keys) Use(cred *crypto.Credential) error {
	kems := map[string]*crypto.KEMPrivateKey{}
	sigs := map[string]*crypto.SigningKey{}
	ckpts := map[string]*crypto.CompositeKey{}
	for _, g := range k.Generations {
		kems[g.KEM.Public().KeyID()] = g.KEM
		sigs[g.Signing.Public().KeyID()] = g.Signing
		ckpts[g.Checkpoint.Public().KeyID()] = g.Checkpoint
	}
	if len(cred.KEMKeys) == 0 || len(cred.SigningKeys) == 0 {
		return errors.New("credential lists no KEM or no signing key")
	}
	// notHeld says which key the credential expects, which this node holds
	// and what to do.
	notHeld := func(kind, want string, held []string) error {
		slices.Sort(held)
		return fmt.Errorf("its current %s key %s is not among this node's keys (it holds %s): the credential was issued "+
			"from another node's request, or for keys since removed; have the authority issue a credential from %s",
			kind, want, strings.Join(held, ", "), RequestFile)
	}
	cur, ok := kems[cred.KEMKeys[0].ID]
	if !ok {
		return notHeld("KEM", cred.KEMKeys[0].ID, slices.Collect(maps.Keys(kems)))
	}
	sig, ok := sigs[cred.SigningKeys[0].ID]
	if !ok {
		return notHeld("signing", cred.SigningKeys[0].ID, slices.Collect(maps.Keys(sigs)))
	}
	ck := k.Checkpoint
	if len(cred.CheckpointKeys) > 0 {
		if ck, ok = ckpts[cred.CheckpointKeys[0].ID]; !ok {
			return notHeld("checkpoint", cred.CheckpointKeys[0].ID, slices.Collect(maps.Keys(ckpts)))
		}
	}
	open := map[string]*crypto.KEMPrivateKey{}
	for _, info := range cred.KEMKeys {
		if p, ok := kems[info.ID]; ok {
			open[info.ID] = p
		}
	}
	k.KEM, k.Signing, k.Checkpoint, k.kem = cur, sig, ck, open
	return nil
}

// SignCheckpoint signs c for the evidence log (CREDENTIALS.md §6.2): with
// the SM2 signing key on a node of the GM/T suite, whose statements are
// all SM2, else with the composite checkpoint key.
func (k *Keys) SignCheckpoint(c crypto.Checkpoint) ([]byte, error) {
	if k.Signing.Algorithm() == crypto.SM2 {
		return crypto.SignCheckpointSM2(k.Signing, c)
	}
	return crypto.SignCheckpoint(k.Checkpoint, c)
}

// Derive returns a key for one use, derived from the node secret.
func (k *Keys) Derive(label string) []byte {
	m := hmac.New(sha256.New, k.secret)
	m.Write([]byte("eduspace node key v1\x00" + label))
	return m.Sum(nil)
}

// TokenKey is the key of this node's tokens for recipient
// (crypto.TokenKey under the node's "tokens" key): the one derivation the
// shares, the releases and the consent ledger's erasures must agree on.
func (k *Keys) TokenKey(recipient string) []byte {
	return crypto.TokenKey(k.Derive("tokens"), recipient)
}

// Request is the public part of a node's keys, handed to the authority.
type Request struct {
	NodeID         string                    `json:"node_id"`
	KEMKeys        []crypto.KEMKeyInfo       `json:"kem_keys"`
	SigningKeys    []crypto.SigningKeyInfo   `json:"signing_keys"`
	CheckpointKeys []crypto.CompositeKeyInfo `json:"checkpoint_keys"`
}

// Request returns what the authority needs to issue this node's credential
// for its current keys.
func (k *Keys) Request(nodeID string) Request {
	return requestFor(nodeID, []KeySet{{KEM: k.KEM, Signing: k.Signing, Checkpoint: k.Checkpoint}})
}

// requestFor lists the keys of sets, in that order: the first set is the
// current one (CREDENTIALS.md §5).
func requestFor(nodeID string, sets []KeySet) Request {
	r := Request{NodeID: nodeID}
	for _, g := range sets {
		pub := g.KEM.Public()
		vk := g.Signing.Public()
		ck := g.Checkpoint.Public()
		r.KEMKeys = append(r.KEMKeys, crypto.KEMKeyInfo{ID: pub.KeyID(), Suite: pub.Suite(), Key: pub.Bytes()})
		r.SigningKeys = append(r.SigningKeys, crypto.SigningKeyInfo{ID: vk.KeyID(), Key: vk.Bytes()})
		r.CheckpointKeys = append(r.CheckpointKeys, crypto.CompositeKeyInfo{ID: ck.KeyID(), Key: ck.Bytes()})
	}
	return r
}

// generationDir is the directory of generation gen's key files, relative to
// the data directory.
func generationDir(gen int) string {
	if gen == 1 {
		return keysDir
	}
	return filepath.Join(keysDir, strconv.Itoa(gen))
}

// newKeySet generates a generation of keys and writes its files (0600).
func newKeySet(dir string, gen int, suite crypto.SuiteID) (KeySet, error) {
	kem, err := crypto.GenerateKEMKey(suite, rand.Reader)
	if err != nil {
		return KeySet{}, err
	}
	sig, err := crypto.GenerateSigningKeyFor(suite.SignatureAlgorithm(), rand.Reader)
	if err != nil {
		return KeySet{}, err
	}
	ck, err := crypto.GenerateCompositeKey(rand.Reader)
	if err != nil {
		return KeySet{}, err
	}
	gd := filepath.Join(dir, generationDir(gen))
	if err := os.MkdirAll(gd, 0o700); err != nil {
		return KeySet{}, err
	}
	if err := crypto.WriteKEMKeyFile(filepath.Join(gd, kemKeyName), kem); err != nil {
		return KeySet{}, err
	}
	if err := crypto.WriteSigningKeyFile(filepath.Join(gd, signingKeyName), sig); err != nil {
		return KeySet{}, err
	}
	if err := crypto.WriteCompositeKeyFile(filepath.Join(gd, checkpointName), ck); err != nil {
		return KeySet{}, err
	}
	return KeySet{Generation: gen, KEM: kem, Signing: sig, Checkpoint: ck}, nil
}

// readKeySet reads generation gen's three key files, refusing files that
// others can read.
func readKeySet(dir string, gen int) (KeySet, error) {
	gd := filepath.Join(dir, generationDir(gen))
	kem, err := crypto.ReadKEMKeyFile(filepath.Join(gd, kemKeyName))
	if err != nil {
		return KeySet{}, err
	}
	sig, err := crypto.ReadSigningKeyFile(filepath.Join(gd, signingKeyName))
	if err != nil {
		return KeySet{}, err
	}
	ck, err := crypto.ReadCompositeKeyFile(filepath.Join(gd, checkpointName))
	if err != nil {
		return KeySet{}, err
	}
	return KeySet{Generation: gen, KEM: kem, Signing: sig, Checkpoint: ck}, nil
}

// setGenerations makes gens the keys held, the newest current, and every
// KEM key usable until Use narrows them to the credential's.
func (k *Keys) setGenerations(gens []KeySet) {
	k.Generations = gens
	last := gens[len(gens)-1]
	k.KEM, k.Signing, k.Checkpoint = last.KEM, last.Signing, last.Checkpoint
	k.kem = map[string]*crypto.KEMPrivateKey{}
	for _, g := range gens {
		k.kem[g.KEM.Public().KeyID()] = g.KEM
	}
}

// InitKeys creates a node's keys in dir (files 0600) and writes the public
// request file beside them. It refuses to overwrite existing keys.
func InitKeys(dir, nodeID string, suite crypto.SuiteID) (*Keys, error) {
	gens, err := generations(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if len(gens) > 0 {
		return nil, fmt.Errorf("init keys: %s already holds keys", filepath.Join(dir, keysDir))
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	set, err := newKeySet(dir, 1, suite)
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	k := &Keys{secret: make([]byte, 32)}
	k.setGenerations([]KeySet{set})
	rand.Read(k.secret)
	tok := make([]byte, 24)
	rand.Read(tok)
	k.AdminToken = hex.EncodeToString(tok)

	if err := crypto.WriteKeyFile(filepath.Join(dir, secretFile), pemSecret, k.secret); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := crypto.WriteFileBytes(filepath.Join(dir, adminTokenFile), []byte(k.AdminToken+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	req, err := json.MarshalIndent(k.Request(nodeID), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	if err := crypto.WriteFileBytes(filepath.Join(dir, RequestFile), append(req, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("init keys: %w", err)
	}
	return k, nil
}

// generations lists the generation numbers that have a directory (or, for
// generation 1, key files) under dir/keys, in ascending order.
func generations(dir string) ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(dir, keysDir))
	if err != nil {
		return nil, err
	}
	var gens []int
	for _, f := range []string{kemKeyFile, signingKeyFile, checkpointFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			gens = append(gens, 1)
			break
		}
	}
	for _, e := range ents {
		g, err := strconv.Atoi(e.Name())
		if err == nil && g >= 2 && e.IsDir() && strconv.Itoa(g) == e.Name() {
			gens = append(gens, g)
		}
	}
	sort.Ints(gens)
	return gens, nil
}

// LoadKeys reads a node's keys from dir, every generation of them, refusing
// key files that others can read.
func LoadKeys(dir string) (*Keys, error) {
	nums, err := generations(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load keys: %w", err)
	}
	var gens []KeySet
	for _, g := range nums {
		set, err := readKeySet(dir, g)
		if err != nil {
			return nil, fmt.Errorf("load keys: generation %d: %w", g, err)
		}
		gens = append(gens, set)
	}
	if len(gens) == 0 {
		return nil, fmt.Errorf("load keys: no keys in %s: run `eduspace node init` first", dir)
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
	k := &Keys{secret: secret, AdminToken: string(bytes.TrimSpace(tok))}
	k.setGenerations(gens)
	return k, nil
}

// RotateStep is one step of a node's key rotation (CREDENTIALS.md §5).
type RotateStep string

// The steps of a rotation, in order.
const (
	// RotateAnnounce creates the next generation of keys (unless one not
	// yet in the credential exists) and requests [current, next, …].
	RotateAnnounce RotateStep = "announce"
	// RotateSwitch requests [next, current, …]: the newest generation
	// becomes current, the old one stays listed so that envelopes sealed
	// to it still open.
	RotateSwitch RotateStep = "switch"
	// RotateRetire requests the current generation alone.
	RotateRetire RotateStep = "retire"
)

// Rotation is what a rotation step did.
type Rotation struct {
	Step RotateStep `json:"step"`
	// Created is the generation created, 0 when none was.
	Created int `json:"created,omitempty"`
	// Listed are the generations the new request lists, current first.
	Listed []int `json:"listed"`
	// Unlisted are generations held but not in the request: once the
	// credential issued from it is in use and every envelope sealed to them
	// has expired, their key files can be deleted (KEYS.md).
	Unlisted []int `json:"unlisted,omitempty"`
	// Request is the request file written for the authority.
	Request string `json:"request"`
}

// Rotate takes one step of a key rotation for the node whose keys are in
// dataDir and whose current, verified credential is cred: it creates keys
// of suite when the step needs them, and writes the request file
// (node-request.json) for the authority to issue the next credential from.
// The running node takes the new credential when restarted with it.
func Rotate(dataDir string, cred *crypto.Credential, suite crypto.SuiteID, step RotateStep) (Rotation, error) {
	rot := Rotation{Step: step, Request: filepath.Join(dataDir, RequestFile)}
	k, err := LoadKeys(dataDir)
	if err != nil {
		return rot, fmt.Errorf("rotate keys: %w", err)
	}
	byKEM := map[string]KeySet{}
	for _, g := range k.Generations {
		byKEM[g.KEM.Public().KeyID()] = g
	}
	// The generations the credential lists, in its order.
	var listed []KeySet
	for _, info := range cred.KEMKeys {
		if g, ok := byKEM[info.ID]; ok {
			listed = append(listed, g)
		}
	}
	if len(listed) == 0 || listed[0].KEM.Public().KeyID() != cred.KEMKeys[0].ID {
		return rot, fmt.Errorf("rotate keys: the credential's current KEM key %s is not among this node's keys", cred.KEMKeys[0].ID)
	}
	cur := listed[0]
	newest := k.Generations[len(k.Generations)-1]
	inCred := func(g KeySet) bool {
		_, ok := cred.KEMKey(g.KEM.Public().KeyID())
		return ok
	}
	others := func(skip ...int) []KeySet {
		var out []KeySet
		for _, g := range listed {
			if !slices.Contains(skip, g.Generation) {
				out = append(out, g)
			}
		}
		return out
	}
	var req []KeySet
	switch step {
	case RotateAnnounce:
		next := newest
		if inCred(newest) {
			if next, err = newKeySet(dataDir, newest.Generation+1, suite); err != nil {
				return rot, fmt.Errorf("rotate keys: %w", err)
			}
			rot.Created = next.Generation
		}
		req = append([]KeySet{cur, next}, others(cur.Generation, next.Generation)...)
	case RotateSwitch:
		if newest.Generation == cur.Generation {
			return rot, errors.New("rotate keys: the newest keys are already current: run `eduspace node rotate` (announce) first")
		}
		req = append([]KeySet{newest, cur}, others(cur.Generation, newest.Generation)...)
	case RotateRetire:
		req = []KeySet{cur}
	default:
		return rot, fmt.Errorf("rotate keys: unknown step %q", step)
	}
	if len(req) > 8 {
		return rot, errors.New("rotate keys: a credential lists at most 8 keys of a kind: retire old keys first")
	}
	for _, g := range req {
		rot.Listed = append(rot.Listed, g.Generation)
	}
	for _, g := range k.Generations {
		if !slices.Contains(rot.Listed, g.Generation) {
			rot.Unlisted = append(rot.Unlisted, g.Generation)
		}
	}
	data, err := json.MarshalIndent(requestFor(cred.NodeID, req), "", "  ")
	if err != nil {
		return rot, fmt.Errorf("rotate keys: %w", err)
	}
	if err := crypto.WriteFileBytes(rot.Request, append(data, '\n'), 0o644); err != nil {
		return rot, fmt.Errorf("rotate keys: %w", err)
	}
	return rot, nil
}

// GenerationFiles are the key files of generation gen under dataDir, for
// the operator to delete once the generation is retired (KEYS.md).
func GenerationFiles(dataDir string, gen int) []string {
	gd := filepath.Join(dataDir, generationDir(gen))
	return []string{filepath.Join(gd, kemKeyName), filepath.Join(gd, signingKeyName), filepath.Join(gd, checkpointName)}
}
