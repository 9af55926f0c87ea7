package crypto

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Role is a member's role in the space.
type Role string

// Roles.
const (
	RoleUniversity Role = "university"
	RoleCenter     Role = "center"
	RoleAuditor    Role = "auditor"
	// RoleAIService is an AI application or model provider: it receives
	// records, like a university, but the space's rulebook lets them go to
	// it only under the AI purposes (model training and evaluation,
	// learning analytics).
	RoleAIService Role = "ai_service"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	return r == RoleUniversity || r == RoleCenter || r == RoleAuditor || r == RoleAIService
}

// Limits on credentials.
const (
	maxCredentialSize = 64 << 10
	maxKeysPerList    = 8
	credentialLeeway  = 30 * time.Second
)

// KEMKeyInfo is a KEM public key listed in a credential.
type KEMKeyInfo struct {
	ID    string
	Suite SuiteID
	Key   []byte
}

// SigningKeyInfo is an Ed25519 public key listed in a credential.
type SigningKeyInfo struct {
	ID  string
	Key []byte
}

// CompositeKeyInfo is a composite (Ed25519 + ML-DSA-65) public key listed in
// a credential: Key is [CompositeVerifyKey.Bytes], ID its KeyID.
type CompositeKeyInfo struct {
	ID  string
	Key []byte
}

// Credential binds a node to its institution, role and public keys in one
// space. The first key of each list is the current one; the others are the
// node's next or previous keys (CREDENTIALS.md §5 describes rotation).
//
// On the wire a credential is a compact JWS (JWT) signed with EdDSA (Ed25519)
// by the space authority (with SM2 and without pq in a space on the GM/T
// suite, CREDENTIALS.md §3.3), with these claims (CREDENTIALS.md):
//
//	iss       "eduspace-authority:<space>"
//	sub       node id
//	aud       ["eduspace:<space>"]
//	iat, nbf  issue time (Unix seconds)
//	exp       expiry (Unix seconds)
//	inst      institution name
//	role      "university", "center", "auditor" or "ai_service"
//	kem_keys  [{"kid": key id, "suite": suite name, "key": base64url public key}, ...]
//	sig_keys  [{"kid": key id, "key": base64url Ed25519 public key}, ...]
//	ckpt_keys [{"kid": key id, "key": base64url composite public key}, ...] (optional)
//	pq        base64url ML-DSA-65 signature by the authority (last member)
//
// Key ids must equal the ids derived from the keys (ENVELOPE.md §5). The pq
// claim makes the credential a composite signature: the EdDSA JWS signature
// and the ML-DSA-65 signature must both verify (CREDENTIALS.md §3).
type Credential struct {
	Space, NodeID, Institution string
	Role                       Role
	KEMKeys                    []KEMKeyInfo
	SigningKeys                []SigningKeyInfo
	// CheckpointKeys are the node's composite keys for signing evidence
	// checkpoints and other long-lived statements; 0..8 of them.
	CheckpointKeys    []CompositeKeyInfo
	IssuedAt, Expires time.Time
}

// KEMKey returns the KEM key with the given id.
func (c *Credential) KEMKey(id string) (*KEMPublicKey, bool) {
	for _, k := range c.KEMKeys {
		if k.ID == id {
			p, err := ParseKEMPublicKey(k.Suite, k.Key)
			return p, err == nil && p.KeyID() == id
		}
	}
	return nil, false
}

// CurrentKEMKey returns the first KEM key, or nil if there is none or it is
// invalid.
func (c *Credential) CurrentKEMKey() *KEMPublicKey {
	if len(c.KEMKeys) == 0 {
		return nil
	}
	p, _ := c.KEMKey(c.KEMKeys[0].ID)
	return p
}

// SigningKey returns the signing key with the given id.
func (c *Credential) SigningKey(id string) (VerifyKey, bool) {
	for _, k := range c.SigningKeys {
		if k.ID == id {
			v, err := ParseVerifyKey(k.Key)
			return v, err == nil && v.KeyID() == id
		}
	}
	return VerifyKey{}, false
}

