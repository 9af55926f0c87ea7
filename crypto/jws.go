package crypto

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWSAlgSM2 is the JOSE "alg" of JWTs signed with an SM2 node key
// (CREDENTIALS.md §3.2): the SM2 signature of GB/T 32918.2 over the JWS
// signing input, with SM3 and the user id [SM2UserID], as r ‖ s (64
// bytes, base64url). JOSE registers no SM2 algorithm; this name is
// eduspace's.
const JWSAlgSM2 = "SM2"

// signingMethodSM2 is [JWSAlgSM2] for the jwt package: it signs with a
// *SigningKey of algorithm SM2 and verifies with a VerifyKey of it.
type signingMethodSM2 struct{}

func init() {
	jwt.RegisterSigningMethod(JWSAlgSM2, func() jwt.SigningMethod { return signingMethodSM2{} })
}

func (signingMethodSM2) Alg() string { return JWSAlgSM2 }

func (signingMethodSM2) Sign(signingString string, key any) ([]byte, error) {
	k, ok := key.(*SigningKey)
	if !ok || k.Algorithm() != SM2 {
		return nil, fmt.Errorf("%w: %s signs with an SM2 *crypto.SigningKey", jwt.ErrInvalidKeyType, JWSAlgSM2)
	}
	return k.Sign([]byte(signingString)), nil
}

func (signingMethodSM2) Verify(signingString string, sig []byte, key any) error {
	v, ok := key.(VerifyKey)
	if !ok || v.Algorithm() != SM2 {
		return fmt.Errorf("%w: %s verifies with an SM2 crypto.VerifyKey", jwt.ErrInvalidKeyType, JWSAlgSM2)
	}
	if !v.Verify([]byte(signingString), sig) {
		return jwt.ErrSignatureInvalid
	}
	return nil
}

// jwsMethod is the JOSE method of keys of algorithm a: EdDSA or SM2.
func jwsMethod(a SignatureAlgorithm) jwt.SigningMethod {
	if a == SM2 {
		return signingMethodSM2{}
	}
	return jwt.SigningMethodEdDSA
}

// SignJWT signs claims as a compact JWT whose header names k's key id
// ("kid"), with "alg" EdDSA for an Ed25519 key and [JWSAlgSM2] for an SM2
// key: for statements a node hands to people, such as consent receipts,
// which any JOSE library verifies (an SM2 one with the SM2 algorithm added)
// with the node's signing key from its credential.
func (k *SigningKey) SignJWT(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwsMethod(k.Algorithm()), claims)
	t.Header["kid"] = k.Public().KeyID()
	var key any = k.priv
	if k.Algorithm() == SM2 {
		key = k
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	return s, nil
}

// ParseJWT verifies a compact JWT signed by v and decodes it into claims.
// Only v's algorithm is accepted (EdDSA, or [JWSAlgSM2] for an SM2 key);
// iat is required and a 30 s leeway applies; now is the time the checks
// use.
func (v VerifyKey) ParseJWT(token string, claims jwt.Claims, now time.Time) error {
	if v.IsZero() {
		return errors.New("parse jwt: no key")
	}
	method := jwsMethod(v.Algorithm())
	var key any = ed25519.PublicKey(v.Bytes())
	if v.Algorithm() == SM2 {
		key = v
	}
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != v.KeyID() {
			return nil, fmt.Errorf("signed by key %q, not %q", kid, v.KeyID())
		}
		return key, nil
	}, jwt.WithValidMethods([]string{method.Alg()}), jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return fmt.Errorf("parse jwt: %w", err)
	}
	return nil
}
