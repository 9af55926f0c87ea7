package crypto

import (
	"bytes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/cloudflare/circl/kem"
	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/sm4"
)

// The GM/T suite (ENVELOPE.md §3.1): SM2 public-key encryption (GB/T
// 32918.4) of a fresh secret as the KEM, the SM3 key derivation function of
// GB/T 32918.4 for the SM4-GCM key and nonce, SM2 signatures (GB/T 32918.2)
// with the default user id, and SM3 (GB/T 32905) wherever the suite hashes.

// SM2UserID is the user id (ID_A) every SM2 signature of this package is
// made and verified with: the default of GB/T 35276 and GM/T 0009.
const SM2UserID = "1234567812345678"

const (
	sm2PublicKeySize  = 65 // uncompressed point 04 ‖ x ‖ y
	sm2PrivateKeySize = 32
	sm2SecretSize     = 32
	// sm2CiphertextSize is C1 (65, uncompressed) ‖ C3 (32) ‖ C2 (32).
	sm2CiphertextSize = sm2PublicKeySize + sm3.Size + sm2SecretSize
	sm2SignatureSize  = 64 // r ‖ s, 32 bytes each
	sm4KeySize        = 16
	gcmNonceSize      = 12

	labelSM2KeyFromSeed = "eduspace sm2 key from seed"
	labelSM2EncRandom   = "eduspace sm2 encryption randomness"
)

var sm2EncOpts = sm2.NewPlainEncrypterOpts(sm2.MarshalUncompressed, sm2.C1C3C2)
var sm2DecOpts = sm2.NewPlainDecrypterOpts(sm2.C1C3C2)

// sm2KeyFromSeed derives an SM2 private key from a 32-byte seed: d is the
// first output of SM3-KDF(label ‖ seed ‖ counter, 32) (counter from 0) that
// lies in [1, n-2], as sm2.NewPrivateKey checks.
func sm2KeyFromSeed(seed []byte) *sm2.PrivateKey {
	for ctr := uint32(0); ; ctr++ {
		z := append([]byte(labelSM2KeyFromSeed), seed...)
		z = binary.BigEndian.AppendUint32(z, ctr)
		d := sm3.Kdf(z, sm2PrivateKeySize)
		clear(z)
		k, err := sm2.NewPrivateKey(d)
		clear(d)
		if err == nil {
			return k
		}
	}
}

// sm2PublicBytes is the 65-byte uncompressed encoding of pub.
func sm2PublicBytes(pub *ecdsa.PublicKey) []byte {
	b := make([]byte, sm2PublicKeySize)
	b[0] = 4
	pub.X.FillBytes(b[1:33])
	pub.Y.FillBytes(b[33:])
	return b
}

// sm2Scheme is SM2 public-key encryption of a fresh 32-byte secret, as a
// circl KEM so that the suite's keys go through the same key types as the
// HPKE suites': the ciphertext is C1 ‖ C3 ‖ C2 (129 bytes), the shared
// key the secret.
type sm2Scheme struct{}

type sm2KEMPublicKey struct {
	pub *ecdsa.PublicKey
	raw []byte
}

type sm2KEMPrivateKey struct {
	priv *sm2.PrivateKey
	pub  *sm2KEMPublicKey
}

func newSM2KEMPrivateKey(k *sm2.PrivateKey) *sm2KEMPrivateKey {
	return &sm2KEMPrivateKey{priv: k, pub: &sm2KEMPublicKey{pub: &k.PublicKey, raw: sm2PublicBytes(&k.PublicKey)}}
}

func (sm2Scheme) Name() string               { return "SM2-ENC-SM3" }
func (sm2Scheme) CiphertextSize() int        { return sm2CiphertextSize }
func (sm2Scheme) SharedKeySize() int         { return sm2SecretSize }
func (sm2Scheme) PrivateKeySize() int        { return sm2PrivateKeySize }
func (sm2Scheme) PublicKeySize() int         { return sm2PublicKeySize }
func (sm2Scheme) SeedSize() int              { return 32 }
func (sm2Scheme) EncapsulationSeedSize() int { return sm2SecretSize + 32 }

