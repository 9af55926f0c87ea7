package crypto

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.vec from fixed randomness")

// A vector is one testdata/*.vec file (ENVELOPE.md §8).
type vector struct {
	description string
	expect      string
	suite       SuiteID
	recipient   []byte // KEM private key
	sender      []byte // Ed25519 seed, or SM2 d when senderAlg is SM2
	senderAlg   SignatureAlgorithm
	payloadHash []byte
	// legalBasis and standard are what the header of a valid version 2
	// envelope says.
	legalBasis, standard string
	envelope             []byte
}

var expectErrors = map[string]error{
	"malformed": ErrMalformed,
	"version":   ErrVersion,
	"suite":     ErrSuite,
	"signature": ErrSignature,
	"decrypt":   ErrDecrypt,
	"too-large": ErrTooLarge,
}

func (v vector) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "description: %s\n", v.description)
	fmt.Fprintf(&b, "expect: %s\n", v.expect)
	fmt.Fprintf(&b, "suite: %s\n", v.suite)
	fmt.Fprintf(&b, "recipient-key: %x\n", v.recipient)
	fmt.Fprintf(&b, "sender-key: %x\n", v.sender)
	if v.senderAlg == SM2 {
		fmt.Fprintf(&b, "sender-algorithm: %s\n", v.senderAlg)
	}
	if v.payloadHash != nil {
		fmt.Fprintf(&b, "payload-sha256: %x\n", v.payloadHash)
	}
	if v.legalBasis != "" {
		fmt.Fprintf(&b, "legal-basis: %s\n", v.legalBasis)
	}
	if v.standard != "" {
		fmt.Fprintf(&b, "standard: %s\n", v.standard)
	}
	b.WriteString("\n")
	enc := base64.StdEncoding.EncodeToString(v.envelope)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\n")
	return b.Bytes()
}

func parseVector(data []byte) (vector, error) {
	var v vector
	head, body, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return v, errors.New("no blank line")
	}
	sc := bufio.NewScanner(bytes.NewReader(head))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			return v, fmt.Errorf("bad line %q", sc.Text())
		}
		var err error
		switch key {
		case "description":
			v.description = val
		case "expect":
			v.expect = val
			if _, known := expectErrors[val]; !known && val != "success" {
				return v, fmt.Errorf("unknown expect %q", val)
			}
		case "suite":
			v.suite, err = ParseSuite(val)
		case "recipient-key":
			v.recipient, err = hex.DecodeString(val)
		case "sender-key":
			v.sender, err = hex.DecodeString(val)
		case "sender-algorithm":
			if val != SM2.String() {
				err = fmt.Errorf("unknown algorithm %q, want SM2 (or no line, for Ed25519)", val)
			}
			v.senderAlg = SM2
		case "payload-sha256":
			v.payloadHash, err = hex.DecodeString(val)
		case "legal-basis":
			v.legalBasis = val
		case "standard":
			v.standard = val
		default:
			return v, fmt.Errorf("unknown key %q", key)
		}
		if err != nil {
			return v, fmt.Errorf("%s: %v", key, err)
		}
	}
	if v.senderAlg == 0 {
		v.senderAlg = Ed25519
	}
	var err error
	v.envelope, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", ""))
	return v, err
}

