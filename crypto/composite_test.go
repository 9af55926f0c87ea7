package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func testCompositeKey(t testing.TB, label string) *CompositeKey {
	t.Helper()
	k, err := GenerateCompositeKey(detRand(label))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCompositeSignVerify(t *testing.T) {
	k := testCompositeKey(t, "composite")
	other := testCompositeKey(t, "other composite")
	msg := []byte("evidence head")
	sig, err := k.Sign(PurposeCheckpoint, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != CompositeSignatureSize || CompositeSignatureSize != 3373 {
		t.Fatalf("signature of %d bytes, want 3373", len(sig))
	}
	if err := k.Public().Verify(PurposeCheckpoint, msg, sig); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	otherSig, _ := other.Sign(PurposeCheckpoint, msg)

	flip := func(i int) []byte {
		b := bytes.Clone(sig)
		b[i] ^= 1
		return b
	}
	// Each half taken from a valid signature by another key: the other half
	// alone must not be enough.
	edFromOther := append(bytes.Clone(otherSig[:64]), sig[64:]...)
	mlFromOther := append(bytes.Clone(sig[:64]), otherSig[64:]...)
	tests := []struct {
		name    string
		key     CompositeVerifyKey
		purpose string
		msg     []byte
		sig     []byte
	}{
		{"Ed25519 part flipped", k.Public(), PurposeCheckpoint, msg, flip(3)},
		{"ML-DSA part flipped", k.Public(), PurposeCheckpoint, msg, flip(64 + 100)},
		{"last byte flipped", k.Public(), PurposeCheckpoint, msg, flip(len(sig) - 1)},
		{"Ed25519 part by another key", k.Public(), PurposeCheckpoint, msg, edFromOther},
		{"ML-DSA part by another key", k.Public(), PurposeCheckpoint, msg, mlFromOther},
		{"Ed25519 part only", k.Public(), PurposeCheckpoint, msg, sig[:64]},
		{"truncated", k.Public(), PurposeCheckpoint, msg, sig[:len(sig)-1]},
		{"extended", k.Public(), PurposeCheckpoint, msg, append(bytes.Clone(sig), 0)},
		{"other purpose", k.Public(), PurposeRevocationList, msg, sig},
		{"other message", k.Public(), PurposeCheckpoint, []byte("evidence heaD"), sig},
		{"other key", other.Public(), PurposeCheckpoint, msg, sig},
		{"zero key", CompositeVerifyKey{}, PurposeCheckpoint, msg, sig},
	}
	for _, tt := range tests {
		err := tt.key.Verify(tt.purpose, tt.msg, tt.sig)
		if !errors.Is(err, ErrCompositeSignature) {
			t.Errorf("%s: got %v, want ErrCompositeSignature", tt.name, err)
		}
	}
	for _, p := range []string{"", "Checkpoint", "check point", strings.Repeat("a", 65), "a\x00b"} {
		if _, err := k.Sign(p, msg); err == nil {
			t.Errorf("Sign with purpose %q succeeded", p)
		}
		if err := k.Public().Verify(p, msg, sig); err == nil {
			t.Errorf("Verify with purpose %q succeeded", p)
		}
	}
	// The signed message is labelled and length-prefixed, so purposes
	// cannot run into the digest.
	m1, _ := compositeMessage("a", msg)
	m2, _ := compositeMessage("ab", msg)
	if !bytes.HasPrefix(m1, []byte("eduspace composite v1\x00\x01a")) || len(m2) != len(m1)+1 || len(m1) != 21+2+1+64 {
		t.Errorf("composite message layout: %q", m1)
	}
}

func TestCompositeKeyEncoding(t *testing.T) {
	k := testCompositeKey(t, "composite")
	b, err := k.MarshalBinary()
	if err != nil || len(b) != 64 {
		t.Fatalf("MarshalBinary: %d bytes, %v", len(b), err)
	}
	k2, err := ParseCompositeKey(b)
	if err != nil || !k2.Equal(k) || !k2.Public().Equal(k.Public()) {
		t.Fatalf("ParseCompositeKey: %v", err)
	}
	if again := testCompositeKey(t, "composite"); !again.Equal(k) {
		t.Error("same seed gave another key")
	}
	if k.Equal(testCompositeKey(t, "other composite")) {
		t.Error("different keys compare equal")
	}
	for _, n := range []int{0, 32, 63, 65} {
		if _, err := ParseCompositeKey(make([]byte, n)); err == nil {
			t.Errorf("ParseCompositeKey accepted %d bytes", n)
		}
	}

	pub := k.Public()
	raw := pub.Bytes()
	if len(raw) != 1984 {
		t.Fatalf("public key of %d bytes, want 1984", len(raw))
	}
	p2, err := ParseCompositeVerifyKey(raw)
	if err != nil || !p2.Equal(pub) || p2.KeyID() != pub.KeyID() {
		t.Fatalf("ParseCompositeVerifyKey: %v", err)
	}
	if !regexp.MustCompile(`^c-[0-9a-f]{16}$`).MatchString(pub.KeyID()) {
		t.Errorf("KeyID %q", pub.KeyID())
	}
	sig, _ := k.Sign("test", []byte("m"))
	if err := p2.Verify("test", []byte("m"), sig); err != nil {
		t.Errorf("parsed key does not verify: %v", err)
	}
	zeroEd := bytes.Clone(raw)
	clear(zeroEd[:32])
	for name, b := range map[string][]byte{"short": raw[:1983], "long": append(bytes.Clone(raw), 0), "empty": nil, "zero Ed25519": zeroEd} {
		if _, err := ParseCompositeVerifyKey(b); err == nil {
			t.Errorf("ParseCompositeVerifyKey accepted %s", name)
		}
	}
	if !(CompositeVerifyKey{}).IsZero() || pub.IsZero() {
		t.Error("IsZero")
	}
	if pub.Equal(CompositeVerifyKey{}) {
		t.Error("key equals the zero key")
	}
}

// TestRedaction checks that private key types print and log nothing secret.
func TestRedaction(t *testing.T) {
	ck := testCompositeKey(t, "composite")
	ak, err := GenerateAuthorityKey(detRand("authority"))
	if err != nil {
		t.Fatal(err)
	}
	ckSecret, _ := ck.MarshalBinary()
	akSecret, _ := ak.MarshalBinary()
	for _, tc := range []struct {
		name   string
		v      any
		secret []byte
	}{
		{"*CompositeKey", ck, ckSecret},
		{"CompositeKey", *ck, ckSecret},
		{"*AuthorityKey", ak, akSecret},
		{"AuthorityKey", *ak, akSecret},
	} {
		var outs []string
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
			outs = append(outs, fmt.Sprintf(verb, tc.v))
		}
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("key", "k", tc.v)
		slog.New(slog.NewTextHandler(&buf, nil)).Info("key", "k", tc.v)
		outs = append(outs, buf.String())
		for _, out := range outs {
			if !strings.Contains(out, "redacted") {
				t.Errorf("%s printed as %q, want redacted", tc.name, out)
			}
			for _, enc := range []string{fmt.Sprintf("%x", tc.secret[:8]), fmt.Sprintf("%X", tc.secret[:8]), fmt.Sprintf("%x", tc.secret[32:40]), fmt.Sprint(tc.secret[:4])} {
				if strings.Contains(out, enc) || strings.Contains(out, strings.Trim(enc, "[]")) {
					t.Errorf("%s output %q contains secret bytes", tc.name, out)
				}
			}
		}
	}
}

func TestCompositeKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := testCompositeKey(t, "composite")
	p := filepath.Join(dir, "checkpoint.pem")
	if err := WriteCompositeKeyFile(p, k); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	if data, _ := os.ReadFile(p); !bytes.HasPrefix(data, []byte("-----BEGIN EDUSPACE COMPOSITE KEY-----\n")) {
		t.Errorf("key file:\n%s", data)
	}
	got, err := ReadCompositeKeyFile(p)
	if err != nil || !got.Equal(k) {
		t.Fatalf("ReadCompositeKeyFile: %v", err)
	}
	os.Chmod(p, 0o644)
	if _, err := ReadCompositeKeyFile(p); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Errorf("0644 composite key file: %v", err)
	}
	os.Chmod(p, 0o600)
	sp := filepath.Join(dir, "signing.pem")
	sk, _ := GenerateSigningKey(nil)
	WriteSigningKeyFile(sp, sk)
	if _, err := ReadCompositeKeyFile(sp); err == nil {
		t.Error("a signing key file read as a composite key")
	}
}

func BenchmarkComposite(b *testing.B) {
	k := testCompositeKey(b, "composite")
	msg := bytes.Repeat([]byte("m"), 200)
	sig, _ := k.Sign(PurposeCheckpoint, msg)
	pub := k.Public()
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := k.Sign(PurposeCheckpoint, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if err := pub.Verify(PurposeCheckpoint, msg, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse-verify-key", func(b *testing.B) {
		raw := pub.Bytes()
		for b.Loop() {
			if _, err := ParseCompositeVerifyKey(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