func (s sm2Scheme) GenerateKeyPair() (kem.PublicKey, kem.PrivateKey, error) {
	seed := make([]byte, s.SeedSize())
	defer clear(seed)
	if _, err := io.ReadFull(rand.Reader, seed); err != nil {
		return nil, nil, err
	}
	pk, sk := s.DeriveKeyPair(seed)
	return pk, sk, nil
}

func (s sm2Scheme) DeriveKeyPair(seed []byte) (kem.PublicKey, kem.PrivateKey) {
	if len(seed) != s.SeedSize() {
		panic(kem.ErrSeedSize)
	}
	sk := newSM2KEMPrivateKey(sm2KeyFromSeed(seed))
	return sk.pub, sk
}

func (s sm2Scheme) Encapsulate(pk kem.PublicKey) (ct, ss []byte, err error) {
	seed := make([]byte, s.EncapsulationSeedSize())
	defer clear(seed)
	if _, err := io.ReadFull(rand.Reader, seed); err != nil {
		return nil, nil, err
	}
	return s.EncapsulateDeterministically(pk, seed)
}

// EncapsulateDeterministically takes the secret from the first 32 bytes of
// seed and SM2's encryption randomness k from SM3-KDF of the other 32
// (four candidates for k, of which the first below n is used).
func (s sm2Scheme) EncapsulateDeterministically(pk kem.PublicKey, seed []byte) (ct, ss []byte, err error) {
	p, ok := pk.(*sm2KEMPublicKey)
	if !ok {
		return nil, nil, kem.ErrTypeMismatch
	}
	if len(seed) != s.EncapsulationSeedSize() {
		return nil, nil, kem.ErrSeedSize
	}
	secret := append([]byte(nil), seed[:sm2SecretSize]...)
	kRand := sm3.Kdf(append([]byte(labelSM2EncRandom), seed[sm2SecretSize:]...), 4*32)
	defer clear(kRand)
	ct, err = sm2.Encrypt(bytes.NewReader(kRand), p.pub, secret, sm2EncOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("sm2 encrypt: %w", err)
	}
	if len(ct) != sm2CiphertextSize {
		return nil, nil, errors.New("sm2 encrypt: unexpected ciphertext size")
	}
	return ct, secret, nil
}

func (s sm2Scheme) Decapsulate(sk kem.PrivateKey, ct []byte) ([]byte, error) {
	k, ok := sk.(*sm2KEMPrivateKey)
	if !ok {
		return nil, kem.ErrTypeMismatch
	}
	if len(ct) != sm2CiphertextSize {
		return nil, kem.ErrCiphertextSize
	}
	secret, err := k.priv.Decrypt(nil, ct, sm2DecOpts)
	if err != nil || len(secret) != sm2SecretSize {
		return nil, errors.New("sm2 decrypt failed")
	}
	return secret, nil
}

func (sm2Scheme) UnmarshalBinaryPublicKey(b []byte) (kem.PublicKey, error) {
	if len(b) != sm2PublicKeySize {
		return nil, kem.ErrPubKeySize
	}
	pub, err := sm2.NewPublicKey(b)
	if err != nil {
		return nil, errors.New("not a point of the SM2 curve")
	}
	return &sm2KEMPublicKey{pub: pub, raw: append([]byte(nil), b...)}, nil
}

func (sm2Scheme) UnmarshalBinaryPrivateKey(b []byte) (kem.PrivateKey, error) {
	if len(b) != sm2PrivateKeySize {
		return nil, kem.ErrPrivKeySize
	}
	k, err := sm2.NewPrivateKey(b)
	if err != nil {
		return nil, errors.New("not an SM2 private key")
	}
	return newSM2KEMPrivateKey(k), nil
}

