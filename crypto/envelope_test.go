package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// detRand returns a deterministic randomness source named by label.
func detRand(label string) io.Reader {
	var seed [32]byte
	copy(seed[:], label)
	return rand.NewChaCha8(seed)
}

type fixture struct {
	suite  SuiteID
	kem    *KEMPrivateKey
	signer *SigningKey
}

func newFixture(t testing.TB, s SuiteID) fixture {
	t.Helper()
	k, err := GenerateKEMKey(s, detRand("recipient "+s.String()))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := GenerateSigningKeyFor(s.SignatureAlgorithm(), detRand("sender"))
	if err != nil {
		t.Fatal(err)
	}
	return fixture{s, k, sk}
}

func (f fixture) header() Header {
	created := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	return Header{
		Suite:          f.suite,
		Sender:         "uni-a",
		SenderKeyID:    f.signer.Public().KeyID(),
		Recipient:      "uni-b",
		RecipientKeyID: f.kem.Public().KeyID(),
		ID:             [16]byte{0: 0xed, 1: 0x5e, 15: 1},
		Seq:            7,
		Created:        created,
		Expires:        created.Add(24 * time.Hour),
		Agreement:      "agr-2026-001",
		Purpose:        "academic_records",
		RecordType:     "student",
		Count:          3,
		Level:          "L3",
		Kind:           KindRecords,
	}
}

// headerV2 is header with a legal basis and a standard: a version 2
// header.
func (f fixture) headerV2() Header {
	h := f.header()
	h.LegalBasis, h.Standard = "contract", "EDU-CN-DEFAULT/1"
	return h
}

func (f fixture) seal(t testing.TB, h Header, pt []byte) []byte {
	t.Helper()
	b, err := Seal(detRand("seal"), h, f.kem.Public(), f.signer, pt)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return b
}

var suites = []SuiteID{SuiteXWing, SuiteX25519, SuiteSM2}

var testPayload = []byte(`{"student_id":"S1","name":"Test One"}` + "\n" + `{"student_id":"S2","name":"Test Two"}` + "\n")

// receive runs the receiver's steps and returns the plaintext or the first error.
func receive(b []byte, from VerifyKey, priv *KEMPrivateKey) ([]byte, error) {
	e, err := ParseEnvelope(b)
	if err != nil {
		return nil, err
	}
	if err := e.Verify(from); err != nil {
		return nil, err
	}
	return e.Open(priv)
}

// resign replaces the signature of b with a valid one by signer.
func resign(b []byte, signer *SigningKey) []byte {
	out := bytes.Clone(b)
	copy(out[len(out)-sigSize:], signer.Sign(sigDigest(out[:len(out)-sigSize])))
	return out
}

func TestSealOpenRoundTrip(t *testing.T) {
	for _, s := range suites {
		for _, v := range []struct {
			name    string
			header  func(fixture) Header
			version byte
		}{{"v1", fixture.header, 1}, {"v2", fixture.headerV2, 2}} {
			t.Run(s.String()+"/"+v.name, func(t *testing.T) { testRoundTrip(t, newFixture(t, s), v.header, v.version) })
		}
	}
}

