package crypto

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var issued = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testCredential(t testing.TB) (*AuthorityKey, Credential) {
	t.Helper()
	a, err := GenerateAuthorityKey(detRand("authority"))
	if err != nil {
		t.Fatal(err)
	}
	xw, x := newFixture(t, SuiteXWing), newFixture(t, SuiteX25519)
	c := Credential{
		Space:       "city-edu",
		NodeID:      "uni-a",
		Institution: "测试大学 Test University",
		Role:        RoleUniversity,
		KEMKeys: []KEMKeyInfo{
			{ID: xw.kem.Public().KeyID(), Suite: SuiteXWing, Key: xw.kem.Public().Bytes()},
			{ID: x.kem.Public().KeyID(), Suite: SuiteX25519, Key: x.kem.Public().Bytes()},
		},
		SigningKeys: []SigningKeyInfo{{ID: xw.signer.Public().KeyID(), Key: xw.signer.Public().Bytes()}},
		IssuedAt:    issued,
		Expires:     issued.Add(90 * 24 * time.Hour),
	}
	return a, c
}

func TestCredentialRoundTrip(t *testing.T) {
	a, c := testCredential(t)
	tok, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCredential(tok, a.Public(), "city-edu", issued.Add(time.Hour))
	if err != nil {
		t.Fatalf("ParseCredential: %v", err)
	}
	if got.NodeID != c.NodeID || got.Institution != c.Institution || got.Role != c.Role || got.Space != c.Space ||
		!got.IssuedAt.Equal(c.IssuedAt) || !got.Expires.Equal(c.Expires) ||
		len(got.KEMKeys) != 2 || len(got.SigningKeys) != 1 {
		t.Fatalf("got %+v\nwant %+v", got, c)
	}
	xw := newFixture(t, SuiteXWing)
	if k := got.CurrentKEMKey(); k == nil || !k.Equal(xw.kem.Public()) {
		t.Errorf("CurrentKEMKey = %v, want %v", k, xw.kem.Public())
	}
	if k, ok := got.KEMKey(c.KEMKeys[1].ID); !ok || k.Suite() != SuiteX25519 {
		t.Errorf("KEMKey(second) = %v, %v", k, ok)
	}
	if _, ok := got.KEMKey("k-0000000000000000"); ok {
		t.Error("KEMKey found an unknown id")
	}
	if v := got.CurrentSigningKey(); v != xw.signer.Public() {
		t.Errorf("CurrentSigningKey = %v", v)
	}
	if v, ok := got.SigningKey(c.SigningKeys[0].ID); !ok || !v.Equal(xw.signer.Public()) {
		t.Errorf("SigningKey = %v, %v", v, ok)
	}
	// Claims on the wire.
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "nbf", "inst", "role", "kem_keys", "sig_keys"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %q missing from %s", k, payload)
		}
	}
	if claims["iss"] != "eduspace-authority:city-edu" || claims["sub"] != "uni-a" {
		t.Errorf("iss, sub = %v, %v", claims["iss"], claims["sub"])
	}
}

