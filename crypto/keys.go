package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cloudflare/circl/kem"
)

// Labels for key ids (ENVELOPE.md §5).
const (
	labelKEMKeyID     = "eduspace kem key id"
	labelSigningKeyID = "eduspace signing key id"
)

// KEMPrivateKey is a node's HPKE private key for one suite. It prints as
// redacted.
type KEMPrivateKey struct {
	suite SuiteID
	sk    kem.PrivateKey
	pub   *KEMPublicKey
}

// KEMPublicKey is a node's HPKE public key for one suite.
type KEMPublicKey struct {
	suite SuiteID
	pk    kem.PublicKey
	raw   []byte
	id    string
}

// GenerateKEMKey returns a new private key of suite s, drawing its seed from
// rand (crypto/rand when nil).
func GenerateKEMKey(s SuiteID, rnd io.Reader) (*KEMPrivateKey, error) {
	if !s.known() {
		return nil, fmt.Errorf("generate kem key: %w", ErrSuite)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	seed := make([]byte, s.scheme().SeedSize())
	defer clear(seed)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, fmt.Errorf("generate kem key: %w", err)
	}
	_, sk := s.scheme().DeriveKeyPair(seed)
	return newKEMPrivateKey(s, sk)
}

// ParseKEMPrivateKey decodes a private key of suite s as written by
// [KEMPrivateKey.MarshalBinary].
func ParseKEMPrivateKey(s SuiteID, b []byte) (*KEMPrivateKey, error) {
	if !s.known() {
		return nil, fmt.Errorf("parse kem private key: %w", ErrSuite)
	}
	sk, err := s.scheme().UnmarshalBinaryPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse kem private key: invalid %s key", s)
	}
	return newKEMPrivateKey(s, sk)
}

func newKEMPrivateKey(s SuiteID, sk kem.PrivateKey) (*KEMPrivateKey, error) {
	pub, err := newKEMPublicKey(s, sk.Public())
	if err != nil {
		return nil, err
	}
	return &KEMPrivateKey{suite: s, sk: sk, pub: pub}, nil
}

// Public returns the public key.
func (k *KEMPrivateKey) Public() *KEMPublicKey { return k.pub }

// Suite returns the key's suite.
func (k *KEMPrivateKey) Suite() SuiteID { return k.suite }

// MarshalBinary returns the private key bytes (32 bytes for both suites). The
// suite is not included: store it alongside (the key files do, see
// [WriteKEMKeyFile]).
func (k *KEMPrivateKey) MarshalBinary() ([]byte, error) {
	b, err := k.sk.MarshalBinary()
	if err != nil {
		return nil, errors.New("marshal kem private key failed")
	}
	return b, nil
}

// Equal reports whether k and o are the same key, in constant time.
func (k *KEMPrivateKey) Equal(o *KEMPrivateKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	a, err1 := k.sk.MarshalBinary()
	b, err2 := o.sk.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return err1 == nil && err2 == nil && k.suite == o.suite && subtle.ConstantTimeCompare(a, b) == 1
}

// String returns a redacted description naming the suite and public key id.
func (k KEMPrivateKey) String() string {
	if k.pub == nil {
		return "KEMPrivateKey(nil)"
	}
	return "KEMPrivateKey(" + k.suite.String() + ", " + k.pub.id + ", redacted)"
}

// Format prints the redacted [KEMPrivateKey.String] for every verb.
func (k KEMPrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue keeps the key out of structured logs.
func (k KEMPrivateKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// ParseKEMPublicKey decodes a public key of suite s as returned by
// [KEMPublicKey.Bytes].
func ParseKEMPublicKey(s SuiteID, b []byte) (*KEMPublicKey, error) {
	if !s.known() {
		return nil, fmt.Errorf("parse kem public key: %w", ErrSuite)
	}
	pk, err := s.scheme().UnmarshalBinaryPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("parse kem public key: invalid %s key of %d bytes", s, len(b))
	}
	return newKEMPublicKey(s, pk)
}

func newKEMPublicKey(s SuiteID, pk kem.PublicKey) (*KEMPublicKey, error) {
	raw, err := pk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal kem public key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(labelKEMKeyID))
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(s)))
	h.Write(raw)
	id := "k-" + hex.EncodeToString(h.Sum(nil)[:8])
	return &KEMPublicKey{suite: s, pk: pk, raw: raw, id: id}, nil
}