func testRoundTrip(t *testing.T, f fixture, header func(fixture) Header, version byte) {
	h := header(f)
	h.Created = h.Created.Add(123456 * time.Nanosecond) // sub-millisecond part is dropped
	b := f.seal(t, h, testPayload)
	if b[4] != version {
		t.Errorf("version byte %d, want %d", b[4], version)
	}
	e, err := ParseEnvelope(b)
	if err != nil {
		t.Fatalf("ParseEnvelope: %v", err)
	}
	want := header(f)
	if !e.Header.Created.Equal(want.Created) || !e.Header.Expires.Equal(want.Expires) {
		t.Errorf("times: got %v %v, want %v %v", e.Header.Created, e.Header.Expires, want.Created, want.Expires)
	}
	e.Header.Created, e.Header.Expires = want.Created, want.Expires
	if e.Header != want {
		t.Errorf("header:\ngot  %+v\nwant %+v", e.Header, want)
	}
	if e.Size() != len(b) {
		t.Errorf("Size() = %d, want %d", e.Size(), len(b))
	}
	if err := e.Verify(f.signer.Public()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	pt, err := e.Open(f.kem)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(pt, testPayload) {
		t.Errorf("Open: got %q, want %q", pt, testPayload)
	}
	if got := e.Header.IDString(); got != "ed5e0000000000000000000000000001" {
		t.Errorf("IDString() = %q", got)
	}
	// Empty payload.
	h.Kind, h.Count = KindReceipt, 0
	if _, err := receive(f.seal(t, h, nil), f.signer.Public(), f.kem); err != nil {
		t.Errorf("empty payload: %v", err)
	}
}

// headerMutations change one header field each, keeping the header valid.
var headerMutations = []struct {
	field string
	f     func(*Header)
}{
	{"Suite", nil}, // handled by byte flips only: another suite changes the enc size
	{"Sender", func(h *Header) { h.Sender = "uni-c" }},
	{"SenderKeyID", func(h *Header) { h.SenderKeyID = "s-0000000000000000" }},
	{"Recipient", func(h *Header) { h.Recipient = "uni-x" }},
	{"RecipientKeyID", func(h *Header) { h.RecipientKeyID = "k-0000000000000000" }},
	{"ID", func(h *Header) { h.ID[3] ^= 1 }},
	{"Seq", func(h *Header) { h.Seq++ }},
	{"Created", func(h *Header) { h.Created = h.Created.Add(-time.Millisecond) }},
	{"Expires", func(h *Header) { h.Expires = h.Expires.Add(time.Hour) }},
	{"Agreement", func(h *Header) { h.Agreement = "agr-2026-002" }},
	{"Purpose", func(h *Header) { h.Purpose = "research" }},
	{"RecordType", func(h *Header) { h.RecordType = "grade" }},
	{"Count", func(h *Header) { h.Count = 4 }},
	{"Level", func(h *Header) { h.Level = "L1" }},
	{"Kind", func(h *Header) { h.Kind = KindErasureRequest }},
	{"LegalBasis", func(h *Header) { h.LegalBasis = "consent" }},
	{"Standard", func(h *Header) { h.Standard = "EDU-CN-DEFAULT/2" }},
}

// TestHeaderTampering: every header field altered is refused by the
// signature and, when the attacker could re-sign, by the AEAD.
func TestHeaderTampering(t *testing.T) {
	for _, s := range suites {
		f := newFixture(t, s)
		testHeaderTampering(t, f, s.String()+"/v1", f.header())
		testHeaderTampering(t, f, s.String()+"/v2", f.headerV2())
	}
}

// testHeaderTampering alters each field of an envelope sealed under base.
// A mutation may change the header's version (v1 to v2 or back): that too
// is refused.
func testHeaderTampering(t *testing.T, f fixture, name string, base Header) {
	orig := f.seal(t, base, testPayload)
	e, err := ParseEnvelope(orig)
	if err != nil {
		t.Fatal(err)
	}
	body := orig[len(e.header):]
	for _, m := range headerMutations {
		if m.f == nil {
			continue
		}
		t.Run(name+"/"+m.field, func(t *testing.T) {
			h := base
			m.f(&h)
			if h == base {
				t.Fatal("mutation changed nothing")
			}
			tampered := append(h.appendTo(nil), body...)
			_, err := receive(tampered, f.signer.Public(), f.kem)
			if !errors.Is(err, ErrSignature) {
				t.Errorf("altered %s: got %v, want ErrSignature", m.field, err)
			}
			// Even with a valid signature (a sender attacking its own
			// envelope after sealing), the AEAD refuses the header.
			e, err := ParseEnvelope(resign(tampered, f.signer))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Open(f.kem); !errors.Is(err, ErrDecrypt) {
				t.Errorf("altered and re-signed %s: got %v, want ErrDecrypt", m.field, err)
			}
		})
	}
	// Every single-bit flip anywhere in the envelope is refused.
	t.Run(name+"/bitflips", func(t *testing.T) {
		for i := range len(orig) {
			for _, bit := range []byte{0x01, 0x80} {
				b := bytes.Clone(orig)
				b[i] ^= bit
				if _, err := receive(b, f.signer.Public(), f.kem); err == nil {
					t.Fatalf("flip of bit %#x at offset %d accepted", bit, i)
				}
			}
		}
	})
}

func TestCiphertextTampering(t *testing.T) {
	for _, s := range suites {
		t.Run(s.String(), func(t *testing.T) {
			f := newFixture(t, s)
			orig := f.seal(t, f.header(), testPayload)
			e, _ := ParseEnvelope(orig)
			encOff := len(e.header) + 2
			ctOff := encOff + len(e.enc) + 4
			for name, off := range map[string]int{"enc": encOff + 5, "ct": ctOff + 3, "tag": len(orig) - sigSize - 1, "sig": len(orig) - 1} {
				b := bytes.Clone(orig)
				b[off] ^= 0x10
				if _, err := receive(b, f.signer.Public(), f.kem); !errors.Is(err, ErrSignature) {
					t.Errorf("%s flipped: got %v, want ErrSignature", name, err)
				}
				if name == "sig" {
					continue
				}
				if _, err := receive(resign(b, f.signer), f.signer.Public(), f.kem); !errors.Is(err, ErrDecrypt) {
					t.Errorf("%s flipped and re-signed: got %v, want ErrDecrypt", name, err)
				}
			}
		})
	}
}

func TestTruncationAndExtension(t *testing.T) {
	for _, s := range suites {
		t.Run(s.String(), func(t *testing.T) {
			f := newFixture(t, s)
			testTruncation(t, f.seal(t, f.header(), testPayload))
			testTruncation(t, f.seal(t, f.headerV2(), testPayload))
		})
	}
}

func testTruncation(t *testing.T, orig []byte) {
	for n := range len(orig) {
		if _, err := ParseEnvelope(orig[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d of %d bytes: got %v, want ErrMalformed", n, len(orig), err)
		}
	}
	if _, err := ParseEnvelope(append(bytes.Clone(orig), 0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("one trailing byte: got %v, want ErrMalformed", err)
	}
}

func TestWrongKeys(t *testing.T) {
	for _, s := range suites {
		t.Run(s.String(), func(t *testing.T) {
			f := newFixture(t, s)
			b := f.seal(t, f.header(), testPayload)
			e, err := ParseEnvelope(b)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := GenerateKEMKey(s, detRand("other recipient"))
			if _, err := e.Open(other); !errors.Is(err, ErrDecrypt) {
				t.Errorf("wrong recipient key: got %v, want ErrDecrypt", err)
			}
			otherSuite := SuiteX25519
			if s == SuiteX25519 {
				otherSuite = SuiteXWing
			}
			ok, _ := GenerateKEMKey(otherSuite, nil)
			if _, err := e.Open(ok); !errors.Is(err, ErrSuite) {
				t.Errorf("key of suite %s: got %v, want ErrSuite", otherSuite, err)
			}
			h := f.header()
			h.Suite = otherSuite
			if _, err := Seal(nil, h, f.kem.Public(), f.signer, nil); !errors.Is(err, ErrSuite) {
				t.Errorf("Seal with header suite %s: got %v, want ErrSuite", otherSuite, err)
			}

			otherSigner, _ := GenerateSigningKey(detRand("other sender"))
			if err := e.Verify(otherSigner.Public()); !errors.Is(err, ErrSignature) {
				t.Errorf("verify with another key: got %v, want ErrSignature", err)
			}
			// Another key signs, claiming to be the sender's key id.
			if err := mustParse(t, resign(b, otherSigner)).Verify(f.signer.Public()); !errors.Is(err, ErrSignature) {
				t.Errorf("signed by another key: got %v, want ErrSignature", err)
			}
			// Another key signs under its own key id, verified with its own
			// key: the signature is fine; the caller must look the key up
			// from the sender's credential.
			h = f.header()
			h.SenderKeyID = otherSigner.Public().KeyID()
			if _, err := Seal(nil, h, f.kem.Public(), f.signer, nil); err == nil {
				t.Error("Seal accepted a sender key id of another key")
			}
			h = f.header()
			h.RecipientKeyID = other.Public().KeyID()
			if _, err := Seal(nil, h, f.kem.Public(), f.signer, nil); err == nil {
				t.Error("Seal accepted a recipient key id of another key")
			}
			if err := e.Verify(VerifyKey{}); !errors.Is(err, ErrSignature) {
				t.Errorf("zero key: got %v, want ErrSignature", err)
			}
		})
	}
}

func mustParse(t *testing.T, b []byte) *Envelope {
	t.Helper()
	e, err := ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSizeLimit(t *testing.T) {
	f := newFixture(t, SuiteX25519)
	if _, err := ParseEnvelope(make([]byte, MaxEnvelopeSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("parse %d bytes: got %v, want ErrTooLarge", MaxEnvelopeSize+1, err)
	}
	small := f.seal(t, f.header(), nil)
	overhead := len(small)
	pt := make([]byte, MaxEnvelopeSize-overhead)
	b := f.seal(t, f.header(), pt)
	if len(b) != MaxEnvelopeSize {
		t.Fatalf("envelope of %d bytes, want exactly %d", len(b), MaxEnvelopeSize)
	}
	if got, err := receive(b, f.signer.Public(), f.kem); err != nil || len(got) != len(pt) {
		t.Errorf("envelope at the limit: %v", err)
	}
	if _, err := Seal(nil, f.header(), f.kem.Public(), f.signer, make([]byte, len(pt)+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Seal one byte over: got %v, want ErrTooLarge", err)
	}
}

func TestInvalidHeaders(t *testing.T) {
	f := newFixture(t, SuiteX25519)
	tests := []struct {
		name string
		f    func(*Header)
	}{
		{"empty sender", func(h *Header) { h.Sender = "" }},
		{"long sender", func(h *Header) { h.Sender = strings.Repeat("a", 129) }},
		{"empty recipient", func(h *Header) { h.Recipient = "" }},
		{"sender not UTF-8", func(h *Header) { h.Sender = "uni\xff" }},
		{"control character", func(h *Header) { h.Purpose = "a\nb" }},
		{"long purpose", func(h *Header) { h.Purpose = strings.Repeat("p", 65) }},
		{"unknown level", func(h *Header) { h.Level = "L9" }},
		{"kind 0", func(h *Header) { h.Kind = 0 }},
		{"kind 9", func(h *Header) { h.Kind = 9 }},
		{"count above limit", func(h *Header) { h.Count = MaxCount + 1 }},
		{"records without count", func(h *Header) { h.Count = 0 }},
		{"zero created", func(h *Header) { h.Created = time.Time{} }},
		{"before 1970", func(h *Header) { h.Created = time.Unix(-1, 0); h.Expires = time.Unix(10, 0) }},
		{"expires equals created", func(h *Header) { h.Expires = h.Created }},
		{"expires before created", func(h *Header) { h.Expires = h.Created.Add(-time.Hour) }},
		{"long legal basis", func(h *Header) { h.LegalBasis = strings.Repeat("b", 33) }},
		{"long standard", func(h *Header) { h.Standard = strings.Repeat("s", 65) }},
		{"standard with a control character", func(h *Header) { h.Standard = "EDU\x00/1" }},
		{"legal basis not UTF-8", func(h *Header) { h.LegalBasis = "contract\xff" }},
	}
	for _, tt := range tests {
		h := f.header()
		tt.f(&h)
		if _, err := Seal(nil, h, f.kem.Public(), f.signer, testPayload); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", tt.name, err)
		}
	}
	h := f.header()
	h.Count = MaxCount
	if _, err := Seal(nil, h, f.kem.Public(), f.signer, testPayload); err != nil {
		t.Errorf("count at limit: %v", err)
	}
}

// TestNoSecretsInOutput checks that private keys print redacted and errors
// carry no payload.
func TestNoSecretsInOutput(t *testing.T) {
	f := newFixture(t, SuiteX25519)
	ak, _ := GenerateAuthorityKey(detRand("authority"))
	kemBytes, _ := f.kem.MarshalBinary()
	sigBytes, _ := f.signer.MarshalBinary()
	akBytes, _ := ak.MarshalBinary()
	secrets := [][]byte{kemBytes, sigBytes, akBytes}
	for _, v := range []any{f.kem, f.signer, ak, *f.kem, *f.signer, *ak, []any{f.signer}, struct{ K *SigningKey }{f.signer}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				if strings.Contains(strings.ToLower(out), fmt.Sprintf("%x", s[:8])) ||
					strings.Contains(out, fmt.Sprint(s[:4])[1:8]) {
					t.Errorf("%s of %T leaks key bytes: %s", verb, v, out)
				}
			}
		}
	}
	b := f.seal(t, f.header(), []byte("SECRET-PAYLOAD"))
	other, _ := GenerateKEMKey(SuiteX25519, nil)
	_, err := mustParse(t, b).Open(other)
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("Open error: %v", err)
	}
}

func TestSuiteNames(t *testing.T) {
	for _, s := range suites {
		got, err := ParseSuite(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSuite(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseSuite("rot13"); !errors.Is(err, ErrSuite) {
		t.Errorf("ParseSuite(rot13): got %v, want ErrSuite", err)
	}
	if DefaultSuite != SuiteXWing || SuiteXWing.String() != "xwing-sha256-aes128gcm" || SuiteX25519.String() != "x25519-sha256-aes128gcm" {
		t.Error("suite names or default changed")
	}
}