// signClaims signs arbitrary claims with the authority key, as a confused or
// compromised issuer might.
func signClaims(t *testing.T, a *AuthorityKey, m jwt.SigningMethod, key any, edit func(*credentialClaims)) string {
	t.Helper()
	_, c := testCredential(t)
	cl := credentialClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: issuer(c.Space), Subject: c.NodeID, Audience: jwt.ClaimStrings{audience(c.Space)},
			ExpiresAt: jwt.NewNumericDate(c.Expires), IssuedAt: jwt.NewNumericDate(c.IssuedAt), NotBefore: jwt.NewNumericDate(c.IssuedAt),
		},
		Institution: c.Institution, Role: c.Role,
	}
	for _, k := range c.KEMKeys {
		cl.KEMKeys = append(cl.KEMKeys, kemKeyClaim{k.ID, k.Suite.String(), base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	for _, k := range c.SigningKeys {
		cl.SigKeys = append(cl.SigKeys, sigKeyClaim{k.ID, base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	edit(&cl)
	if key == nil && m == jwt.SigningMethodEdDSA {
		// As Issue signs: ML-DSA-65 in the pq claim, then EdDSA.
		tok, err := a.signClaims(cl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if key == nil {
		key = a.ck.ed
	}
	tok, err := jwt.NewWithClaims(m, cl).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestCredentialRefused(t *testing.T) {
	a, c := testCredential(t)
	good, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateAuthorityKey(detRand("other authority"))
	otherTok, _ := other.Issue(c)
	now := issued.Add(time.Hour)
	parts := strings.Split(good, ".")
	tampered := func(from, to string) string {
		p, _ := base64.RawURLEncoding.DecodeString(parts[1])
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(p), from, to, 1))) + "." + parts[2]
	}
	edEd := jwt.SigningMethodEdDSA
	tests := []struct {
		name  string
		token string
		space string
		now   time.Time
		want  error // nil: any error
	}{
		{"expired", good, "city-edu", c.Expires.Add(31 * time.Second), jwt.ErrTokenExpired},
		{"before issue", good, "city-edu", issued.Add(-time.Minute), nil},
		{"other space", good, "other-space", now, jwt.ErrTokenInvalidIssuer},
		{"signed by another authority", otherTok, "city-edu", now, jwt.ErrTokenSignatureInvalid},
		{"tampered role", tampered(`"university"`, `"center"`), "city-edu", now, jwt.ErrTokenSignatureInvalid},
		{"tampered subject", tampered(`"uni-a"`, `"uni-b"`), "city-edu", now, jwt.ErrTokenSignatureInvalid},
		{"wrong issuer", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.Issuer = "eduspace-authority:other" }), "city-edu", now, jwt.ErrTokenInvalidIssuer},
		{"wrong audience", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.Audience = jwt.ClaimStrings{"eduspace:other"} }), "city-edu", now, jwt.ErrTokenInvalidAudience},
		{"no expiry", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.ExpiresAt = nil }), "city-edu", now, jwt.ErrTokenRequiredClaimMissing},
		{"no issue time", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.IssuedAt = nil }), "city-edu", now, nil},
		{"alg none", signClaims(t, a, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, func(*credentialClaims) {}), "city-edu", now, jwt.ErrTokenSignatureInvalid},
		{"alg HS256 keyed with the root public key", signClaims(t, a, jwt.SigningMethodHS256, a.Public().Bytes(), func(*credentialClaims) {}), "city-edu", now, jwt.ErrTokenSignatureInvalid},
		{"unknown role", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.Role = "admin" }), "city-edu", now, nil},
		{"short kem key", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.KEMKeys[0].Key = c.KEMKeys[0].Key[:100] }), "city-edu", now, nil},
		{"short signing key", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.SigKeys[0].Key = c.SigKeys[0].Key[:20] }), "city-edu", now, nil},
		{"key id of another key", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.SigKeys[0].ID = "s-0000000000000000" }), "city-edu", now, nil},
		{"unknown suite", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.KEMKeys[0].Suite = "rsa" }), "city-edu", now, ErrSuite},
		{"no kem keys", signClaims(t, a, edEd, nil, func(c *credentialClaims) { c.KEMKeys = nil }), "city-edu", now, nil},
		{"garbage", "not.a.jwt", "city-edu", now, jwt.ErrTokenMalformed},
		{"huge", strings.Repeat("a", 70000), "city-edu", now, nil},
	}
	for _, tt := range tests {
		_, err := ParseCredential(tt.token, a.Public(), tt.space, tt.now)
		t.Logf("%s: %v", tt.name, err)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// Inside the 30 s leeway.
	if _, err := ParseCredential(good, a.Public(), "city-edu", c.Expires.Add(29*time.Second)); err != nil {
		t.Errorf("29 s after expiry: %v", err)
	}
	if _, err := ParseCredential(good, AuthorityPublicKey{}, "city-edu", now); err == nil {
		t.Error("zero root key accepted")
	}
}

func TestIssueValidates(t *testing.T) {
	a, base := testCredential(t)
	tests := []struct {
		name string
		f    func(*Credential)
	}{
		{"no space", func(c *Credential) { c.Space = "" }},
		{"dotted node id", func(c *Credential) { c.NodeID = "uni.a" }},
		{"unknown role", func(c *Credential) { c.Role = "root" }},
		{"no institution", func(c *Credential) { c.Institution = "" }},
		{"no signing keys", func(c *Credential) { c.SigningKeys = nil }},
		{"wrong kem key id", func(c *Credential) { c.KEMKeys[0].ID = "k-1" }},
		{"kem key of the wrong suite", func(c *Credential) { c.KEMKeys[1].Suite = SuiteXWing }},
		{"expires before issue", func(c *Credential) { c.Expires = c.IssuedAt.Add(-time.Second) }},
		{"no issue time", func(c *Credential) { c.IssuedAt = time.Time{} }},
	}
	for _, tt := range tests {
		c := base
		c.KEMKeys = append([]KEMKeyInfo(nil), base.KEMKeys...)
		tt.f(&c)
		if _, err := a.Issue(c); err == nil {
			t.Errorf("%s: Issue succeeded", tt.name)
		}
	}
}

func TestAuthorityKeyEncoding(t *testing.T) {
	a, _ := GenerateAuthorityKey(nil)
	b, _ := a.MarshalBinary()
	a2, err := ParseAuthorityKey(b)
	if err != nil || !a2.Public().Equal(a.Public()) || !a2.Equal(a) {
		t.Fatalf("ParseAuthorityKey: %v", err)
	}
	p, err := ParseAuthorityPublicKey(a.Public().Bytes())
	if err != nil || !p.Equal(a.Public()) {
		t.Fatalf("ParseAuthorityPublicKey: %v", err)
	}
	if !p.Ed25519().Equal(a.ck.ed.Public()) {
		t.Error("public key bytes differ")
	}
}
