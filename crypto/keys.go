package crypto

import (
	"bytes"
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
	"github.com/emmansun/gmsm/sm2"
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

// MarshalBinary returns the private key bytes (32 bytes for every suite). The
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

// Bytes returns the encoded public key (1216 bytes for X-Wing, 32 for
// X25519, 65 for SM2: the uncompressed point).
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

// SignatureAlgorithm is the algorithm of a node signing key.
type SignatureAlgorithm uint8

// Signature algorithms of node signing keys.
const (
	// Ed25519 is pure Ed25519 (RFC 8032); the key of every suite but the
	// GM/T one.
	Ed25519 SignatureAlgorithm = 1
	// SM2 is the SM2 signature of GB/T 32918.2 with SM3 and the user id
	// [SM2UserID]; the key of the GM/T suite.
	SM2 SignatureAlgorithm = 2
)

// String returns "Ed25519" or "SM2".
func (a SignatureAlgorithm) String() string {
	switch a {
	case Ed25519:
		return "Ed25519"
	case SM2:
		return "SM2"
	}
	return fmt.Sprintf("signature-algorithm(%d)", uint8(a))
}

// SigningKey is a node's private signing key, Ed25519 or SM2. It prints as
// redacted.
type SigningKey struct {
	priv ed25519.PrivateKey // Ed25519 keys
	sm2  *sm2.PrivateKey    // SM2 keys
	pub  VerifyKey
}

// VerifyKey is a node's public signing key: 32 bytes of Ed25519 or, for
// SM2, the 65-byte uncompressed point. Keys compare with == or
// [VerifyKey.Equal]; the zero VerifyKey verifies nothing.
type VerifyKey struct {
	key string
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

// GenerateSigningKeyFor returns a new signing key of algorithm alg,
// drawing a 32-byte seed from rand (crypto/rand when nil). An SM2 key's d
// is derived from the seed with the SM3 key derivation function
// (ENVELOPE.md §3.1).
func GenerateSigningKeyFor(alg SignatureAlgorithm, rnd io.Reader) (*SigningKey, error) {
	switch alg {
	case Ed25519:
		return GenerateSigningKey(rnd)
	case SM2:
		seed, err := readSeed(rnd)
		if err != nil {
			return nil, fmt.Errorf("generate signing key: %w", err)
		}
		defer clear(seed)
		return newSM2SigningKey(sm2KeyFromSeed(seed)), nil
	}
	return nil, fmt.Errorf("generate signing key: unknown algorithm %s, want Ed25519 or SM2", alg)
}

func newSM2SigningKey(k *sm2.PrivateKey) *SigningKey {
	return &SigningKey{sm2: k, pub: VerifyKey{key: string(sm2PublicBytes(&k.PublicKey))}}
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
	return &SigningKey{priv: priv, pub: VerifyKey{key: string(priv.Public().(ed25519.PublicKey))}}, nil
}

// ParseSM2SigningKey decodes a 32-byte SM2 private key d as written by
// [SigningKey.MarshalBinary] for an SM2 key.
func ParseSM2SigningKey(d []byte) (*SigningKey, error) {
	if len(d) != sm2PrivateKeySize {
		return nil, fmt.Errorf("parse sm2 signing key: want %d bytes, got %d", sm2PrivateKeySize, len(d))
	}
	k, err := sm2.NewPrivateKey(d)
	if err != nil {
		return nil, errors.New("parse sm2 signing key: not in [1, n-2] of the SM2 curve")
	}
	return newSM2SigningKey(k), nil
}

// Public returns the verification key.
func (k *SigningKey) Public() VerifyKey { return k.pub }

// Algorithm returns the key's algorithm.
func (k *SigningKey) Algorithm() SignatureAlgorithm { return k.pub.Algorithm() }

// Sign signs msg: with pure Ed25519, or for an SM2 key with SM2 under
// [SM2UserID], giving r ‖ s (64 bytes either way; SM2 signatures are
// randomised).
func (k *SigningKey) Sign(msg []byte) []byte {
	if k.sm2 != nil {
		return sm2Sign(k.sm2, msg)
	}
	return ed25519.Sign(k.priv, msg)
}

// MarshalBinary returns the 32-byte Ed25519 seed, or the 32-byte SM2 d.
func (k *SigningKey) MarshalBinary() ([]byte, error) {
	if k.sm2 != nil {
		return k.sm2.D.FillBytes(make([]byte, sm2PrivateKeySize)), nil
	}
	return append([]byte(nil), k.priv.Seed()...), nil
}

// Equal reports whether k and o are the same key, in constant time.
func (k *SigningKey) Equal(o *SigningKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	a, _ := k.MarshalBinary()
	b, _ := o.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return k.Algorithm() == o.Algorithm() && subtle.ConstantTimeCompare(a, b) == 1
}

// String returns a redacted description naming the public key id.
func (k SigningKey) String() string {
	return "SigningKey(" + k.pub.KeyID() + ", redacted)"
}

// Format prints the redacted [SigningKey.String] for every verb.
func (k SigningKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue keeps the key out of structured logs.
func (k SigningKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// ParseVerifyKey decodes a public signing key: 32 bytes are an Ed25519
// key, 65 bytes starting 04 an SM2 point (checked to be on the curve).
func ParseVerifyKey(b []byte) (VerifyKey, error) {
	switch {
	case len(b) == ed25519.PublicKeySize:
		if bytes.Equal(b, make([]byte, ed25519.PublicKeySize)) {
			return VerifyKey{}, errors.New("parse verify key: all-zero key")
		}
	case len(b) == sm2PublicKeySize && b[0] == 4:
		if _, err := sm2.NewPublicKey(b); err != nil {
			return VerifyKey{}, errors.New("parse verify key: 65 bytes that are not a point of the SM2 curve")
		}
	default:
		return VerifyKey{}, fmt.Errorf("parse verify key: want %d bytes (Ed25519) or %d starting 04 (SM2), got %d",
			ed25519.PublicKeySize, sm2PublicKeySize, len(b))
	}
	return VerifyKey{key: string(b)}, nil
}

// IsZero reports whether v is the zero VerifyKey.
func (v VerifyKey) IsZero() bool { return v.key == "" }

// Algorithm returns the key's algorithm, or 0 for the zero VerifyKey.
func (v VerifyKey) Algorithm() SignatureAlgorithm {
	switch len(v.key) {
	case ed25519.PublicKeySize:
		return Ed25519
	case sm2PublicKeySize:
		return SM2
	}
	return 0
}

// Verify reports whether sig is a valid signature of msg by v: Ed25519, or
// SM2 (r ‖ s) under [SM2UserID].
func (v VerifyKey) Verify(msg, sig []byte) bool {
	switch v.Algorithm() {
	case Ed25519:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(ed25519.PublicKey(v.key), msg, sig)
	case SM2:
		return sm2Verify(v.key, msg, sig)
	}
	return false
}

// Bytes returns the public key: 32 bytes of Ed25519 or the 65-byte SM2
// point.
func (v VerifyKey) Bytes() []byte { return []byte(v.key) }

// Equal reports whether v and o are the same key.
func (v VerifyKey) Equal(o VerifyKey) bool { return v == o }

// KeyID returns the key's id: "s-" and 16 hex digits (ENVELOPE.md §5).
func (v VerifyKey) KeyID() string {
	h := sha256.New()
	h.Write([]byte(labelSigningKeyID))
	h.Write([]byte(v.key))
	return "s-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// String returns the key id.
func (v VerifyKey) String() string { return "VerifyKey(" + v.KeyID() + ")" }