// CurrentSigningKey returns the first signing key, or the zero VerifyKey if
// there is none or it is invalid.
func (c *Credential) CurrentSigningKey() VerifyKey {
	if len(c.SigningKeys) == 0 {
		return VerifyKey{}
	}
	v, _ := c.SigningKey(c.SigningKeys[0].ID)
	return v
}

// CheckpointKey returns the composite checkpoint key with the given id.
func (c *Credential) CheckpointKey(id string) (CompositeVerifyKey, bool) {
	for _, k := range c.CheckpointKeys {
		if k.ID == id {
			v, err := ParseCompositeVerifyKey(k.Key)
			return v, err == nil && v.KeyID() == id
		}
	}
	return CompositeVerifyKey{}, false
}

// CurrentCheckpointKey returns the first checkpoint key, or the zero
// CompositeVerifyKey if there is none or it is invalid.
func (c *Credential) CurrentCheckpointKey() CompositeVerifyKey {
	if len(c.CheckpointKeys) == 0 {
		return CompositeVerifyKey{}
	}
	v, _ := c.CheckpointKey(c.CheckpointKeys[0].ID)
	return v
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validate checks a credential's fields: space and node id are 1..64 of
// [A-Za-z0-9_-], the institution is 1..256 bytes of UTF-8 without control
// characters, the role is known, there are 1..8 KEM and signing keys and 0..8
// checkpoint keys, every key parses and has the id derived from it, no id
// repeats, and Expires is after IssuedAt.
func (c *Credential) validate() error {
	if !validName(c.Space) {
		return errors.New("invalid space name")
	}
	if !validName(c.NodeID) {
		return errors.New("invalid node id")
	}
	if len(c.Institution) == 0 || len(c.Institution) > 256 || !utf8.ValidString(c.Institution) {
		return errors.New("invalid institution")
	}
	for _, r := range c.Institution {
		if unicode.IsControl(r) {
			return errors.New("invalid institution")
		}
	}
	if !c.Role.Valid() {
		return fmt.Errorf("unknown role %q", c.Role)
	}
	if len(c.KEMKeys) == 0 || len(c.KEMKeys) > maxKeysPerList {
		return fmt.Errorf("%d kem keys, want 1..%d", len(c.KEMKeys), maxKeysPerList)
	}
	if len(c.SigningKeys) == 0 || len(c.SigningKeys) > maxKeysPerList {
		return fmt.Errorf("%d signing keys, want 1..%d", len(c.SigningKeys), maxKeysPerList)
	}
	seen := map[string]bool{}
	for i, k := range c.KEMKeys {
		p, err := ParseKEMPublicKey(k.Suite, k.Key)
		if err != nil {
			return fmt.Errorf("kem key %d: %w", i, err)
		}
		if p.KeyID() != k.ID || seen[k.ID] {
			return fmt.Errorf("kem key %d: id %q does not match the key or repeats", i, k.ID)
		}
		seen[k.ID] = true
	}
	for i, k := range c.SigningKeys {
		v, err := ParseVerifyKey(k.Key)
		if err != nil {
			return fmt.Errorf("signing key %d: %w", i, err)
		}
		if v.KeyID() != k.ID || seen[k.ID] {
			return fmt.Errorf("signing key %d: id %q does not match the key or repeats", i, k.ID)
		}
		seen[k.ID] = true
	}
	if len(c.CheckpointKeys) > maxKeysPerList {
		return fmt.Errorf("%d checkpoint keys, want 0..%d", len(c.CheckpointKeys), maxKeysPerList)
	}
	for i, k := range c.CheckpointKeys {
		v, err := ParseCompositeVerifyKey(k.Key)
		if err != nil {
			return fmt.Errorf("checkpoint key %d: %w", i, err)
		}
		if v.KeyID() != k.ID || seen[k.ID] {
			return fmt.Errorf("checkpoint key %d: id %q does not match the key or repeats", i, k.ID)
		}
		seen[k.ID] = true
	}
	if c.IssuedAt.IsZero() || !c.Expires.After(c.IssuedAt) {
		return errors.New("expiry not after issue time")
	}
	return nil
}

type kemKeyClaim struct {
	ID    string `json:"kid"`
	Suite string `json:"suite"`
	Key   string `json:"key"`
}

type sigKeyClaim struct {
	ID  string `json:"kid"`
	Key string `json:"key"`
}

type credentialClaims struct {
	jwt.RegisteredClaims
	Institution string        `json:"inst"`
	Role        Role          `json:"role"`
	KEMKeys     []kemKeyClaim `json:"kem_keys"`
	SigKeys     []sigKeyClaim `json:"sig_keys"`
	CkptKeys    []sigKeyClaim `json:"ckpt_keys,omitempty"`
	// PQ is the authority's ML-DSA-65 signature; Issue appends it as the
	// last member of the payload (CREDENTIALS.md §3).
	PQ string `json:"pq,omitempty"`
}

func issuer(space string) string   { return "eduspace-authority:" + space }
func audience(space string) string { return "eduspace:" + space }

// AuthorityKey is the space authority's root key: an Ed25519 key, which signs
// credentials as standard EdDSA JWTs, and an ML-DSA-65 key, which adds the
// post-quantum half to credentials and signs revocation lists together with
// the Ed25519 key (CREDENTIALS.md). It prints as redacted.
type AuthorityKey struct {
	_  noCompare
	ck CompositeKey
	// sm2 signs the credentials of a space on the GM/T suite
	// (CREDENTIALS.md §3.3); nil for every other space.
	sm2 *SigningKey
}

// AuthorityPublicKey is the authority's root public key (Ed25519 and
// ML-DSA-65), the trust anchor every node is configured with. Compare keys
// with [AuthorityPublicKey.Equal]; the zero value verifies nothing.
type AuthorityPublicKey struct {
	_   noCompare
	cv  CompositeVerifyKey
	sm2 VerifyKey // zero unless the space is on the GM/T suite
}

// GenerateAuthorityKey returns a new root key, drawing its two 32-byte seeds
// from rand (crypto/rand when nil).
func GenerateAuthorityKey(rnd io.Reader) (*AuthorityKey, error) {
	k, err := GenerateCompositeKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate authority key: %w", err)
	}
	return &AuthorityKey{ck: *k}, nil
}

