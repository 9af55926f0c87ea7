package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// dataKeyFile holds the node's current data key: the AES-256 key that
// seals held and received records at rest. A key being retired after a
// rotation is kept beside it as keys/data.key.<id>.pem until no stored
// value is sealed under it.
const (
	dataKeyFile = "keys/data.key.pem"
	pemDataKey  = "EDUSPACE DATA KEY"
)

// retiringFile is the file of a key being retired, by its id in hex.
func retiringFile(id string) string { return "keys/data.key." + id + ".pem" }

// DataKey seals values at rest (AES-256-GCM): the bodies and
// classifications of the records a node holds and of those it received.
// A sealed value is sealedMagic, the 4-byte id of the key that sealed it,
// a random 12-byte nonce and the ciphertext with its tag; the additional
// data names the table and row, so a value moved to another row does not
// open.
//
// It is a key ring: values are sealed under the current key, and opened
// under whichever key their id names, the current one or one being
// retired after a rotation (Rotate, Retire). It is safe for concurrent
// use; a rotation takes effect for the next Seal.
type DataKey struct {
	dir  string     // the node's data directory; "" for NewDataKey
	mu   sync.Mutex // serialises Rotate and Retire
	cur  atomic.Pointer[dataKeyGen]
	ring atomic.Pointer[map[[4]byte]*dataKeyGen] // current and retiring; replaced, never changed
}

// dataKeyGen is one AES-256-GCM key and its id.
type dataKeyGen struct {
	id   [4]byte
	aead cipher.AEAD
	path string // the file of a key being retired
}

// sealedMagic starts every sealed value: no JSON text, no stored
// classification (schema labels start with their format byte, 1) and no
// stored envelope body starts with it.
var sealedMagic = []byte{0xED, 0xA7}