// Suite returns the key's suite.
func (p *KEMPublicKey) Suite() SuiteID { return p.suite }

// Bytes returns the encoded public key (1216 bytes for X-Wing, 32 for X25519).
func (p *KEMPublicKey) Bytes() []byte { return append([]byte(nil), p.raw...) }

// KeyID returns the key's id: "k-" and 16 hex digits (ENVELOPE.md §5).
func (p *KEMPublicKey) KeyID() string { return p.id }

// Equal reports whether p and o are the same key of the same suite.
func (p *KEMPublicKey) Equal(o *KEMPublicKey) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.suite == o.suite && string(p.raw) == string(o.raw)
}

// String returns the suite and key id.
func (p *KEMPublicKey) String() string { return "KEMPublicKey(" + p.suite.String() + ", " + p.id + ")" }

// SigningKey is a node's Ed25519 private signing key. It prints as redacted.
type SigningKey struct {
	priv ed25519.PrivateKey
	pub  VerifyKey
}

// VerifyKey is an Ed25519 public key. Keys compare with == or [VerifyKey.Equal];
// the zero VerifyKey verifies nothing.
type VerifyKey struct {
	key [ed25519.PublicKeySize]byte
}

// GenerateSigningKey returns a new Ed25519 key, drawing its seed from rand
// (crypto/rand when nil).
func GenerateSigningKey(rnd io.Reader) (*SigningKey, error) {
	seed, err := readSeed(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	defer clear(seed)
	return ParseSigningKey(seed)
}

func readSeed(rnd io.Reader) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, err
	}
	return seed, nil
}

// ParseSigningKey decodes a 32-byte Ed25519 seed as written by
// [SigningKey.MarshalBinary].
func ParseSigningKey(seed []byte) (*SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("parse signing key: want %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	k := &SigningKey{priv: priv}
	copy(k.pub.key[:], priv.Public().(ed25519.PublicKey))
	return k, nil
}

// Public returns the verification key.
func (k *SigningKey) Public() VerifyKey { return k.pub }

// Sign signs msg with pure Ed25519.
func (k *SigningKey) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// MarshalBinary returns the 32-byte seed.
func (k *SigningKey) MarshalBinary() ([]byte, error) {
	return append([]byte(nil), k.priv.Seed()...), nil
}

// Equal reports whether k and o are the same key, in constant time.
func (k *SigningKey) Equal(o *SigningKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	return subtle.ConstantTimeCompare(k.priv, o.priv) == 1
}

// String returns a redacted description naming the public key id.
func (k SigningKey) String() string {
	return "SigningKey(" + k.pub.KeyID() + ", redacted)"
}

// Format prints the redacted [SigningKey.String] for every verb.
func (k SigningKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue keeps the key out of structured logs.
func (k SigningKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// ParseVerifyKey decodes a 32-byte Ed25519 public key.
func ParseVerifyKey(b []byte) (VerifyKey, error) {
	var v VerifyKey
	if len(b) != ed25519.PublicKeySize {
		return v, fmt.Errorf("parse verify key: want %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	copy(v.key[:], b)
	if v.IsZero() {
		return VerifyKey{}, errors.New("parse verify key: all-zero key")
	}
	return v, nil
}

// IsZero reports whether v is the zero VerifyKey.
func (v VerifyKey) IsZero() bool { return v.key == [ed25519.PublicKeySize]byte{} }

// Verify reports whether sig is a valid Ed25519 signature of msg by v.
func (v VerifyKey) Verify(msg, sig []byte) bool {
	if v.IsZero() || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(v.key[:], msg, sig)
}

// Bytes returns the 32-byte public key.
func (v VerifyKey) Bytes() []byte { return append([]byte(nil), v.key[:]...) }

// Equal reports whether v and o are the same key.
func (v VerifyKey) Equal(o VerifyKey) bool { return v == o }

// KeyID returns the key's id: "s-" and 16 hex digits (ENVELOPE.md §5).
func (v VerifyKey) KeyID() string {
	h := sha256.New()
	h.Write([]byte(labelSigningKeyID))
	h.Write(v.key[:])
	return "s-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// String returns the key id.
func (v VerifyKey) String() string { return "VerifyKey(" + v.KeyID() + ")" }