func (p *sm2KEMPublicKey) Scheme() kem.Scheme             { return sm2Scheme{} }
func (p *sm2KEMPublicKey) MarshalBinary() ([]byte, error) { return append([]byte(nil), p.raw...), nil }
func (p *sm2KEMPublicKey) Equal(o kem.PublicKey) bool {
	q, ok := o.(*sm2KEMPublicKey)
	return ok && bytes.Equal(p.raw, q.raw)
}

func (k *sm2KEMPrivateKey) Scheme() kem.Scheme    { return sm2Scheme{} }
func (k *sm2KEMPrivateKey) Public() kem.PublicKey { return k.pub }
func (k *sm2KEMPrivateKey) MarshalBinary() ([]byte, error) {
	return k.priv.D.FillBytes(make([]byte, sm2PrivateKeySize)), nil
}
func (k *sm2KEMPrivateKey) Equal(o kem.PrivateKey) bool {
	q, ok := o.(*sm2KEMPrivateKey)
	if !ok {
		return false
	}
	a, _ := k.MarshalBinary()
	b, _ := q.MarshalBinary()
	defer clear(a)
	defer clear(b)
	return subtle.ConstantTimeCompare(a, b) == 1
}

// sm4GCMKey derives the SM4-GCM key and nonce of an envelope of the GM/T
// suite (ENVELOPE.md §3.1):
//
//	key ‖ nonce = KDF(secret ‖ enc ‖ pkR ‖ info, 16 + 12)
//
// where KDF is the SM3 key derivation function of GB/T 32918.4 §5.4.3.
func sm4GCMKey(secret, enc, pkR, info []byte) (cipher.AEAD, []byte, error) {
	z := make([]byte, 0, len(secret)+len(enc)+len(pkR)+len(info))
	z = append(append(append(append(z, secret...), enc...), pkR...), info...)
	kn := sm3.Kdf(z, sm4KeySize+gcmNonceSize)
	clear(z)
	defer clear(kn[:sm4KeySize])
	block, err := sm4.NewCipher(kn[:sm4KeySize])
	if err != nil {
		return nil, nil, err
	}
	aead, err := newGCM(block)
	if err != nil {
		return nil, nil, err
	}
	return aead, kn[sm4KeySize:], nil
}

// newGCM is GCM over block with a 12-byte nonce and a 16-byte tag: gmsm's
// own (SM4 and GHASH in assembly, where the CPU has the instructions) when
// the block offers it, since crypto/cipher.NewGCM accelerates only AES,
// else the standard library's.
func newGCM(block cipher.Block) (cipher.AEAD, error) {
	if g, ok := block.(interface {
		NewGCM(nonceSize, tagSize int) (cipher.AEAD, error)
	}); ok {
		return g.NewGCM(gcmNonceSize, aeadOverhead)
	}
	return cipher.NewGCM(block)
}

// sm2Sign signs msg with k under [SM2UserID] (GB/T 32918.2: e = SM3(Z_A ‖
// msg)) and returns r ‖ s, 64 bytes.
func sm2Sign(k *sm2.PrivateKey, msg []byte) []byte {
	der, err := k.SignWithSM2(rand.Reader, []byte(SM2UserID), msg)
	if err != nil {
		// Only a broken random source fails here, and crypto/rand does
		// not return errors.
		panic("crypto: SM2 signing failed: " + err.Error())
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		panic("crypto: SM2 signature encoding: " + err.Error())
	}
	sig := make([]byte, sm2SignatureSize)
	rs.R.FillBytes(sig[:32])
	rs.S.FillBytes(sig[32:])
	return sig
}

// sm2Verify reports whether sig (r ‖ s) is an SM2 signature of msg under
// [SM2UserID] by the public key raw (65 bytes, uncompressed).
func sm2Verify(raw string, msg, sig []byte) bool {
	if len(sig) != sm2SignatureSize {
		return false
	}
	pub, err := sm2.NewPublicKey([]byte(raw))
	if err != nil {
		return false
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return sm2.VerifyWithSM2(pub, []byte(SM2UserID), msg, r, s)
}