// vectorCases builds every vector from fixed randomness.
func vectorCases(t testing.TB) map[string]vector {
	t.Helper()
	xw := newFixture(t, SuiteXWing)
	x := newFixture(t, SuiteX25519)
	gm := newFixture(t, SuiteSM2)
	other, err := GenerateSigningKey(detRand("other sender"))
	if err != nil {
		t.Fatal(err)
	}
	otherKEM, err := GenerateKEMKey(SuiteX25519, detRand("other recipient"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(testPayload)
	mk := func(f fixture, desc, expect string, env []byte) vector {
		rk, _ := f.kem.MarshalBinary()
		sk, _ := f.signer.MarshalBinary()
		v := vector{description: desc, expect: expect, suite: f.suite, recipient: rk, sender: sk, senderAlg: f.signer.Algorithm(), envelope: env}
		if expect == "success" {
			v.payloadHash = sum[:]
		}
		return v
	}
	valid := x.seal(t, x.header(), testPayload)
	hlen := len(mustParseTB(t, valid).header)
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	seqOff := 24
	validV2 := x.seal(t, x.headerV2(), testPayload)
	hlenV2 := len(mustParseTB(t, validV2).header)
	basisOff := hlenV2 - len(x.headerV2().Standard) - 1 - len(x.headerV2().LegalBasis) // the legal basis's first byte
	editV2 := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(validV2)) }
	mkV2 := func(f fixture, desc, expect string, env []byte) vector {
		v := mk(f, desc, expect, env)
		if expect == "success" {
			v.legalBasis, v.standard = f.headerV2().LegalBasis, f.headerV2().Standard
		}
		return v
	}

	vs := map[string]vector{
		"xwing_ok":   mk(xw, "valid X-Wing envelope of two records", "success", xw.seal(t, xw.header(), testPayload)),
		"x25519_ok":  mk(x, "valid X25519 envelope of two records", "success", valid),
		"bad_magic":  mk(x, "magic EDSF instead of EDSE", "malformed", edit(func(b []byte) []byte { b[3] = 'F'; return b })),
		"version_3":  mk(x, "version byte 3", "version", edit(func(b []byte) []byte { b[4] = 3; return resign(b, x.signer) })),
		"suite_255":  mk(x, "unknown suite 255", "suite", edit(func(b []byte) []byte { b[6] = 255; return resign(b, x.signer) })),
		"truncated":  mk(x, "last byte of the signature missing", "malformed", valid[:len(valid)-1]),
		"trailing":   mk(x, "one byte after the signature", "malformed", append(bytes.Clone(valid), 0)),
		"enc_length": mk(x, "encapsulated key length 31 instead of 32", "malformed", edit(func(b []byte) []byte { b[hlen+1] = 31; return b })),
		"count_over_limit": mk(x, "count 100001", "malformed", edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[48:], MaxCount+1)
			return resign(b, x.signer)
		})),
		"sender_not_utf8": mk(x, "sender id with byte 0xff", "malformed", edit(func(b []byte) []byte { b[53] = 0xff; return resign(b, x.signer) })),
		"seq_altered":     mk(x, "seq changed after signing", "signature", edit(func(b []byte) []byte { b[seqOff+7]++; return b })),
		"ct_flipped":      mk(x, "one ciphertext bit flipped after signing", "signature", edit(func(b []byte) []byte { b[len(b)-sigSize-20] ^= 1; return b })),
		"other_signer": mk(x, "signed by a key other than sender-key, under sender-key's id", "signature",
			edit(func(b []byte) []byte { return resign(b, other) })),
		"seq_altered_resigned": mk(x, "seq changed and re-signed by the sender: the header is AEAD associated data", "decrypt",
			edit(func(b []byte) []byte { b[seqOff+7]++; return resign(b, x.signer) })),
		"ct_flipped_resigned": mk(x, "ciphertext bit flipped and re-signed by the sender", "decrypt",
			edit(func(b []byte) []byte { b[len(b)-sigSize-20] ^= 1; return resign(b, x.signer) })),
		"wrong_recipient": mk(x, "sealed to another X25519 key than recipient-key", "decrypt", func() []byte {
			h := x.header()
			h.RecipientKeyID = otherKEM.Public().KeyID()
			b, err := Seal(detRand("seal"), h, otherKEM.Public(), x.signer, testPayload)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}()),
		// Version 2: version 1 and the strings legal_basis and standard.
		"v2_xwing_ok":  mkV2(xw, "valid X-Wing envelope of two records, version 2 (legal basis and standard)", "success", xw.seal(t, xw.headerV2(), testPayload)),
		"v2_x25519_ok": mkV2(x, "valid X25519 envelope of two records, version 2 (legal basis and standard)", "success", validV2),
		"v2_without_strings": mk(x, "version 1 header under version byte 2, re-signed: the strings of version 2 are missing", "malformed",
			edit(func(b []byte) []byte { b[4] = 2; return resign(b, x.signer) })),
		"v2_as_v1": mk(x, "version 2 header under version byte 1, re-signed: its last two strings are left over", "malformed",
			editV2(func(b []byte) []byte { b[4] = 1; return resign(b, x.signer) })),
		"v2_both_empty": mk(x, "version 2 header whose legal basis and standard are both empty: version 1 holds it", "malformed", func() []byte {
			h := x.header()
			hdr := append(h.appendTo(nil), 0, 0)
			hdr[4] = 2
			return sealRaw(t, hdr, x, testPayload)
		}()),
		"v2_basis_altered": mk(x, "legal basis contract changed to kontract after signing", "signature",
			editV2(func(b []byte) []byte { b[basisOff] = 'k'; return b })),
		"v2_basis_altered_resigned": mk(x, "legal basis changed and re-signed by the sender: the header is AEAD associated data", "decrypt",
			editV2(func(b []byte) []byte { b[basisOff] = 'k'; return resign(b, x.signer) })),
		"v2_standard_not_utf8": mk(x, "standard with byte 0xff, re-signed", "malformed",
			editV2(func(b []byte) []byte { b[hlenV2-1] = 0xff; return resign(b, x.signer) })),
	}
	// The GM/T suite (ENVELOPE.md §3.1). SM2 signatures are randomised:
	// regenerating these gives the same bytes up to the signature.
	validSM2 := gm.seal(t, gm.header(), testPayload)
	hlenSM2 := len(mustParseTB(t, validSM2).header)
	editSM2 := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(validSM2)) }
	vs["sm2_ok"] = mk(gm, "valid GM/T (SM2, SM3, SM4-GCM) envelope of two records", "success", validSM2)
	vs["v2_sm2_ok"] = mkV2(gm, "valid GM/T envelope of two records, version 2 (legal basis and standard)", "success", gm.seal(t, gm.headerV2(), testPayload))
	vs["sm2_enc_length"] = mk(gm, "SM2 ciphertext length 128 instead of 129", "malformed",
		editSM2(func(b []byte) []byte { b[hlenSM2+1] = 128; return b }))
	vs["sm2_c3_flipped_resigned"] = mk(gm, "a bit of the SM2 ciphertext's C3 (hash) flipped and re-signed: SM2 decryption fails", "decrypt",
		editSM2(func(b []byte) []byte { b[hlenSM2+2+sm2PublicKeySize] ^= 1; return resign(b, gm.signer) }))
	vs["sm2_ct_flipped_resigned"] = mk(gm, "SM4-GCM ciphertext bit flipped and re-signed by the sender", "decrypt",
		editSM2(func(b []byte) []byte { b[len(b)-sigSize-20] ^= 1; return resign(b, gm.signer) }))
	vs["sm2_seq_altered_resigned"] = mk(gm, "seq changed and re-signed by the sender: the header is SM4-GCM associated data", "decrypt",
		editSM2(func(b []byte) []byte { b[seqOff+7]++; return resign(b, gm.signer) }))
	vs["sm2_seq_altered"] = mk(gm, "seq changed after signing", "signature",
		editSM2(func(b []byte) []byte { b[seqOff+7]++; return b }))
	sm2OnX := mk(gm, "GM/T envelope, recipient key of suite X25519", "suite", validSM2)
	sm2OnX.suite, sm2OnX.recipient = SuiteX25519, vs["x25519_ok"].recipient
	vs["sm2_suite_mismatch"] = sm2OnX
	edOnSM2 := mk(gm, "GM/T envelope signed with Ed25519 (sender-key) under its id: the suite is signed with SM2", "signature", func() []byte {
		h := gm.header()
		h.SenderKeyID = x.signer.Public().KeyID()
		hdr := h.appendTo(nil)
		enc, ct, err := sealSM2(detRand("seal"), hdr, gm.kem.Public(), testPayload)
		if err != nil {
			t.Fatal(err)
		}
		out := binary.BigEndian.AppendUint16(hdr, uint16(len(enc)))
		out = append(out, enc...)
		out = binary.BigEndian.AppendUint32(out, uint32(len(ct)))
		out = append(out, ct...)
		return append(out, x.signer.Sign(sigDigest(out))...)
	}())
	edOnSM2.sender, _ = x.signer.MarshalBinary()
	edOnSM2.senderAlg = Ed25519
	vs["sm2_signed_ed25519"] = edOnSM2

	mismatch := mk(xw, "X-Wing envelope, recipient key of suite X25519", "suite", vs["xwing_ok"].envelope)
	mismatch.suite, mismatch.recipient = SuiteX25519, vs["x25519_ok"].recipient
	vs["suite_mismatch"] = mismatch
	return vs
}

