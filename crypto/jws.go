package crypto

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// SignJWT signs claims as a compact EdDSA JWT whose header names k's key
// id ("kid"): for statements a node hands to people, such as consent
// receipts, which any JOSE library verifies with the node's signing key
// from its credential.
func (k *SigningKey) SignJWT(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = k.Public().KeyID()
	s, err := t.SignedString(k.priv)
	if err != nil {
		return "", fmt.Errorf("sign jwt: %w", err)
	}
	return s, nil
}

// ParseJWT verifies a compact EdDSA JWT signed by v and decodes it into
// claims. Only EdDSA is accepted; iat is required and a 30 s leeway
// applies; now is the time the checks use.
func (v VerifyKey) ParseJWT(token string, claims jwt.Claims, now time.Time) error {
	if v.IsZero() {
		return errors.New("parse jwt: no key")
	}
	pub := ed25519.PublicKey(v.Bytes())
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != v.KeyID() {
			return nil, fmt.Errorf("signed by key %q, not %q", kid, v.KeyID())
		}
		return pub, nil
	}, jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return fmt.Errorf("parse jwt: %w", err)
	}
	return nil
}
