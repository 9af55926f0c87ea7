package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/eduspace/eduspace/crypto"
)

// dataKeyFile holds the node's data key: the AES-256 key that seals held
// and received records at rest.
const (
	dataKeyFile = "keys/data.key.pem"
	pemDataKey  = "EDUSPACE DATA KEY"
)

// DataKey seals values at rest (AES-256-GCM): the bodies and
// classifications of the records a node holds and of those it received.
// A sealed value is sealedMagic, the key's 4-byte id, a random 12-byte
// nonce and the ciphertext with its tag; the additional data names the
// table and row, so a value moved to another row does not open.
type DataKey struct {
	id   [4]byte
	aead cipher.AEAD
}

// sealedMagic starts every sealed value: no JSON text, no stored
// classification (schema labels start with their format byte, 1) and no
// stored envelope body starts with it.
var sealedMagic = []byte{0xED, 0xA7}

// LoadDataKey reads the data key of the node in dataDir, creating it
// (0600) on first use.
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
	return NewDataKey(key)
}

// NewDataKey is the data key with the given 32 bytes.
func NewDataKey(key []byte) (*DataKey, error) {
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
	k := &DataKey{aead: aead}
	sum := sha256.Sum256(append([]byte("eduspace data key id\x00"), key...))
	copy(k.id[:], sum[:])
	return k, nil
}

// Seal appends plain, sealed under the key with aad, to dst.
func (k *DataKey) Seal(dst, plain, aad []byte) []byte {
	dst = append(dst, sealedMagic...)
	dst = append(dst, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("data key: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	dst = append(dst, nonce...)
	return k.aead.Seal(dst, nonce, plain, aad)
}

// IsSealed reports whether b is a sealed value.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, sealedMagic) }

// ErrNotOpened is returned for a sealed value that does not open: another
// key sealed it, or it was altered or moved.
var ErrNotOpened = errors.New("a sealed value does not open under the node's data key")

// Open returns the value b holds: b itself when it is not sealed (written
// with storage.encrypt off), else its plaintext, appended to dst.
func (k *DataKey) Open(dst, b, aad []byte) ([]byte, error) {
	if !IsSealed(b) {
		return append(dst, b...), nil
	}
	if k == nil {
		return nil, fmt.Errorf("%w: the node has no data key loaded", ErrNotOpened)
	}
	hdr := len(sealedMagic) + len(k.id)
	ns := k.aead.NonceSize()
	if len(b) < hdr+ns+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: truncated", ErrNotOpened)
	}
	if !bytes.Equal(b[len(sealedMagic):hdr], k.id[:]) {
		return nil, fmt.Errorf("%w: sealed under another key", ErrNotOpened)
	}
	out, err := k.aead.Open(dst, b[hdr:hdr+ns], b[hdr+ns:], aad)
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
