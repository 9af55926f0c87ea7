package crypto

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzParseEnvelope feeds arbitrary bytes through every entry point. A parsed
// envelope must re-encode to the same header bytes, and nothing may panic.
func FuzzParseEnvelope(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.vec")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		v, err := parseVector(data)
		if err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		f.Add(v.envelope)
	}
	xw := newFixture(f, SuiteXWing)
	x := newFixture(f, SuiteX25519)
	gm := newFixture(f, SuiteSM2)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEnvelope(b)
		if err != nil {
			if e != nil {
				t.Fatal("envelope and error both returned")
			}
			return
		}
		if e.Size() != len(b) {
			t.Fatalf("Size() = %d, want %d", e.Size(), len(b))
		}
		if got := e.Header.appendTo(nil); !bytes.Equal(got, e.header) {
			t.Fatalf("header does not re-encode to the parsed bytes:\ngot  %x\nwant %x", got, e.header)
		}
		for _, fx := range []fixture{xw, x, gm} {
			_ = e.Verify(fx.signer.Public())
			_, _ = e.Open(fx.kem)
		}
	})
}

// FuzzParseVerifyKey feeds arbitrary bytes to ParseVerifyKey and the SM2
// KEM key parser: a key either parses, re-encodes to the same bytes and
// verifies nothing it did not sign, or is refused; nothing panics.
func FuzzParseVerifyKey(f *testing.F) {
	gm := newFixture(f, SuiteSM2)
	x := newFixture(f, SuiteX25519)
	f.Add(gm.signer.Public().Bytes())
	f.Add(x.signer.Public().Bytes())
	f.Add(gm.kem.Public().Bytes())
	f.Add(append([]byte{4}, make([]byte, 64)...))
	msg := []byte("eduspace fuzz")
	sig := gm.signer.Sign(msg)
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := ParseVerifyKey(b); err == nil {
			if !bytes.Equal(v.Bytes(), b) {
				t.Fatalf("Bytes() = %x, want %x", v.Bytes(), b)
			}
			if v != gm.signer.Public() && v.Verify(msg, sig) {
				t.Fatal("another key verified the SM2 signature")
			}
		}
		if p, err := ParseKEMPublicKey(SuiteSM2, b); err == nil && !bytes.Equal(p.Bytes(), b) {
			t.Fatalf("SM2 KEM key re-encodes to %x, want %x", p.Bytes(), b)
		}
		if k, err := ParseSM2SigningKey(b); err == nil {
			if !k.Public().Verify(msg, k.Sign(msg)) {
				t.Fatal("parsed SM2 key does not verify its own signature")
			}
		}
	})
}

// The fuzz targets below verify ML-DSA-65 signatures, which makes minimising
// new inputs slow; run them with -fuzzminimizetime 0, for example
//
//	go test ./crypto -run '^$' -fuzz '^FuzzParseCheckpoint$' -fuzztime 15s -fuzzminimizetime 0

// FuzzParseCredential feeds arbitrary tokens to ParseCredential, and the
// same bytes as a payload that carries a valid EdDSA signature by the root
// key, so that the claims, the key lists and the pq check are reached too.
// Only a payload the authority signed may be accepted.
func FuzzParseCredential(f *testing.F) {
	a, c := testCredential(f)
	k := testCompositeKey(f, "checkpoint")
	withCP := c
	withCP.CheckpointKeys = []CompositeKeyInfo{{ID: k.Public().KeyID(), Key: k.Public().Bytes()}}
	signed := map[string]bool{}
	var header string
	for _, cred := range []Credential{c, withCP} {
		tok, err := a.Issue(cred)
		if err != nil {
			f.Fatal(err)
		}
		parts := strings.Split(tok, ".")
		header = parts[0]
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		signed[withoutPQ(payload)] = true
		f.Add([]byte(tok))
		f.Add(payload)
	}
	f.Add([]byte(`{"iss":"eduspace-authority:city-edu","sub":"uni-a","aud":["eduspace:city-edu"],"exp":1800000000,"iat":1767225600,"pq":""}`))
	now := issued.Add(time.Hour)
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseCredential(string(b), a.Public(), "city-edu", now); err == nil {
			if c.validate() != nil {
				t.Fatal("accepted an invalid credential")
			}
			if _, p, _ := strings.Cut(string(b), "."); true {
				p, _, _ = strings.Cut(p, ".")
				if payload, _ := base64.RawURLEncoding.DecodeString(p); !signed[withoutPQ(payload)] {
					t.Fatalf("accepted a payload the authority did not sign: %s", payload)
				}
			}
		}
		input := header + "." + base64.RawURLEncoding.EncodeToString(b)
		sig, _ := jwt.SigningMethodEdDSA.Sign(input, a.ck.ed)
		tok := input + "." + base64.RawURLEncoding.EncodeToString(sig)
		c, err := ParseCredential(tok, a.Public(), "city-edu", now)
		if err != nil {
			if c != nil {
				t.Fatal("credential and error both returned")
			}
			return
		}
		if !signed[withoutPQ(b)] {
			t.Fatalf("accepted a payload the authority did not sign: %s", b)
		}
		if c.validate() != nil {
			t.Fatal("accepted an invalid credential")
		}
	})
}

