package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Composite signatures: Ed25519 and ML-DSA-65 over the same labelled message,
// both required (CREDENTIALS.md §2).
const (
	// CompositeSignatureSize is the size of a composite signature: 64 bytes
	// of Ed25519 followed by 3309 bytes of ML-DSA-65.
	CompositeSignatureSize = ed25519.SignatureSize + mldsa65.SignatureSize
	// CompositePublicKeySize is the size of an encoded composite public key:
	// 32 bytes of Ed25519 followed by 1952 bytes of ML-DSA-65.
	CompositePublicKeySize = ed25519.PublicKeySize + mldsa65.PublicKeySize
	// CompositePrivateKeySize is the size of an encoded composite private
	// key: the 32-byte Ed25519 seed followed by the 32-byte ML-DSA-65 seed.
	CompositePrivateKeySize = ed25519.SeedSize + mldsa65.SeedSize

	labelComposite      = "eduspace composite v1"
	labelCompositeKeyID = "eduspace composite key id"
	maxPurposeLen       = 64
)

// Purposes of composite signatures made by this package. Each use of a key
// signs under its own purpose, so a signature made for one can never be taken
// for another.
const (
	PurposeCredential     = "credential"
	PurposeRevocationList = "revocation-list"
	PurposeCheckpoint     = "checkpoint"
)

// ErrCompositeSignature is returned when a composite signature does not
// verify: either part failing is enough.
var ErrCompositeSignature = errors.New("composite signature invalid")

// noCompare makes a struct incomparable with ==, so that callers use Equal.
type noCompare [0]func()

// CompositeKey is an Ed25519 + ML-DSA-65 private key. It prints as redacted.
type CompositeKey struct {
	_   noCompare
	ed  ed25519.PrivateKey
	ml  *mldsa65.PrivateKey
	pub CompositeVerifyKey
}

// CompositeVerifyKey is an Ed25519 + ML-DSA-65 public key. Compare keys with
// [CompositeVerifyKey.Equal]; the zero CompositeVerifyKey verifies nothing.
type CompositeVerifyKey struct {
	_   noCompare
	raw string // Ed25519 public key ‖ ML-DSA-65 public key
	ml  *mldsa65.PublicKey
	id  string
}

// GenerateCompositeKey returns a new composite key, drawing both 32-byte
// seeds from rand (crypto/rand when nil).
func GenerateCompositeKey(rnd io.Reader) (*CompositeKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	seed := make([]byte, CompositePrivateKeySize)
	defer clear(seed)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, fmt.Errorf("generate composite key: %w", err)
	}
	return ParseCompositeKey(seed)
}

// ParseCompositeKey decodes a 64-byte composite private key as written by
// [CompositeKey.MarshalBinary]: the Ed25519 seed, then the ML-DSA-65 seed.
func ParseCompositeKey(b []byte) (*CompositeKey, error) {
	if len(b) != CompositePrivateKeySize {
		return nil, fmt.Errorf("parse composite key: want %d bytes, got %d", CompositePrivateKeySize, len(b))
	}
	ed := ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
	var mlSeed [mldsa65.SeedSize]byte
	copy(mlSeed[:], b[ed25519.SeedSize:])
	mlPub, mlPriv := mldsa65.NewKeyFromSeed(&mlSeed)
	clear(mlSeed[:])
	raw := make([]byte, 0, CompositePublicKeySize)
	raw = append(raw, ed.Public().(ed25519.PublicKey)...)
	raw = append(raw, mlPub.Bytes()...)
	return &CompositeKey{ed: ed, ml: mlPriv, pub: newCompositeVerifyKey(raw, mlPub)}, nil
}

// Public returns the verification key.
func (k *CompositeKey) Public() CompositeVerifyKey { return k.pub }

// MarshalBinary returns the 64-byte encoding: Ed25519 seed ‖ ML-DSA-65 seed.
// The result is secret.
func (k *CompositeKey) MarshalBinary() ([]byte, error) {
	mlSeed := k.ml.Seed()
	if len(mlSeed) != mldsa65.SeedSize {
		return nil, errors.New("marshal composite key: seed not retained")
	}
	b := make([]byte, 0, CompositePrivateKeySize)
	b = append(b, k.ed.Seed()...)
	return append(b, mlSeed...), nil
}

// Sign returns the composite signature of msg for purpose (CREDENTIALS.md
// §2): Ed25519 and hedged ML-DSA-65 signatures of the same labelled message,
// [CompositeSignatureSize] bytes. purpose is 1..64 bytes of [a-z0-9-], such
// as [PurposeCheckpoint]; a verifier must name the same purpose.
func (k *CompositeKey) Sign(purpose string, msg []byte) ([]byte, error) {
	m, err := compositeMessage(purpose, msg)
	if err != nil {
		return nil, fmt.Errorf("composite sign: %w", err)
	}
	sig := make([]byte, CompositeSignatureSize)
	copy(sig, ed25519.Sign(k.ed, m))
	if err := mldsa65.SignTo(k.ml, m, []byte(labelComposite), true, sig[ed25519.SignatureSize:]); err != nil {
		return nil, fmt.Errorf("composite sign: %w", err)
	}
	return sig, nil
}

// signMLDSA returns only the ML-DSA-65 half of a composite signature; the
// credential's JWS carries the Ed25519 half (CREDENTIALS.md §3).
func (k *CompositeKey) signMLDSA(purpose string, msg []byte) ([]byte, error) {
	m, err := compositeMessage(purpose, msg)
	if err != nil {
		return nil, err
	}
	sig := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(k.ml, m, []byte(labelComposite), true, sig); err != nil {
		return nil, err
	}
	return sig, nil
}