// LoadDataKey reads the data keys of the node in dataDir: the current
// one, creating it (0600) on first use, and those being retired after a
// rotation.
func LoadDataKey(dataDir string) (*DataKey, error) {
	path := filepath.Join(dataDir, dataKeyFile)
	key, err := crypto.ReadKeyFile(path, pemDataKey)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("data key: %w", err)
		}
		if err := crypto.WriteKeyFile(path, pemDataKey, key); err != nil {
			return nil, fmt.Errorf("data key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	cur, err := newDataKeyGen(key)
	if err != nil {
		return nil, fmt.Errorf("data key %s: %w", path, err)
	}
	ring := map[[4]byte]*dataKeyGen{cur.id: cur}
	old, err := filepath.Glob(filepath.Join(dataDir, retiringFile("*")))
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	for _, f := range old {
		key, err := crypto.ReadKeyFile(f, pemDataKey)
		if err != nil {
			return nil, fmt.Errorf("data key being retired: %w", err)
		}
		g, err := newDataKeyGen(key)
		if err != nil {
			return nil, fmt.Errorf("data key being retired, %s: %w", f, err)
		}
		if g.id == cur.id {
			// A rotation stopped after keeping the current key aside and
			// before writing the new one: the copy is not needed.
			if err := os.Remove(f); err != nil {
				return nil, fmt.Errorf("data key: a rotation's leftover: %w", err)
			}
			continue
		}
		g.path = f
		ring[g.id] = g
	}
	k := &DataKey{dir: dataDir}
	k.cur.Store(cur)
	k.ring.Store(&ring)
	return k, nil
}

// NewDataKey is the data key with the given 32 bytes, kept in no file: it
// cannot be rotated.
func NewDataKey(key []byte) (*DataKey, error) {
	g, err := newDataKeyGen(key)
	if err != nil {
		return nil, err
	}
	k := &DataKey{}
	k.cur.Store(g)
	k.ring.Store(&map[[4]byte]*dataKeyGen{g.id: g})
	return k, nil
}

func newDataKeyGen(key []byte) (*dataKeyGen, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("data key: want 32 bytes, have %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	g := &dataKeyGen{aead: aead}
	sum := sha256.Sum256(append([]byte("eduspace data key id\x00"), key...))
	copy(g.id[:], sum[:])
	return g, nil
}

// ID is the current key's id in hex: the key new values are sealed under.
func (k *DataKey) ID() string {
	id := k.cur.Load().id
	return hex.EncodeToString(id[:])
}

// Retiring lists the ids (hex, sorted) of the keys kept to open values
// sealed before a rotation, until Retire.
func (k *DataKey) Retiring() []string {
	cur := k.cur.Load().id
	var ids []string
	for id := range *k.ring.Load() {
		if id != cur {
			ids = append(ids, hex.EncodeToString(id[:]))
		}
	}
	slices.Sort(ids)
	return ids
}

// SealedPrefix is how every value sealed under the current key starts:
// what a query compares a stored value's first bytes with to find those
// still in clear or under a key being retired.
func (k *DataKey) SealedPrefix() []byte {
	id := k.cur.Load().id
	return append(bytes.Clone(sealedMagic), id[:]...)
}

// NotCurrentSQL is an SQL condition on column that holds for a value not
// sealed under the current key: in clear, or under a key being retired.
func (k *DataKey) NotCurrentSQL(column string) string {
	p := k.SealedPrefix()
	return fmt.Sprintf("substr(%s, 1, %d) != x'%X'", column, len(p), p)
}

// ErrNoKeyFile is returned by Rotate for a key kept in no file.
var ErrNoKeyFile = errors.New("data key: kept in no file, cannot be rotated")

// ErrNoDataKey is returned for a rotation on a node with storage.encrypt
// off.
var ErrNoDataKey = errors.New("storage.encrypt is off: the node seals nothing at rest and has no data key to rotate")

// ErrRotationUnderway is returned for a rotation asked for while values
// are still being sealed under the current key, or an earlier rotation's
// key is not retired yet.
var ErrRotationUnderway = errors.New("a rotation of the data key is still under way")

// Rotate makes a new current key: values sealed from now on are sealed
// under it, while the keys before it still open what they sealed until
// Retire drops them. Files first, so that a crash at any instant loses no
// key: the current key is copied to its retiring file, then the new key
// replaces keys/data.key.pem. It returns the new key's id.
func (k *DataKey) Rotate() (string, error) {
	if k.dir == "" {
		return "", ErrNoKeyFile
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	cur := k.cur.Load()
	path := filepath.Join(k.dir, dataKeyFile)
	old, err := crypto.ReadKeyFile(path, pemDataKey)
	if err != nil {
		return "", fmt.Errorf("rotate data key: %w", err)
	}
	if g, err := newDataKeyGen(old); err != nil || g.id != cur.id {
		return "", fmt.Errorf("rotate data key: %s is not the key in use: restart the node before rotating", path)
	}
	retired := filepath.Join(k.dir, retiringFile(hex.EncodeToString(cur.id[:])))
	if err := crypto.WriteKeyFile(retired, pemDataKey, old); err != nil {
		return "", fmt.Errorf("rotate data key: keep the current key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	g, err := newDataKeyGen(key)
	if err != nil {
		return "", err
	}
	if err := crypto.WriteKeyFile(path, pemDataKey, key); err != nil {
		return "", fmt.Errorf("rotate data key: %w", err)
	}
	ring := maps.Clone(*k.ring.Load())
	cur.path = retired
	ring[g.id] = g
	k.ring.Store(&ring)
	k.cur.Store(g)
	return hex.EncodeToString(g.id[:]), nil
}

// Retire deletes the key with id (hex), which must not be the current
// one: call it once no stored value is sealed under it any more. A value
// still sealed under it no longer opens.
func (k *DataKey) Retire(id string) error {
	b, err := hex.DecodeString(id)
	if err != nil || len(b) != 4 {
		return fmt.Errorf("retire data key %q: want an id of 8 hex digits", id)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur.Load().id == [4]byte(b) {
		return fmt.Errorf("retire data key %s: it is the current key", id)
	}
	ring := maps.Clone(*k.ring.Load())
	if g := ring[[4]byte(b)]; g != nil && g.path != "" {
		if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retire data key %s: %w", id, err)
		}
	}
	delete(ring, [4]byte(b))
	k.ring.Store(&ring)
	return nil
}

// Seal appends plain, sealed under the current key with aad, to dst.
func (k *DataKey) Seal(dst, plain, aad []byte) []byte {
	g := k.cur.Load()
	dst = append(dst, sealedMagic...)
	dst = append(dst, g.id[:]...)
	nonce := make([]byte, g.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("data key: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	dst = append(dst, nonce...)
	return g.aead.Seal(dst, nonce, plain, aad)
}

// IsSealed reports whether b is a sealed value.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, sealedMagic) }

// ErrNotOpened is returned for a sealed value that does not open: a key
// the node does not hold sealed it, or it was altered or moved.
var ErrNotOpened = errors.New("a sealed value does not open under the node's data key")

// Open returns the value b holds: b itself when it is not sealed (written
// with storage.encrypt off), else its plaintext, appended to dst, opened
// under the key its id names.
func (k *DataKey) Open(dst, b, aad []byte) ([]byte, error) {
	if !IsSealed(b) {
		return append(dst, b...), nil
	}
	if k == nil {
		return nil, fmt.Errorf("%w: the node has no data key loaded", ErrNotOpened)
	}
	hdr := len(sealedMagic) + 4
	if len(b) < hdr {
		return nil, fmt.Errorf("%w: truncated", ErrNotOpened)
	}
	g := (*k.ring.Load())[[4]byte(b[len(sealedMagic):hdr])]
	if g == nil {
		return nil, fmt.Errorf("%w: sealed under another key (%x), not held or retired", ErrNotOpened, b[len(sealedMagic):hdr])
	}
	ns := g.aead.NonceSize()
	if len(b) < hdr+ns+g.aead.Overhead() {
		return nil, fmt.Errorf("%w: truncated", ErrNotOpened)
	}
	out, err := g.aead.Open(dst, b[hdr:hdr+ns], b[hdr+ns:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: altered, or moved from another row", ErrNotOpened)
	}
	return out, nil
}

// SealIf is Seal when k is set and plain unchanged when it is nil
// (storage.encrypt off).
func (k *DataKey) SealIf(plain, aad []byte) []byte {
	if k == nil {
		return plain
	}
	return k.Seal(nil, plain, aad)
}

// DataKeyState is the state of the data key and its last rotation, as the
// admin API reports it (GET /v1/data-key).
type DataKeyState struct {
	// Current is the id of the key new values are sealed under.
	Current string `json:"current"`
	// Retiring are the ids of the keys kept until no stored value is
	// sealed under them; empty when no rotation is under way.
	Retiring []string `json:"retiring"`
	// State is "idle", "sealing" (values are being sealed under the
	// current key) or "retiring" (all are, the old keys are retired once
	// the rotation's wait has passed and the database is compacted).
	State string `json:"state"`
	// Sealed counts the values sealed under the current key since the
	// node started; Remaining those still in clear or under a key being
	// retired.
	Sealed    int64 `json:"sealed"`
	Remaining int   `json:"remaining"`
	// Started is when the node's last rotation started, if it started one
	// since it started itself.
	Started *time.Time `json:"started,omitempty"`
}
