package crypto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// resignCredential replaces a token's payload and signs it with EdDSA again, as a
// holder of the Ed25519 root key alone (say, after a quantum attack) could.
func resignCredential(t *testing.T, tok string, payload []byte, key ed25519.PrivateKey) string {
	t.Helper()
	header, _, _ := strings.Cut(tok, ".")
	input := header + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := jwt.SigningMethodEdDSA.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func tokenPayload(t *testing.T, tok string) []byte {
	t.Helper()
	p, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCredentialPQClaim(t *testing.T) {
	a, c := testCredential(t)
	other, _ := GenerateAuthorityKey(detRand("other authority"))
	good, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	now := issued.Add(time.Hour)
	if _, err := ParseCredential(good, a.Public(), "city-edu", now); err != nil {
		t.Fatalf("ParseCredential: %v", err)
	}
	payload := tokenPayload(t, good)
	var claims struct {
		PQ string `json:"pq"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	pqSig, err := base64.RawURLEncoding.DecodeString(claims.PQ)
	if err != nil || len(pqSig) != 3309 {
		t.Fatalf("pq claim: %d bytes, %v", len(pqSig), err)
	}
	if !bytes.HasSuffix(payload, []byte(`,"pq":"`+claims.PQ+`"}`)) {
		t.Errorf("pq is not the last member: %s", payload)
	}
	if h, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[0]); !bytes.Contains(h, []byte(`"kid":"`+a.Public().KeyID()+`"`)) {
		t.Errorf("header %s does not name the root key id", h)
	}

	c2 := c
	c2.NodeID = "uni-b"
	good2, _ := a.Issue(c2)
	var claims2 struct {
		PQ string `json:"pq"`
	}
	json.Unmarshal(tokenPayload(t, good2), &claims2)

	edOnly := signClaims(t, a, jwt.SigningMethodEdDSA, a.ck.ed, func(*credentialClaims) {}) // plain EdDSA JWT, no pq
	repl := "A"
	if claims.PQ[39] == 'A' {
		repl = "B"
	}
	pqFlipped := []byte(strings.Replace(string(payload), claims.PQ, claims.PQ[:39]+repl+claims.PQ[40:], 1))
	pqSwapped := []byte(strings.Replace(string(payload), claims.PQ, claims2.PQ, 1))
	notLast := append(bytes.Clone(payload[:len(payload)-1]), `,"x":1}`...)
	spaced := append(bytes.Clone(payload[:len(payload)-1]), " }"...)
	escaped := []byte(strings.Replace(string(payload), `"pq":"`+claims.PQ[:1], `"pq":"\u00`+strings.ToLower(hexByte(claims.PQ[0])), 1))
	dup := append(bytes.Clone(payload[:len(payload)-len(claims.PQ)-9]), `,"pq":"`+claims2.PQ+`","pq":"`+claims.PQ+`"}`...)

	// Keys that hold one half of the root key and another key's other half.
	mlOther := &AuthorityKey{ck: CompositeKey{ed: a.ck.ed, ml: other.ck.ml, pub: a.ck.pub}}
	edOther := &AuthorityKey{ck: CompositeKey{ed: other.ck.ed, ml: a.ck.ml, pub: a.ck.pub}}
	byMLOther, err := mlOther.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	byEdOther, _ := edOther.Issue(c)

	tests := []struct {
		name, token string
		want        error
	}{
		{"EdDSA only, no pq claim", edOnly, ErrCompositeSignature},
		{"pq signature altered", resignCredential(t, good, pqFlipped, a.ck.ed), ErrCompositeSignature},
		{"pq of another credential", resignCredential(t, good, pqSwapped, a.ck.ed), ErrCompositeSignature},
		{"pq not the last member", resignCredential(t, good, notLast, a.ck.ed), ErrCompositeSignature},
		{"space before the closing brace", resignCredential(t, good, spaced, a.ck.ed), ErrCompositeSignature},
		{"pq with a JSON escape", resignCredential(t, good, escaped, a.ck.ed), ErrCompositeSignature},
		{"pq member twice", resignCredential(t, good, dup, a.ck.ed), ErrCompositeSignature},
		{"pq by another authority's ML-DSA key", byMLOther, ErrCompositeSignature},
		{"EdDSA by another authority's Ed25519 key", byEdOther, jwt.ErrTokenSignatureInvalid},
	}
	for _, tt := range tests {
		_, err := ParseCredential(tt.token, a.Public(), "city-edu", now)
		t.Logf("%s: %v", tt.name, err)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	// The edits above keep the JSON valid: with only the EdDSA check, each
	// re-signed token would have been accepted.
	for _, p := range [][]byte{pqFlipped, pqSwapped, notLast, spaced, escaped, dup} {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Errorf("edited payload is not JSON: %v\n%s", err, p)
		}
	}
}

func hexByte(c byte) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[c>>4], digits[c&15]})
}

// TestCredentialStandardJOSE checks that a JOSE library that knows nothing
// of the pq claim accepts a credential with the Ed25519 root key alone.
func TestCredentialStandardJOSE(t *testing.T) {
	a, c := testCredential(t)
	tok, _ := a.Issue(c)
	var claims jwt.MapClaims
	_, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return a.Public().Ed25519(), nil },
		jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(func() time.Time { return issued.Add(time.Hour) }))
	if err != nil {
		t.Fatalf("standard parse: %v", err)
	}
	if claims["sub"] != "uni-a" || claims["pq"] == nil {
		t.Errorf("claims %v", claims)
	}
}

// TestCredentialOpenSSL has an independent implementation, the openssl CLI,
// verify a credential's EdDSA signature with authority.pub.pem (two PEM
// blocks; openssl reads the first).
func TestCredentialOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: cannot check the credential with an independent implementation")
	}
	a, c := testCredential(t)
	tok, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub := filepath.Join(dir, "authority.pub.pem")
	if err := WriteAuthorityPublicKey(pub, a.Public()); err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	input, sigFile := filepath.Join(dir, "input"), filepath.Join(dir, "sig")
	os.WriteFile(sigFile, sig, 0o600)
	verify := func(in string) ([]byte, error) {
		os.WriteFile(input, []byte(in), 0o600)
		return exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", input, "-sigfile", sigFile).CombinedOutput()
	}
	out, err := verify(parts[0] + "." + parts[1])
	if err != nil || !bytes.Contains(out, []byte("Signature Verified Successfully")) {
		t.Fatalf("openssl refused the credential: %v\n%s", err, out)
	}
	tampered := []byte(parts[1])
	tampered[10] ^= 1
	if out, err := verify(parts[0] + "." + string(tampered)); err == nil {
		t.Errorf("openssl accepted a tampered credential:\n%s", out)
	}
	// openssl reads the first block of the two-block file as the Ed25519 key.
	out, err = exec.Command(openssl, "pkey", "-pubin", "-in", pub, "-outform", "DER").Output()
	if err != nil || len(out) != 44 || !bytes.Equal(out[12:], a.Public().Ed25519()) {
		t.Errorf("openssl pkey read %x, %v; want the Ed25519 key", out, err)
	}
}

func TestCredentialCheckpointKeys(t *testing.T) {
	a, c := testCredential(t)
	k1, k2 := testCompositeKey(t, "checkpoint 1"), testCompositeKey(t, "checkpoint 2")
	c.CheckpointKeys = []CompositeKeyInfo{
		{ID: k1.Public().KeyID(), Key: k1.Public().Bytes()},
		{ID: k2.Public().KeyID(), Key: k2.Public().Bytes()},
	}
	tok, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > maxCredentialSize/2 {
		t.Errorf("credential of %d bytes", len(tok))
	}
	got, err := ParseCredential(tok, a.Public(), "city-edu", issued.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.CheckpointKeys) != 2 || !got.CurrentCheckpointKey().Equal(k1.Public()) {
		t.Fatalf("checkpoint keys %v, current %v", got.CheckpointKeys, got.CurrentCheckpointKey())
	}
	if v, ok := got.CheckpointKey(k2.Public().KeyID()); !ok || !v.Equal(k2.Public()) {
		t.Errorf("CheckpointKey(second) = %v, %v", v, ok)
	}
	if _, ok := got.CheckpointKey(c.SigningKeys[0].ID); ok {
		t.Error("CheckpointKey found a signing key")
	}
	if !strings.Contains(string(tokenPayload(t, tok)), `"ckpt_keys":[{"kid":"`+k1.Public().KeyID()+`"`) {
		t.Error("no ckpt_keys claim")
	}

	// Optional: a credential without checkpoint keys parses, with none.
	_, c0 := testCredential(t)
	tok0, _ := a.Issue(c0)
	got0, err := ParseCredential(tok0, a.Public(), "city-edu", issued.Add(time.Hour))
	if err != nil || len(got0.CheckpointKeys) != 0 || !got0.CurrentCheckpointKey().IsZero() {
		t.Errorf("no checkpoint keys: %v, %v", got0, err)
	}
	if strings.Contains(string(tokenPayload(t, tok0)), "ckpt_keys") {
		t.Error("empty ckpt_keys claim written")
	}

	bad := []struct {
		name string
		f    func(*Credential)
	}{
		{"wrong id", func(c *Credential) { c.CheckpointKeys[0].ID = k2.Public().KeyID() }},
		{"short key", func(c *Credential) { c.CheckpointKeys[0].Key = c.CheckpointKeys[0].Key[:1000] }},
		{"repeated", func(c *Credential) { c.CheckpointKeys[1] = c.CheckpointKeys[0] }},
		{"nine keys", func(c *Credential) {
			for len(c.CheckpointKeys) < 9 {
				k := testCompositeKey(t, "more "+string(rune('a'+len(c.CheckpointKeys))))
				c.CheckpointKeys = append(c.CheckpointKeys, CompositeKeyInfo{ID: k.Public().KeyID(), Key: k.Public().Bytes()})
			}
		}},
	}
	for _, tt := range bad {
		cc := c
		cc.CheckpointKeys = append([]CompositeKeyInfo(nil), c.CheckpointKeys...)
		tt.f(&cc)
		if _, err := a.Issue(cc); err == nil {
			t.Errorf("%s: Issue succeeded", tt.name)
		}
		// The parser checks the same, whatever an issuer signed.
		tok := signClaims(t, a, jwt.SigningMethodEdDSA, nil, func(cl *credentialClaims) {
			cl.CkptKeys = nil
			for _, k := range cc.CheckpointKeys {
				cl.CkptKeys = append(cl.CkptKeys, sigKeyClaim{k.ID, base64.RawURLEncoding.EncodeToString(k.Key)})
			}
		})
		if _, err := ParseCredential(tok, a.Public(), "city-edu", issued.Add(time.Hour)); err == nil || errors.Is(err, ErrCompositeSignature) {
			t.Errorf("%s: ParseCredential: %v", tt.name, err)
		}
	}
}

// TestCredentialRotation follows a node through a key rotation
// (CREDENTIALS.md §5): envelopes sealed to and signed by the old keys still
// open and verify with the credential that lists [next, old]; new envelopes
// go to the new current key.
func TestCredentialRotation(t *testing.T) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	kemOld, _ := GenerateKEMKey(SuiteXWing, detRand("kem old"))
	kemNext, _ := GenerateKEMKey(SuiteXWing, detRand("kem next"))
	sigOld, _ := GenerateSigningKey(detRand("sig old"))
	sigNext, _ := GenerateSigningKey(detRand("sig next"))
	cpOld, cpNext := testCompositeKey(t, "cp old"), testCompositeKey(t, "cp next")
	kemInfo := func(k *KEMPrivateKey) KEMKeyInfo {
		return KEMKeyInfo{ID: k.Public().KeyID(), Suite: k.Suite(), Key: k.Public().Bytes()}
	}
	sigInfo := func(k *SigningKey) SigningKeyInfo {
		return SigningKeyInfo{ID: k.Public().KeyID(), Key: k.Public().Bytes()}
	}
	cpInfo := func(k *CompositeKey) CompositeKeyInfo {
		return CompositeKeyInfo{ID: k.Public().KeyID(), Key: k.Public().Bytes()}
	}
	issue := func(at time.Time, kems []*KEMPrivateKey, sigs []*SigningKey, cps []*CompositeKey) *Credential {
		t.Helper()
		c := Credential{Space: "city-edu", NodeID: "uni-b", Institution: "B", Role: RoleUniversity,
			IssuedAt: at, Expires: at.Add(90 * 24 * time.Hour)}
		for _, k := range kems {
			c.KEMKeys = append(c.KEMKeys, kemInfo(k))
		}
		for _, k := range sigs {
			c.SigningKeys = append(c.SigningKeys, sigInfo(k))
		}
		for _, k := range cps {
			c.CheckpointKeys = append(c.CheckpointKeys, cpInfo(k))
		}
		tok, err := a.Issue(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseCredential(tok, a.Public(), "city-edu", at)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Step 1: the next keys are announced behind the current ones.
	c1 := issue(issued, []*KEMPrivateKey{kemOld, kemNext}, []*SigningKey{sigOld, sigNext}, []*CompositeKey{cpOld, cpNext})
	if !c1.CurrentKEMKey().Equal(kemOld.Public()) || c1.CurrentSigningKey() != sigOld.Public() || !c1.CurrentCheckpointKey().Equal(cpOld.Public()) {
		t.Fatal("step 1: current keys are not the old ones")
	}
	// A peer seals to the current key; the node signs with its current key.
	h := newFixture(t, SuiteXWing).header()
	h.Sender, h.Recipient = "uni-b", "uni-b"
	h.RecipientKeyID, h.SenderKeyID = c1.CurrentKEMKey().KeyID(), c1.CurrentSigningKey().KeyID()
	oldEnv, err := Seal(detRand("old"), h, c1.CurrentKEMKey(), sigOld, testPayload)
	if err != nil {
		t.Fatal(err)
	}
	oldCP, _ := SignCheckpoint(cpOld, Checkpoint{Space: "city-edu", Node: "uni-b", Count: 1, Time: issued})

	// Step 2: the node switches: [next, old].
	c2 := issue(issued.Add(time.Hour), []*KEMPrivateKey{kemNext, kemOld}, []*SigningKey{sigNext, sigOld}, []*CompositeKey{cpNext, cpOld})
	if !c2.CurrentKEMKey().Equal(kemNext.Public()) || c2.CurrentSigningKey() != sigNext.Public() || !c2.CurrentCheckpointKey().Equal(cpNext.Public()) {
		t.Fatal("step 2: current keys are not the next ones")
	}
	ring := map[string]*KEMPrivateKey{kemOld.Public().KeyID(): kemOld, kemNext.Public().KeyID(): kemNext}
	receive := func(env []byte, cred *Credential) ([]byte, error) {
		e, err := ParseEnvelope(env)
		if err != nil {
			return nil, err
		}
		vk, ok := cred.SigningKey(e.Header.SenderKeyID)
		if !ok {
			return nil, errors.New("unknown sender key")
		}
		if err := e.Verify(vk); err != nil {
			return nil, err
		}
		if _, ok := cred.KEMKey(e.Header.RecipientKeyID); !ok {
			return nil, errors.New("recipient key not in credential")
		}
		priv, ok := ring[e.Header.RecipientKeyID]
		if !ok {
			return nil, errors.New("no private key")
		}
		return e.Open(priv)
	}
	if pt, err := receive(oldEnv, c2); err != nil || !bytes.Equal(pt, testPayload) {
		t.Errorf("old envelope after rotation: %v", err)
	}
	h.RecipientKeyID, h.SenderKeyID = c2.CurrentKEMKey().KeyID(), c2.CurrentSigningKey().KeyID()
	newEnv, err := Seal(detRand("new"), h, c2.CurrentKEMKey(), sigNext, testPayload)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := receive(newEnv, c2); err != nil || !bytes.Equal(pt, testPayload) {
		t.Errorf("new envelope: %v", err)
	}
	if e, _ := ParseEnvelope(newEnv); e != nil {
		if _, err := e.Open(kemOld); !errors.Is(err, ErrDecrypt) {
			t.Errorf("new envelope opened with the old key: %v", err)
		}
	}
	_, cpKeyID, _ := CheckpointSigner(oldCP)
	if vk, ok := c2.CheckpointKey(cpKeyID); !ok {
		t.Error("old checkpoint key gone from the rotated credential")
	} else if _, err := ParseCheckpoint(oldCP, vk); err != nil {
		t.Errorf("old checkpoint after rotation: %v", err)
	}

	// Step 3: the old keys expire and leave the credential; old envelopes
	// are refused.
	c3 := issue(issued.Add(48*time.Hour), []*KEMPrivateKey{kemNext}, []*SigningKey{sigNext}, []*CompositeKey{cpNext})
	if _, err := receive(oldEnv, c3); err == nil {
		t.Error("old envelope accepted after the old keys were dropped")
	}
	if _, ok := c3.CheckpointKey(cpKeyID); ok {
		t.Error("dropped checkpoint key still found")
	}
}

func BenchmarkCredential(b *testing.B) {
	a, c := testCredential(b)
	k := testCompositeKey(b, "checkpoint")
	c.CheckpointKeys = []CompositeKeyInfo{{ID: k.Public().KeyID(), Key: k.Public().Bytes()}}
	tok, err := a.Issue(c)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("issue", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.Issue(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseCredential(tok, a.Public(), "city-edu", issued.Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(len(tok)), "token-bytes")
}