// FuzzParseRevocationList decodes arbitrary bytes; whatever decodes must
// re-encode to the same signed bytes, and only the authority's signed lists
// may verify.
func FuzzParseRevocationList(f *testing.F) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	valid := map[string]bool{}
	rl := testRevocationList()
	for _, l := range []RevocationList{rl, {Space: "city-edu", Serial: 1, Issued: issued}} {
		data, err := a.SignRevocations(l)
		if err != nil {
			f.Fatal(err)
		}
		valid[string(data[:len(data)-CompositeSignatureSize])] = true
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rl, signed, _, err := decodeRevocationList(b)
		if err == nil {
			if got := rl.appendTo(nil); !bytes.Equal(got, signed) {
				t.Fatalf("does not re-encode:\ngot  %x\nwant %x", got, signed)
			}
			if rl.validate() != nil {
				t.Fatal("decoded an invalid list")
			}
		}
		l, err := ParseRevocationList(b, a.Public(), "city-edu")
		if err == nil && !valid[string(b[:len(b)-CompositeSignatureSize])] {
			t.Fatalf("accepted a list the authority did not sign: %+v", l)
		}
		if err != nil && l != nil {
			t.Fatal("list and error both returned")
		}
		if err == nil {
			_ = l.Revoked("uni-a", "s-0123456789abcdef", issued)
		}
	})
}

// FuzzParseCheckpoint decodes arbitrary bytes; whatever decodes must
// re-encode to the same signed bytes, and only signed checkpoints verify.
func FuzzParseCheckpoint(f *testing.F) {
	k := testCompositeKey(f, "checkpoint")
	valid := map[string]bool{}
	for _, c := range []Checkpoint{
		{Space: "city-edu", Node: "uni-a", Count: 1000, Head: [32]byte{1, 2, 3}, Time: issued},
		{Space: "s", Node: strings.Repeat("n", 64), Time: time.UnixMilli(0)},
	} {
		data, err := SignCheckpoint(k, c)
		if err != nil {
			f.Fatal(err)
		}
		valid[string(data[:len(data)-CompositeSignatureSize])] = true
		f.Add(data)
	}
	gm, _ := GenerateSigningKeyFor(SM2, detRand("checkpoint sm2"))
	validSM2 := map[string]bool{}
	for _, c := range []Checkpoint{{Space: "city-edu", Node: "uni-a", Count: 1000, Head: [32]byte{1, 2, 3}, Time: issued}} {
		data, err := SignCheckpointSM2(gm, c)
		if err != nil {
			f.Fatal(err)
		}
		validSM2[string(data[:len(data)-sm2SignatureSize])] = true
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if cp, err := ParseCheckpointSM2(b, gm.Public()); err == nil && !validSM2[string(b[:len(b)-sm2SignatureSize])] {
			t.Fatalf("accepted an SM2 checkpoint that was not signed: %+v", cp)
		}
		c, keyID, signed, _, err := parseCheckpoint(b)
		if err == nil {
			if got := c.appendTo(nil, keyID); !bytes.Equal(got, signed) {
				t.Fatalf("does not re-encode:\ngot  %x\nwant %x", got, signed)
			}
			if node, kid, err := CheckpointSigner(b); err != nil || node != c.Node || kid != keyID {
				t.Fatalf("CheckpointSigner = %q, %q, %v", node, kid, err)
			}
		}
		cp, err := ParseCheckpoint(b, k.Public())
		if err == nil && !valid[string(b[:len(b)-CompositeSignatureSize])] {
			t.Fatalf("accepted a checkpoint that was not signed: %+v", cp)
		}
		if err != nil && cp != nil {
			t.Fatal("checkpoint and error both returned")
		}
	})
}

// withoutPQ returns a credential payload without its pq member: ML-DSA-65
// signatures are randomised, so fuzz workers compare what was signed.
func withoutPQ(payload []byte) string {
	i := bytes.LastIndex(payload, []byte(`,"pq":"`))
	if i < 0 {
		return string(payload)
	}
	return string(payload[:i]) + "}"
}

// FuzzParseSpacePolicy parses arbitrary bytes as a space policy: only the
// policies the authority signed are accepted, and what is accepted
// re-encodes to the bytes signed.
func FuzzParseSpacePolicy(f *testing.F) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	valid := map[string]bool{}
	for _, p := range []SpacePolicy{
		{Space: "city-edu", Serial: 1, Issued: issued, MinSuite: SuiteXWing},
		{Space: "city-edu", Serial: 2, Issued: issued, MinSuite: SuiteX25519,
			Linkage: &LinkageEvaluator{Node: "uni-e", Suite: "ristretto255-SHA512", Key: bytes.Repeat([]byte{7}, 32)}},
	} {
		data, err := a.SignSpacePolicy(p)
		if err != nil {
			f.Fatal(err)
		}
		valid[string(data[:len(data)-CompositeSignatureSize])] = true
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseSpacePolicy(b, a.Public(), "city-edu")
		if err != nil {
			if p != nil {
				t.Fatal("policy and error both returned")
			}
			return
		}
		signed := b[:len(b)-CompositeSignatureSize]
		if !valid[string(signed)] {
			t.Fatalf("accepted a policy the authority did not sign: %+v", p)
		}
		if got := p.appendTo(nil); !bytes.Equal(got, signed) {
			t.Fatalf("does not re-encode:\ngot  %x\nwant %x", got, signed)
		}
	})
}