// Equal reports whether k and o are the same key, in constant time.
func (k *CompositeKey) Equal(o *CompositeKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	a, err1 := k.MarshalBinary()
	b, err2 := o.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return err1 == nil && err2 == nil && subtle.ConstantTimeCompare(a, b) == 1
}

// String returns a redacted description naming the public key id.
func (k CompositeKey) String() string {
	if k.pub.IsZero() {
		return "CompositeKey(nil)"
	}
	return "CompositeKey(" + k.pub.id + ", redacted)"
}

// Format prints the redacted [CompositeKey.String] for every verb.
func (k CompositeKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// LogValue keeps the key out of structured logs.
func (k CompositeKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// compositeMessage is the message both parts of a composite signature sign:
//
//	"eduspace composite v1" ‖ 0x00 ‖ len8(purpose) ‖ purpose ‖ SHA-512(msg)
func compositeMessage(purpose string, msg []byte) ([]byte, error) {
	if !validPurpose(purpose) {
		return nil, fmt.Errorf("invalid purpose %q", purpose)
	}
	h := sha512.Sum512(msg)
	m := make([]byte, 0, len(labelComposite)+2+len(purpose)+len(h))
	m = append(m, labelComposite...)
	m = append(m, 0, byte(len(purpose)))
	m = append(m, purpose...)
	return append(m, h[:]...), nil
}

func validPurpose(p string) bool {
	if len(p) == 0 || len(p) > maxPurposeLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func newCompositeVerifyKey(raw []byte, ml *mldsa65.PublicKey) CompositeVerifyKey {
	h := sha256.New()
	h.Write([]byte(labelCompositeKeyID))
	h.Write(raw)
	return CompositeVerifyKey{raw: string(raw), ml: ml, id: "c-" + hex.EncodeToString(h.Sum(nil)[:8])}
}

// ParseCompositeVerifyKey decodes a composite public key as returned by
// [CompositeVerifyKey.Bytes]: 32 bytes of Ed25519, then 1952 bytes of
// ML-DSA-65.
func ParseCompositeVerifyKey(b []byte) (CompositeVerifyKey, error) {
	if len(b) != CompositePublicKeySize {
		return CompositeVerifyKey{}, fmt.Errorf("parse composite verify key: want %d bytes, got %d", CompositePublicKeySize, len(b))
	}
	if _, err := ParseVerifyKey(b[:ed25519.PublicKeySize]); err != nil {
		return CompositeVerifyKey{}, fmt.Errorf("parse composite verify key: %w", err)
	}
	var ml mldsa65.PublicKey
	if err := ml.UnmarshalBinary(b[ed25519.PublicKeySize:]); err != nil {
		return CompositeVerifyKey{}, errors.New("parse composite verify key: invalid ML-DSA-65 key")
	}
	return newCompositeVerifyKey(b, &ml), nil
}

// IsZero reports whether v is the zero CompositeVerifyKey.
func (v CompositeVerifyKey) IsZero() bool { return v.ml == nil }

// Verify checks sig, a composite signature of msg for purpose. Both the
// Ed25519 and the ML-DSA-65 part must verify; the error wraps
// [ErrCompositeSignature] otherwise.
func (v CompositeVerifyKey) Verify(purpose string, msg, sig []byte) error {
	if v.IsZero() {
		return fmt.Errorf("composite verify: no key: %w", ErrCompositeSignature)
	}
	if len(sig) != CompositeSignatureSize {
		return fmt.Errorf("composite verify: signature of %d bytes, want %d: %w", len(sig), CompositeSignatureSize, ErrCompositeSignature)
	}
	m, err := compositeMessage(purpose, msg)
	if err != nil {
		return fmt.Errorf("composite verify: %w", err)
	}
	edOK := ed25519.Verify(ed25519.PublicKey(v.raw[:ed25519.PublicKeySize]), m, sig[:ed25519.SignatureSize])
	mlOK := mldsa65.Verify(v.ml, m, []byte(labelComposite), sig[ed25519.SignatureSize:])
	if !edOK || !mlOK {
		return fmt.Errorf("composite verify: %w", ErrCompositeSignature)
	}
	return nil
}

// verifyMLDSA checks only the ML-DSA-65 half (CREDENTIALS.md §3).
func (v CompositeVerifyKey) verifyMLDSA(purpose string, msg, sig []byte) bool {
	if v.IsZero() || len(sig) != mldsa65.SignatureSize {
		return false
	}
	m, err := compositeMessage(purpose, msg)
	return err == nil && mldsa65.Verify(v.ml, m, []byte(labelComposite), sig)
}

// ed25519Key returns the Ed25519 half.
func (v CompositeVerifyKey) ed25519Key() VerifyKey {
	var k VerifyKey
	if !v.IsZero() {
		k.key = v.raw[:ed25519.PublicKeySize]
	}
	return k
}

// Bytes returns the 1984-byte encoding: Ed25519 public key ‖ ML-DSA-65
// public key.
func (v CompositeVerifyKey) Bytes() []byte { return []byte(v.raw) }

// KeyID returns the key's id: "c-" and 16 hex digits of
// SHA-256("eduspace composite key id" ‖ Bytes()).
func (v CompositeVerifyKey) KeyID() string { return v.id }

// Equal reports whether v and o are the same key.
func (v CompositeVerifyKey) Equal(o CompositeVerifyKey) bool { return v.raw == o.raw }

// String returns the key id.
func (v CompositeVerifyKey) String() string { return "CompositeVerifyKey(" + v.id + ")" }