// sealRaw seals pt under header bytes hdr as Seal does, whatever hdr
// holds: for vectors of headers Seal does not write.
func sealRaw(t testing.TB, hdr []byte, f fixture, pt []byte) []byte {
	t.Helper()
	sender, err := f.suite.hpke().NewSender(f.kem.Public().pk, hpkeInfo(hdr))
	if err != nil {
		t.Fatal(err)
	}
	enc, sealer, err := sender.Setup(detRand("seal"))
	if err != nil {
		t.Fatal(err)
	}
	ct, err := sealer.Seal(pt, hdr)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.BigEndian.AppendUint16(bytes.Clone(hdr), uint16(len(enc)))
	out = append(out, enc...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(ct)))
	out = append(out, ct...)
	return append(out, f.signer.Sign(sigDigest(out))...)
}

func mustParseTB(t testing.TB, b []byte) *Envelope {
	t.Helper()
	e, err := ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkVector runs v through ParseEnvelope, Verify and Open.
func checkVector(v vector) error {
	priv, err := ParseKEMPrivateKey(v.suite, v.recipient)
	if err != nil {
		return fmt.Errorf("recipient-key: %v", err)
	}
	parse := ParseSigningKey
	if v.senderAlg == SM2 {
		parse = ParseSM2SigningKey
	}
	signer, err := parse(v.sender)
	if err != nil {
		return fmt.Errorf("sender-key: %v", err)
	}
	pt, err := receive(v.envelope, signer.Public(), priv)
	if v.expect == "success" {
		if err != nil {
			return fmt.Errorf("got %v, want success", err)
		}
		if sum := sha256.Sum256(pt); !bytes.Equal(sum[:], v.payloadHash) {
			return fmt.Errorf("payload hash %x, want %x", sum, v.payloadHash)
		}
		e, err := ParseEnvelope(v.envelope)
		if err != nil {
			return err
		}
		if h := e.Header; h.LegalBasis != v.legalBasis || h.Standard != v.standard {
			return fmt.Errorf("header legal basis %q, standard %q; want %q, %q", h.LegalBasis, h.Standard, v.legalBasis, v.standard)
		}
		return nil
	}
	if want := expectErrors[v.expect]; !errors.Is(err, want) {
		return fmt.Errorf("got %v, want %v", err, want)
	}
	return nil
}

// sameVector reports whether regenerating a vector gave want's bytes: all of
// them, but for an SM2 signature, which is randomised, all but the last 64
// bytes, the signature being checked by checkVector instead.
func sameVector(got, want vector) bool {
	if got.senderAlg != SM2 {
		return bytes.Equal(got.marshal(), want.marshal())
	}
	if len(got.envelope) != len(want.envelope) || len(got.envelope) < sigSize {
		return false
	}
	g := got
	g.envelope = append(bytes.Clone(got.envelope[:len(got.envelope)-sigSize]), want.envelope[len(want.envelope)-sigSize:]...)
	return bytes.Equal(g.marshal(), want.marshal())
}

func TestVectors(t *testing.T) {
	cases := vectorCases(t)
	if *update {
		old, _ := filepath.Glob("testdata/*.vec")
		for _, p := range old {
			os.Remove(p)
		}
		for name, v := range cases {
			if err := os.WriteFile(filepath.Join("testdata", name+".vec"), v.marshal(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob("testdata/*.vec")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range files {
		name := strings.TrimSuffix(filepath.Base(p), ".vec")
		names = append(names, name)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseVector(data)
			if err != nil {
				t.Fatalf("parse vector: %v", err)
			}
			if err := checkVector(v); err != nil {
				t.Errorf("%s (%s): %v", name, v.description, err)
			}
			if c, ok := cases[name]; !ok {
				t.Errorf("no generator for %s", name)
			} else if !sameVector(c, v) {
				t.Errorf("regenerating %s gives different bytes; run go test -run TestVectors -update and review the diff", name)
			}
		})
	}
	for name := range cases {
		if !slices.Contains(names, name) {
			t.Errorf("vector %s missing from testdata; run with -update", name)
		}
	}
}
