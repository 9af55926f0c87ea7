package crypto

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return r == RoleUniversity || r == RoleCenter || r == RoleAuditor }

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

// Credential binds a node to its institution, role and public keys in one
// space. The first key of each list is the current one.
//
// On the wire a credential is a compact JWS (JWT) signed with EdDSA (Ed25519)
// by the space authority, with these claims:
//
//	iss       "eduspace-authority:<space>"
//	sub       node id
//	aud       ["eduspace:<space>"]
//	iat, nbf  issue time (Unix seconds)
//	exp       expiry (Unix seconds)
//	inst      institution name
//	role      "university", "center" or "auditor"
//	kem_keys  [{"kid": key id, "suite": suite name, "key": base64url public key}, ...]
//	sig_keys  [{"kid": key id, "key": base64url Ed25519 public key}, ...]
//
// Key ids must equal the ids derived from the keys (ENVELOPE.md §5).
type Credential struct {
	Space, NodeID, Institution string
	Role                       Role
	KEMKeys                    []KEMKeyInfo
	SigningKeys                []SigningKeyInfo
	IssuedAt, Expires          time.Time
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
// characters, the role is known, there are 1..8 keys of each kind, every key
// parses and has the id derived from it, and Expires is after IssuedAt.
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
}

func issuer(space string) string   { return "eduspace-authority:" + space }
func audience(space string) string { return "eduspace:" + space }

// AuthorityKey is the space authority's Ed25519 root key. It prints as
// redacted.
type AuthorityKey struct {
	sk SigningKey
}

// AuthorityPublicKey is the authority's root public key, the trust anchor
// every node is configured with.
type AuthorityPublicKey struct {
	key VerifyKey
}

// GenerateAuthorityKey returns a new root key, drawing its seed from rand
// (crypto/rand when nil).
func GenerateAuthorityKey(rnd io.Reader) (*AuthorityKey, error) {
	seed, err := readSeed(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate authority key: %w", err)
	}
	defer clear(seed)
	return ParseAuthorityKey(seed)
}

// ParseAuthorityKey decodes a 32-byte Ed25519 seed as written by
// [AuthorityKey.MarshalBinary].
func ParseAuthorityKey(seed []byte) (*AuthorityKey, error) {
	sk, err := ParseSigningKey(seed)
	if err != nil {
		return nil, errors.New("parse authority key: want a 32-byte seed")
	}
	return &AuthorityKey{sk: *sk}, nil
}

// MarshalBinary returns the 32-byte seed.
func (a *AuthorityKey) MarshalBinary() ([]byte, error) { return a.sk.MarshalBinary() }

// Public returns the root public key.
func (a *AuthorityKey) Public() AuthorityPublicKey { return AuthorityPublicKey{key: a.sk.Public()} }

// String returns a redacted description naming the public key id.
func (a AuthorityKey) String() string {
	return "AuthorityKey(" + a.sk.pub.KeyID() + ", redacted)"
}

// Format prints the redacted [AuthorityKey.String] for every verb.
func (a AuthorityKey) Format(f fmt.State, _ rune) { io.WriteString(f, a.String()) }

// LogValue keeps the key out of structured logs.
func (a AuthorityKey) LogValue() slog.Value { return slog.StringValue(a.String()) }

// ParseAuthorityPublicKey decodes a raw 32-byte Ed25519 public key.
func ParseAuthorityPublicKey(b []byte) (AuthorityPublicKey, error) {
	v, err := ParseVerifyKey(b)
	if err != nil {
		return AuthorityPublicKey{}, fmt.Errorf("parse authority public key: %w", err)
	}
	return AuthorityPublicKey{key: v}, nil
}

// Bytes returns the raw 32-byte public key.
func (p AuthorityPublicKey) Bytes() []byte { return p.key.Bytes() }

// Equal reports whether p and o are the same key.
func (p AuthorityPublicKey) Equal(o AuthorityPublicKey) bool { return p == o }

// KeyID returns the key's id, "s-" and 16 hex digits as for node signing keys.
func (p AuthorityPublicKey) KeyID() string { return p.key.KeyID() }

// Issue signs c as a compact JWT. c.Space names the space; times are
// truncated to seconds.
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
		cl.KEMKeys = append(cl.KEMKeys, kemKeyClaim{ID: k.ID, Suite: k.Suite.String(), Key: base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	for _, k := range c.SigningKeys {
		cl.SigKeys = append(cl.SigKeys, sigKeyClaim{ID: k.ID, Key: base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, cl)
	tok.Header["kid"] = a.Public().KeyID()
	s, err := tok.SignedString(a.sk.priv)
	if err != nil {
		return "", fmt.Errorf("issue credential: %w", err)
	}
	return s, nil
}

// ParseCredential verifies token against the root key for space at time now
// and returns the credential. It accepts only EdDSA, requires iss, aud, exp
// and iat, allows 30 s of clock skew, and checks roles, key sizes and key
// ids. Errors wrap the jwt package's (jwt.ErrTokenExpired, ...).
func ParseCredential(token string, root AuthorityPublicKey, space string, now time.Time) (*Credential, error) {
	if len(token) > maxCredentialSize {
		return nil, errors.New("parse credential: token too large")
	}
	if root.key.IsZero() {
		return nil, errors.New("parse credential: no root key")
	}
	var cl credentialClaims
	_, err := jwt.ParseWithClaims(token, &cl,
		func(*jwt.Token) (any, error) { return ed25519.PublicKey(root.key.Bytes()), nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
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
		b, err := base64.RawURLEncoding.Strict().DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("parse credential: kem key %d: bad base64url", i)
		}
		c.KEMKeys = append(c.KEMKeys, KEMKeyInfo{ID: k.ID, Suite: s, Key: b})
	}
	for i, k := range cl.SigKeys {
		b, err := base64.RawURLEncoding.Strict().DecodeString(k.Key)
		if err != nil {
			return nil, fmt.Errorf("parse credential: signing key %d: bad base64url", i)
		}
		c.SigningKeys = append(c.SigningKeys, SigningKeyInfo{ID: k.ID, Key: b})
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("parse credential: %w", err)
	}
	return c, nil
}