// GenerateAuthorityKeyFor returns a new root key for a space on suite s:
// the composite key, and for the GM/T suite an SM2 key as well, which
// signs the space's credentials (CREDENTIALS.md §3.3). Seeds are drawn
// from rand (crypto/rand when nil).
func GenerateAuthorityKeyFor(s SuiteID, rnd io.Reader) (*AuthorityKey, error) {
	k, err := GenerateAuthorityKey(rnd)
	if err != nil || s != SuiteSM2 {
		return k, err
	}
	if k.sm2, err = GenerateSigningKeyFor(SM2, rnd); err != nil {
		return nil, fmt.Errorf("generate authority key: %w", err)
	}
	return k, nil
}

// ParseAuthorityKey decodes a root key as written by
// [AuthorityKey.MarshalBinary]: the Ed25519 seed, then the ML-DSA-65 seed
// (64 bytes), then for a space on the GM/T suite the SM2 d (96 bytes).
func ParseAuthorityKey(b []byte) (*AuthorityKey, error) {
	if len(b) == ed25519.SeedSize {
		return nil, errors.New("parse authority key: a 32-byte Ed25519-only key from before composite root keys; create a new authority key")
	}
	if len(b) != CompositePrivateKeySize && len(b) != CompositePrivateKeySize+sm2PrivateKeySize {
		return nil, fmt.Errorf("parse authority key: want %d bytes (or %d with an SM2 key), got %d", CompositePrivateKeySize, CompositePrivateKeySize+sm2PrivateKeySize, len(b))
	}
	k, err := ParseCompositeKey(b[:CompositePrivateKeySize])
	if err != nil {
		return nil, fmt.Errorf("parse authority key: %w", err)
	}
	a := &AuthorityKey{ck: *k}
	if len(b) > CompositePrivateKeySize {
		if a.sm2, err = ParseSM2SigningKey(b[CompositePrivateKeySize:]); err != nil {
			return nil, fmt.Errorf("parse authority key: %w", err)
		}
	}
	return a, nil
}

