package crypto

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestSignJWT(t *testing.T) {
	k, _ := GenerateSigningKey(nil)
	other, _ := GenerateSigningKey(nil)
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
