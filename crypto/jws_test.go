package crypto

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestSignJWT(t *testing.T) {
	for _, alg := range []SignatureAlgorithm{Ed25519, SM2} {
		t.Run(alg.String(), func(t *testing.T) { testSignJWT(t, alg) })
	}
}

func testSignJWT(t *testing.T, alg SignatureAlgorithm) {
	k, _ := GenerateSigningKeyFor(alg, nil)
	other, _ := GenerateSigningKeyFor(alg, nil)
	now := time.Now()
	tok, err := k.SignJWT(jwt.RegisteredClaims{Subject: "tk_x", IssuedAt: jwt.NewNumericDate(now)})
	if err != nil {
		t.Fatal(err)
	}
	var got jwt.RegisteredClaims
	if err := k.Public().ParseJWT(tok, &got, now); err != nil || got.Subject != "tk_x" {
		t.Fatalf("round trip: %v, %+v", err, got)
	}
	if err := other.Public().ParseJWT(tok, &got, now); err == nil {
		t.Error("verified with another key")
	}
	parts := strings.Split(tok, ".")
	parts[1] = parts[1][:len(parts[1])-2] + "AA"
	if err := k.Public().ParseJWT(strings.Join(parts, "."), &got, now); err == nil {
		t.Error("tampered payload verified")
	}
	if err := k.Public().ParseJWT(tok, &got, now.Add(-time.Hour)); err == nil {
		t.Error("a token issued in the future verified")
	}
}

// TestSignJWTAlgorithms checks the header's alg and that a token of one
// algorithm never verifies under a key of the other.
func TestSignJWTAlgorithms(t *testing.T) {
	ed, _ := GenerateSigningKeyFor(Ed25519, nil)
	gm, _ := GenerateSigningKeyFor(SM2, nil)
	now := time.Now()
	claims := jwt.RegisteredClaims{Subject: "tk_x", IssuedAt: jwt.NewNumericDate(now)}
	for _, tc := range []struct {
		k     *SigningKey
		alg   string
		other VerifyKey
	}{{ed, "EdDSA", gm.Public()}, {gm, JWSAlgSM2, ed.Public()}} {
		tok, err := tc.k.SignJWT(claims)
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := jwt.NewParser().ParseUnverified(tok, &jwt.RegisteredClaims{})
		if err != nil || p.Header["alg"] != tc.alg {
			t.Errorf("alg %v, %v; want %s", p.Header["alg"], err, tc.alg)
		}
		var got jwt.RegisteredClaims
		if err := tc.other.ParseJWT(tok, &got, now); err == nil {
			t.Errorf("%s token verified under a key of the other algorithm", tc.alg)
		}
	}
}