// MarshalBinary returns the encoding: Ed25519 seed ‖ ML-DSA-65 seed, and
// the SM2 d for a space on the GM/T suite. The result is secret.
func (a *AuthorityKey) MarshalBinary() ([]byte, error) {
	b, err := a.ck.MarshalBinary()
	if err != nil || a.sm2 == nil {
		return b, err
	}
	d, _ := a.sm2.MarshalBinary()
	defer clear(d)
	return append(b, d...), nil
}

// Public returns the root public key.
func (a *AuthorityKey) Public() AuthorityPublicKey {
	p := AuthorityPublicKey{cv: a.ck.pub}
	if a.sm2 != nil {
		p.sm2 = a.sm2.Public()
	}
	return p
}

// Equal reports whether a and o are the same key, in constant time.
func (a *AuthorityKey) Equal(o *AuthorityKey) bool {
	if a == nil || o == nil {
		return a == o
	}
	if (a.sm2 == nil) != (o.sm2 == nil) || a.sm2 != nil && !a.sm2.Equal(o.sm2) {
		return false
	}
	return a.ck.Equal(&o.ck)
}

// String returns a redacted description naming the public key id.
func (a AuthorityKey) String() string {
	return "AuthorityKey(" + a.ck.pub.KeyID() + ", redacted)"
}

// Format prints the redacted [AuthorityKey.String] for every verb.
func (a AuthorityKey) Format(f fmt.State, _ rune) { io.WriteString(f, a.String()) }

// LogValue keeps the key out of structured logs.
func (a AuthorityKey) LogValue() slog.Value { return slog.StringValue(a.String()) }

// ParseAuthorityPublicKey decodes a root public key as returned by
// [AuthorityPublicKey.Bytes]: the 1984-byte composite encoding, followed
// for a space on the GM/T suite by the 65-byte SM2 point.
func ParseAuthorityPublicKey(b []byte) (AuthorityPublicKey, error) {
	var p AuthorityPublicKey
	if len(b) == CompositePublicKeySize+sm2PublicKeySize {
		sm, err := ParseVerifyKey(b[CompositePublicKeySize:])
		if err != nil {
			return AuthorityPublicKey{}, fmt.Errorf("parse authority public key: %w", err)
		}
		p.sm2, b = sm, b[:CompositePublicKeySize]
	}
	v, err := ParseCompositeVerifyKey(b)
	if err != nil {
		return AuthorityPublicKey{}, fmt.Errorf("parse authority public key: %w", err)
	}
	p.cv = v
	return p, nil
}

// Bytes returns the encoding: Ed25519 public key ‖ ML-DSA-65 public key
// (1984 bytes), and the SM2 point for a space on the GM/T suite.
func (p AuthorityPublicKey) Bytes() []byte { return append(p.cv.Bytes(), p.sm2.Bytes()...) }

// SM2 returns the SM2 key that signs the credentials of a space on the
// GM/T suite, or the zero VerifyKey for any other space.
func (p AuthorityPublicKey) SM2() VerifyKey { return p.sm2 }

// Ed25519 returns the Ed25519 half, the key standard JOSE libraries verify
// credentials with.
func (p AuthorityPublicKey) Ed25519() ed25519.PublicKey {
	if p.cv.IsZero() {
		return nil
	}
	return p.cv.ed25519Key().Bytes()
}

// Composite returns the root key as a composite verification key, as it
// verifies revocation lists.
func (p AuthorityPublicKey) Composite() CompositeVerifyKey { return p.cv }

// IsZero reports whether p is the zero AuthorityPublicKey.
func (p AuthorityPublicKey) IsZero() bool { return p.cv.IsZero() }

// Equal reports whether p and o are the same key.
func (p AuthorityPublicKey) Equal(o AuthorityPublicKey) bool {
	return p.cv.Equal(o.cv) && p.sm2 == o.sm2
}

// KeyID returns the key's id, "c-" and 16 hex digits as for composite keys.
// Credentials name it in the JWS header's "kid".
func (p AuthorityPublicKey) KeyID() string { return p.cv.KeyID() }

// String returns the key id.
func (p AuthorityPublicKey) String() string { return "AuthorityPublicKey(" + p.cv.KeyID() + ")" }

// Issue signs c as a compact JWT (CREDENTIALS.md §3): the claims without
// "pq" are signed with the ML-DSA-65 root key, that signature is appended as
// the last claim "pq", and the result is signed as a standard EdDSA JWS with
// the Ed25519 root key. c.Space names the space; times are truncated to
// seconds.
// A root key with an SM2 key (a space on the GM/T suite) signs instead one
// JWS of alg SM2 with it, without pq (CREDENTIALS.md §3.3).
func (a *AuthorityKey) Issue(c Credential) (string, error) {
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("issue credential: %w", err)
	}
	cl := credentialClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer(c.Space),
			Subject:   c.NodeID,
			Audience:  jwt.ClaimStrings{audience(c.Space)},
			ExpiresAt: jwt.NewNumericDate(c.Expires),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			NotBefore: jwt.NewNumericDate(c.IssuedAt),
		},
		Institution: c.Institution,
		Role:        c.Role,
	}
	for _, k := range c.KEMKeys {
		cl.KEMKeys = append(cl.KEMKeys, kemKeyClaim{ID: k.ID, Suite: k.Suite.String(), Key: b64.EncodeToString(k.Key)})
	}
	for _, k := range c.SigningKeys {
		cl.SigKeys = append(cl.SigKeys, sigKeyClaim{ID: k.ID, Key: b64.EncodeToString(k.Key)})
	}
	for _, k := range c.CheckpointKeys {
		cl.CkptKeys = append(cl.CkptKeys, sigKeyClaim{ID: k.ID, Key: b64.EncodeToString(k.Key)})
	}
	var s string
	var err error
	if a.sm2 != nil {
		// alg SM2 with the root's SM2 key, which the header names; no pq
		// claim (CREDENTIALS.md §3.3).
		s, err = a.sm2.SignJWT(cl)
	} else {
		s, err = a.signClaims(cl)
	}
	if err != nil {
		return "", fmt.Errorf("issue credential: %w", err)
	}
	return s, nil
}

// signClaims signs cl (with cl.PQ empty) as Issue describes.
func (a *AuthorityKey) signClaims(cl credentialClaims) (string, error) {
	cl.PQ = ""
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, cl)
	tok.Header["kid"] = a.Public().KeyID()
	input0, err := tok.SigningString()
	if err != nil {
		return "", err
	}
	header, payload0, _ := strings.Cut(input0, ".")
	p0, err := b64.DecodeString(payload0)
	if err != nil || len(p0) <= 2 || p0[len(p0)-1] != '}' {
		return "", errors.New("unexpected claims encoding")
	}
	pq, err := a.ck.signMLDSA(PurposeCredential, []byte(input0))
	if err != nil {
		return "", err
	}
	p1 := append(p0[:len(p0)-1:len(p0)-1], pqSuffix(b64.EncodeToString(pq))...)
	input1 := header + "." + b64.EncodeToString(p1)
	sig, err := jwt.SigningMethodEdDSA.Sign(input1, a.ck.ed)
	if err != nil {
		return "", err
	}
	return input1 + "." + b64.EncodeToString(sig), nil
}

var b64 = base64.RawURLEncoding.Strict()

// pqSuffix is how the pq claim ends the payload: the payload without pq,
// minus its closing brace, followed by this.
func pqSuffix(pq string) string { return `,"pq":"` + pq + `"}` }

// ParseCredential verifies token against the root key for space at time now
// and returns the credential. It accepts only EdDSA with the pq claim, or,
// when the root key has an SM2 key (a space on the GM/T suite), only SM2
// without it (CREDENTIALS.md §3.3). It requires iss, aud, exp
// and iat, allows 30 s of clock skew, checks roles, key sizes and key ids,
// and requires the ML-DSA-65 signature in the pq claim to verify
// (CREDENTIALS.md §3) unless the credential is SM2's. Errors wrap the jwt package's (jwt.ErrTokenExpired,
// ...), or [ErrCompositeSignature] when the pq claim is missing or invalid.
func ParseCredential(token string, root AuthorityPublicKey, space string, now time.Time) (*Credential, error) {
	if len(token) > maxCredentialSize {
		return nil, errors.New("parse credential: token too large")
	}
	if root.IsZero() {
		return nil, errors.New("parse credential: no root key")
	}
	var cl credentialClaims
	keyFunc, method := func(*jwt.Token) (any, error) { return root.Ed25519(), nil }, jwt.SigningMethodEdDSA.Alg()
	if !root.sm2.IsZero() {
		keyFunc, method = func(t *jwt.Token) (any, error) {
			if kid, _ := t.Header["kid"].(string); kid != root.sm2.KeyID() {
				return nil, fmt.Errorf("signed by key %q, not the root's SM2 key %q", kid, root.sm2.KeyID())
			}
			return root.sm2, nil
		}, JWSAlgSM2
	}
	_, err := jwt.ParseWithClaims(token, &cl, keyFunc,
		jwt.WithValidMethods([]string{method}),
		jwt.WithIssuer(issuer(space)),
		jwt.WithAudience(audience(space)),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(credentialLeeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	if err != nil {
		return nil, fmt.Errorf("parse credential: %w", err)
	}
	if !root.sm2.IsZero() {
		if cl.PQ != "" {
			return nil, errors.New("parse credential: a pq claim in a credential of a space on the GM/T suite, which the root's SM2 key alone signs")
		}
	} else if err := verifyPQ(token, cl.PQ, root); err != nil {
		return nil, fmt.Errorf("parse credential: %w", err)
	}
	if cl.IssuedAt == nil {
		return nil, errors.New("parse credential: no issue time")
	}
	c := &Credential{
		Space:       space,
		NodeID:      cl.Subject,
		Institution: cl.Institution,
		Role:        cl.Role,
		IssuedAt:    cl.IssuedAt.Time.UTC(),
		Expires:     cl.ExpiresAt.Time.UTC(),
	}
	for i, k := range cl.KEMKeys {
		s, err := ParseSuite(k.Suite)
		if err != nil {
			return nil, fmt.Errorf("parse credential: kem key %d: %w", i, err)
		}
		b, err := b64.DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("parse credential: kem key %d: bad base64url", i)
		}
		c.KEMKeys = append(c.KEMKeys, KEMKeyInfo{ID: k.ID, Suite: s, Key: b})
	}
	for i, k := range cl.SigKeys {
		b, err := b64.DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("parse credential: signing key %d: bad base64url", i)
		}
		c.SigningKeys = append(c.SigningKeys, SigningKeyInfo{ID: k.ID, Key: b})
	}
	for i, k := range cl.CkptKeys {
		b, err := b64.DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("parse credential: checkpoint key %d: bad base64url", i)
		}
		c.CheckpointKeys = append(c.CheckpointKeys, CompositeKeyInfo{ID: k.ID, Key: b})
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("parse credential: %w", err)
	}
	return c, nil
}

// verifyPQ checks the ML-DSA-65 half of a credential whose EdDSA signature
// has been verified: the payload must end with `,"pq":"<pq>"}` exactly, and
// pq must sign the JWS signing input of the payload without that member.
func verifyPQ(token, pq string, root AuthorityPublicKey) error {
	if pq == "" {
		return fmt.Errorf("no pq claim: %w", ErrCompositeSignature)
	}
	header, rest, _ := strings.Cut(token, ".")
	payload1, _, _ := strings.Cut(rest, ".")
	p1, err := b64.DecodeString(payload1)
	if err != nil {
		return fmt.Errorf("pq claim: bad payload encoding: %w", ErrCompositeSignature)
	}
	suffix := pqSuffix(pq)
	if !strings.HasSuffix(string(p1), suffix) || len(p1) < len(suffix)+1 {
		return fmt.Errorf("pq claim is not the payload's last member in canonical form: %w", ErrCompositeSignature)
	}
	p0 := append(p1[:len(p1)-len(suffix):len(p1)-len(suffix)], '}')
	sig, err := b64.DecodeString(pq)
	if err != nil {
		return fmt.Errorf("pq claim: bad base64url: %w", ErrCompositeSignature)
	}
	if !root.cv.verifyMLDSA(PurposeCredential, []byte(header+"."+b64.EncodeToString(p0)), sig) {
		return fmt.Errorf("pq claim: ML-DSA-65 signature invalid: %w", ErrCompositeSignature)
	}
	return nil
}
