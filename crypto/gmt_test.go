package crypto

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/sm4"
	"github.com/emmansun/gmsm/smx509"
	"github.com/golang-jwt/jwt/v5"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSM3Vectors checks SM3 against the examples of GB/T 32905-2016,
// appendix A.
func TestSM3Vectors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", "66c7f0f4 62eeedd9 d1f2d46b dc10e4e2 4167c487 5cf2f7a2 297da02b 8f4ba8e0"},
		{strings.Repeat("abcd", 16), "debe9ff9 2275b8a1 38604889 c18e5a4d 6fdb70e5 387e5765 293dcba3 9c0c5732"},
	} {
		h := SuiteSM2.NewHash()
		h.Write([]byte(tc.in))
		if got, want := h.Sum(nil), unhex(t, tc.want); !bytes.Equal(got, want) {
			t.Errorf("SM3(%q) = %x, want %x", tc.in, got, want)
		}
	}
}

// TestSM4Vectors checks SM4 against the examples of GB/T 32907-2016,
// appendix A: one encryption, and 1 000 000 encryptions in a row.
func TestSM4Vectors(t *testing.T) {
	key := unhex(t, "0123456789abcdeffedcba9876543210")
	b, err := sm4.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	block := bytes.Clone(key) // the plaintext is the key
	b.Encrypt(block, block)
	if want := unhex(t, "681edf34d206965e86b3e94f536e4246"); !bytes.Equal(block, want) {
		t.Errorf("SM4 once = %x, want %x", block, want)
	}
	if testing.Short() {
		return
	}
	for range 999999 {
		b.Encrypt(block, block)
	}
	if want := unhex(t, "595298c7c6fd271f0402f804c33d3f66"); !bytes.Equal(block, want) {
		t.Errorf("SM4 1 000 000 times = %x, want %x", block, want)
	}
}

// The example of GB/T 32918.2 and .4 on the recommended curve (GB/T
// 32918.5): key pair, the signature of "message digest" with the default
// user id and k, and the encryption of "encryption standard" with the same k.
const (
	gbD      = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
	gbPub    = "04 09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020 CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
	gbZA     = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
	gbE      = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
	gbK      = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21"
	gbR      = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
	gbS      = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
	gbCipher = "04 04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73 E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0" +
		"59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766" + "21886CA989CA9C7D58087307CA93092D651EFA"
)

// TestSM2SignatureVector checks SM2 signatures against the standard's
// example: the public key of d, Z_A, e, and that the standard's (r, s)
// verifies with [VerifyKey.Verify] and is what k gives by GB/T 32918.2 §6.1.
func TestSM2SignatureVector(t *testing.T) {
	k, err := ParseSM2SigningKey(unhex(t, gbD))
	if err != nil {
		t.Fatal(err)
	}
	pub := unhex(t, gbPub)
	if !bytes.Equal(k.Public().Bytes(), pub) {
		t.Fatalf("public key %x, want %x", k.Public().Bytes(), pub)
	}
	msg := []byte("message digest")
	za, err := sm2.CalculateZA(&k.sm2.PublicKey, []byte(SM2UserID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(za, unhex(t, gbZA)) {
		t.Errorf("Z_A = %x, want %s", za, gbZA)
	}
	e := sm3.Sum(append(za, msg...))
	if !bytes.Equal(e[:], unhex(t, gbE)) {
		t.Errorf("e = %x, want %s", e, gbE)
	}
	sig := append(unhex(t, gbR), unhex(t, gbS)...)
	if !k.Public().Verify(msg, sig) {
		t.Error("the standard's signature does not verify")
	}
	if k.Public().Verify([]byte("message digesT"), sig) {
		t.Error("the standard's signature verifies another message")
	}
	// r = (e + x1) mod n, s = (1 + d)⁻¹ (k − r·d) mod n, with (x1, y1) = k·G.
	c := sm2.P256()
	n := c.Params().N
	kk := new(big.Int).SetBytes(unhex(t, gbK))
	d := new(big.Int).SetBytes(unhex(t, gbD))
	x1, _ := c.ScalarBaseMult(kk.Bytes())
	r := new(big.Int).Add(new(big.Int).SetBytes(e[:]), x1)
	r.Mod(r, n)
	s := new(big.Int).Sub(kk, new(big.Int).Mul(r, d))
	s.Mul(s, new(big.Int).ModInverse(new(big.Int).Add(d, big.NewInt(1)), n))
	s.Mod(s, n)
	got := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	if !bytes.Equal(got, sig) {
		t.Errorf("(r, s) from k = %x, want %x", got, sig)
	}
	// Our own signatures verify, and not under another key.
	own := k.Sign(msg)
	if !k.Public().Verify(msg, own) {
		t.Error("own signature does not verify")
	}
	other, _ := GenerateSigningKeyFor(SM2, detRand("other"))
	if other.Public().Verify(msg, own) {
		t.Error("own signature verifies under another key")
	}
}

// TestSM2EncryptionVector checks the GM/T suite's SM2 encryption against
// the standard's example: with its k, "encryption standard" encrypts to
// the standard's ciphertext (C1 ‖ C3 ‖ C2), which decrypts back.
func TestSM2EncryptionVector(t *testing.T) {
	priv, err := sm2Scheme{}.UnmarshalBinaryPrivateKey(unhex(t, gbD))
	if err != nil {
		t.Fatal(err)
	}
	sk := priv.(*sm2KEMPrivateKey)
	if !bytes.Equal(sk.pub.raw, unhex(t, gbPub)) {
		t.Fatalf("public key %x, want %s", sk.pub.raw, gbPub)
	}
	msg := []byte("encryption standard")
	ct, err := sm2.Encrypt(bytes.NewReader(unhex(t, gbK)), sk.pub.pub, msg, sm2EncOpts)
	if err != nil {
		t.Fatal(err)
	}
	if want := unhex(t, gbCipher); !bytes.Equal(ct, want) {
		t.Errorf("ciphertext\n%x, want\n%x", ct, want)
	}
	pt, err := sk.priv.Decrypt(nil, unhex(t, gbCipher), sm2DecOpts)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Errorf("decrypt = %q, %v; want %q", pt, err, msg)
	}
}

// TestSM2KEM checks the suite's KEM: sizes, a round trip, determinism from
// the seed, and that a ciphertext altered anywhere does not decapsulate.
func TestSM2KEM(t *testing.T) {
	s := sm2Scheme{}
	pk, sk := s.DeriveKeyPair(bytes.Repeat([]byte{7}, s.SeedSize()))
	seed := bytes.Repeat([]byte{9}, s.EncapsulationSeedSize())
	ct, ss, err := s.EncapsulateDeterministically(pk, seed)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) != s.CiphertextSize() || len(ss) != s.SharedKeySize() {
		t.Fatalf("ciphertext %d bytes, secret %d; want %d, %d", len(ct), len(ss), s.CiphertextSize(), s.SharedKeySize())
	}
	ct2, _, _ := s.EncapsulateDeterministically(pk, seed)
	if !bytes.Equal(ct, ct2) {
		t.Error("encapsulation is not deterministic in its seed")
	}
	got, err := s.Decapsulate(sk, ct)
	if err != nil || !bytes.Equal(got, ss) {
		t.Fatalf("decapsulate = %x, %v; want %x", got, err, ss)
	}
	for _, i := range []int{1, 40, sm2PublicKeySize, sm2PublicKeySize + 31, len(ct) - 1} {
		bad := bytes.Clone(ct)
		bad[i] ^= 1
		if got, err := s.Decapsulate(sk, bad); err == nil {
			t.Errorf("byte %d altered: decapsulated %x", i, got)
		}
	}
	if _, err := s.Decapsulate(sk, ct[:len(ct)-1]); err == nil {
		t.Error("short ciphertext decapsulated")
	}
}

// sm2SPKI returns the PEM SubjectPublicKeyInfo of an SM2 public key, as
// openssl reads it.
func sm2SPKI(t testing.TB, raw []byte) []byte {
	t.Helper()
	pub, err := sm2.NewPublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// derSignature encodes r ‖ s as the DER SEQUENCE openssl reads.
func derSignature(t testing.TB, sig []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// opensslGMT returns the path of an openssl that has SM2, SM3 and SM4, or
// skips the test saying why.
func opensslGMT(t *testing.T) string {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: cannot check the GM/T suite with an independent implementation (Debian: apt-get install openssl)")
	}
	digests, err := exec.Command(openssl, "list", "-digest-algorithms").CombinedOutput()
	if err != nil || !bytes.Contains(digests, []byte("SM3")) {
		t.Skipf("openssl list -digest-algorithms names no SM3 (%v): an openssl 3 built with SM2/SM3/SM4 is needed", err)
	}
	pkeys, err := exec.Command(openssl, "list", "-public-key-algorithms").CombinedOutput()
	if err != nil || !bytes.Contains(bytes.ToLower(pkeys), []byte("sm2")) {
		t.Skipf("openssl list -public-key-algorithms names no SM2 (%v): an openssl 3 built with SM2/SM3/SM4 is needed", err)
	}
	return openssl
}

func writeTemp(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGMTEnvelopeOpenSSL has an independent implementation, the openssl
// CLI, check a GM/T envelope (ENVELOPE.md §3.1, §4): the SM3 digest it
// signs, its SM2 signature with the default user id, and its payload,
// opened with SM2 decryption, the X9.63 KDF over SM3 (the KDF of GB/T
// 32918.4 with no shared info) and SM4 in counter mode (GCM's keystream;
// the tag is left to Open).
func TestGMTEnvelopeOpenSSL(t *testing.T) {
	openssl := opensslGMT(t)
	dir := t.TempDir()
	run := func(args ...string) ([]byte, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			return out, err
		}
		return out, nil
	}
	gm := newFixture(t, SuiteSM2)
	env := gm.seal(t, gm.headerV2(), testPayload)
	e := mustParseTB(t, env)
	signed := env[:len(env)-sigSize]

	// The signed digest: SM3("eduspace envelope v2 sig" ‖ signed).
	in := writeTemp(t, dir, "to-digest", append([]byte(label(version2, "sig")), signed...))
	digest, err := run("dgst", "-sm3", "-binary", in)
	if err != nil {
		t.Fatalf("openssl dgst -sm3: %v\n%s", err, digest)
	}
	if !bytes.Equal(digest, sigDigest(signed)) {
		t.Fatalf("openssl SM3 digest %x, ours %x", digest, sigDigest(signed))
	}

	// The signature, over that digest, by the sender's SM2 key.
	pub := writeTemp(t, dir, "sender.pub.pem", sm2SPKI(t, gm.signer.Public().Bytes()))
	msg := writeTemp(t, dir, "digest", digest)
	sig := writeTemp(t, dir, "sig.der", derSignature(t, e.sig))
	verify := func() ([]byte, error) {
		return run("pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-digest", "sm3",
			"-pkeyopt", "distid:"+SM2UserID, "-in", msg, "-sigfile", sig)
	}
	if out, err := verify(); err != nil {
		t.Fatalf("openssl refused the envelope's SM2 signature: %v\n%s", err, out)
	}
	bad := bytes.Clone(digest)
	bad[0] ^= 1
	writeTemp(t, dir, "digest", bad)
	if out, err := verify(); err == nil {
		t.Errorf("openssl accepted the signature over another digest:\n%s", out)
	}

	// The payload: SM2-decrypt the secret, derive key and nonce, SM4-CTR.
	skDER, err := smx509.MarshalPKCS8PrivateKey(gm.kem.sk.(*sm2KEMPrivateKey).priv)
	if err != nil {
		t.Fatal(err)
	}
	key := writeTemp(t, dir, "recipient.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: skDER}))
	encASN1, err := sm2.PlainCiphertext2ASN1(e.enc, sm2.C1C3C2)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := run("pkeyutl", "-decrypt", "-inkey", key, "-in", writeTemp(t, dir, "enc.der", encASN1))
	if err != nil {
		t.Fatalf("openssl pkeyutl -decrypt: %v\n%s", err, secret)
	}
	z := append(append(append(bytes.Clone(secret), e.enc...), gm.kem.Public().Bytes()...), hpkeInfo(e.header)...)
	kn, err := run("kdf", "-binary", "-keylen", "28", "-kdfopt", "digest:SM3", "-kdfopt", "hexsecret:"+hex.EncodeToString(z), "X963KDF")
	if err != nil || len(kn) != 28 {
		t.Fatalf("openssl kdf X963KDF: %v\n%s", err, kn)
	}
	iv := binary.BigEndian.AppendUint32(bytes.Clone(kn[16:]), 2) // GCM: the first block of text is J0 + 1
	ct := writeTemp(t, dir, "ct", e.ct[:len(e.ct)-aeadOverhead])
	pt, err := run("enc", "-d", "-sm4-ctr", "-K", hex.EncodeToString(kn[:16]), "-iv", hex.EncodeToString(iv), "-in", ct)
	if err != nil {
		t.Fatalf("openssl enc -sm4-ctr: %v\n%s", err, pt)
	}
	if !bytes.Equal(pt, testPayload) {
		t.Errorf("openssl decrypted %q, want %q", pt, testPayload)
	}
}

// TestSM2JWTOpenSSL has openssl verify the SM2 signature of a JWT signed
// with alg SM2 (CREDENTIALS.md §3.2) over its signing input.
func TestSM2JWTOpenSSL(t *testing.T) {
	openssl := opensslGMT(t)
	dir := t.TempDir()
	k, err := GenerateSigningKeyFor(SM2, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := k.SignJWT(jwt.RegisteredClaims{Subject: "tk_x", IssuedAt: jwt.NewNumericDate(time.Now())})
	if err != nil {
		t.Fatal(err)
	}
	dot := strings.LastIndexByte(tok, '.')
	sig, err := b64.DecodeString(tok[dot+1:])
	if err != nil || len(sig) != sm2SignatureSize {
		t.Fatalf("signature part: %d bytes, %v", len(sig), err)
	}
	pub := writeTemp(t, dir, "pub.pem", sm2SPKI(t, k.Public().Bytes()))
	in := writeTemp(t, dir, "input", []byte(tok[:dot]))
	sigFile := writeTemp(t, dir, "sig.der", derSignature(t, sig))
	out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-digest", "sm3",
		"-pkeyopt", "distid:"+SM2UserID, "-in", in, "-sigfile", sigFile).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl refused the JWT's SM2 signature: %v\n%s", err, out)
	}
}

// TestCheckpointSM2 checks the checkpoints of a node on the GM/T suite
// (CREDENTIALS.md §6.2, version 2): they verify with the SM2 signing key
// they name, through the credential too, and not altered, under another
// key, as version 1, or with a composite key's id.
func TestCheckpointSM2(t *testing.T) {
	k, _ := GenerateSigningKeyFor(SM2, detRand("checkpoint sm2"))
	other, _ := GenerateSigningKeyFor(SM2, detRand("other sm2"))
	ed, _ := GenerateSigningKeyFor(Ed25519, detRand("ed"))
	c := Checkpoint{Space: "city-edu", Node: "uni-a", Count: 1000, Head: [32]byte{0: 0xab, 31: 0xcd}, Time: time.UnixMilli(1764000000123).UTC()}
	data, err := SignCheckpointSM2(k, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 4+1+9+6+19+8+32+8+sm2SignatureSize || data[4] != checkpointVersionSM2 {
		t.Fatalf("checkpoint of %d bytes, version %d", len(data), data[4])
	}
	got, err := ParseCheckpointSM2(data, k.Public())
	if err != nil || *got != c {
		t.Fatalf("ParseCheckpointSM2 = %+v, %v; want %+v", got, err, c)
	}
	if node, kid, err := CheckpointSigner(data); err != nil || node != "uni-a" || kid != k.Public().KeyID() {
		t.Errorf("CheckpointSigner = %q, %q, %v", node, kid, err)
	}
	if _, err := SignCheckpointSM2(ed, c); err == nil {
		t.Error("an Ed25519 key signed a version 2 checkpoint")
	}
	if _, err := ParseCheckpointSM2(data, other.Public()); !errors.Is(err, ErrSignature) {
		t.Errorf("under another key: %v, want ErrSignature", err)
	}
	for _, i := range []int{5, 20, len(data) - sm2SignatureSize - 1, len(data) - 1} {
		b := bytes.Clone(data)
		b[i] ^= 1
		if _, err := ParseCheckpointSM2(b, k.Public()); err == nil {
			t.Errorf("byte %d altered: parsed", i)
		}
	}
	v1 := bytes.Clone(data)
	v1[4] = statementVersion1
	if _, _, err := CheckpointSigner(v1); err == nil {
		t.Error("an SM2 checkpoint under version byte 1 parsed")
	}
	if _, err := ParseCheckpointSM2(data[:len(data)-1], k.Public()); err == nil {
		t.Error("a truncated checkpoint parsed")
	}

	cred := &Credential{NodeID: "uni-a", SigningKeys: []SigningKeyInfo{{ID: k.Public().KeyID(), Key: k.Public().Bytes()}},
		CheckpointKeys: []CompositeKeyInfo{}}
	if !cred.HasCheckpointKey(k.Public().KeyID()) || cred.HasCheckpointKey(other.Public().KeyID()) {
		t.Error("HasCheckpointKey does not name exactly the listed SM2 key")
	}
	if got, err := cred.VerifyCheckpoint(data); err != nil || *got != c {
		t.Errorf("Credential.VerifyCheckpoint = %+v, %v", got, err)
	}
	byOther, _ := SignCheckpointSM2(other, c)
	if _, err := cred.VerifyCheckpoint(byOther); !errors.Is(err, ErrUnknownCheckpointKey) {
		t.Errorf("signed by a key the credential lacks: %v, want ErrUnknownCheckpointKey", err)
	}
	edCred := &Credential{NodeID: "uni-a", SigningKeys: []SigningKeyInfo{{ID: ed.Public().KeyID(), Key: ed.Public().Bytes()}}}
	if edCred.HasCheckpointKey(ed.Public().KeyID()) {
		t.Error("an Ed25519 signing key counts as a checkpoint key")
	}
}

// TestCheckpointSM2OpenSSL has openssl verify an SM2 checkpoint's
// signature: SM2 with the default user id over "eduspace sm2 statement
// v1" ‖ 0x00 ‖ len8(purpose) ‖ purpose ‖ SM3(signed), whose SM3 openssl
// computes too.
func TestCheckpointSM2OpenSSL(t *testing.T) {
	openssl := opensslGMT(t)
	dir := t.TempDir()
	k, _ := GenerateSigningKeyFor(SM2, nil)
	data, err := SignCheckpointSM2(k, Checkpoint{Space: "city-edu", Node: "uni-a", Count: 3, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	signed, sig := data[:len(data)-sm2SignatureSize], data[len(data)-sm2SignatureSize:]
	sum, err := exec.Command(openssl, "dgst", "-sm3", "-binary", writeTemp(t, dir, "signed", signed)).Output()
	if err != nil {
		t.Fatalf("openssl dgst -sm3: %v", err)
	}
	msg := append([]byte("eduspace sm2 statement v1\x00\x0acheckpoint"), sum...)
	if !bytes.Equal(msg, sm2StatementMessage(PurposeCheckpoint, signed)) {
		t.Fatalf("statement message with openssl's SM3 differs from ours")
	}
	out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", writeTemp(t, dir, "pub.pem", sm2SPKI(t, k.Public().Bytes())),
		"-rawin", "-digest", "sm3", "-pkeyopt", "distid:"+SM2UserID, "-in", writeTemp(t, dir, "msg", msg),
		"-sigfile", writeTemp(t, dir, "sig.der", derSignature(t, sig))).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl refused the checkpoint's SM2 signature: %v\n%s", err, out)
	}
}

// gmtCredential is a credential of a node on the GM/T suite and the root
// key of its space, with an SM2 key.
func gmtCredential(t testing.TB) (*AuthorityKey, Credential) {
	t.Helper()
	a, err := GenerateAuthorityKeyFor(SuiteSM2, detRand("gmt authority"))
	if err != nil {
		t.Fatal(err)
	}
	gm := newFixture(t, SuiteSM2)
	return a, Credential{
		Space: "beijing-edu", NodeID: "uni-a", Institution: "测试大学", Role: RoleUniversity,
		KEMKeys:     []KEMKeyInfo{{ID: gm.kem.Public().KeyID(), Suite: SuiteSM2, Key: gm.kem.Public().Bytes()}},
		SigningKeys: []SigningKeyInfo{{ID: gm.signer.Public().KeyID(), Key: gm.signer.Public().Bytes()}},
		IssuedAt:    issued, Expires: issued.Add(90 * 24 * time.Hour),
	}
}

// TestCredentialSM2 checks the credentials of a space on the GM/T suite
// (CREDENTIALS.md §3.3): signed by the root's SM2 key under alg SM2,
// without pq; they parse only under that root, and a root with an SM2 key
// takes no EdDSA credential.
func TestCredentialSM2(t *testing.T) {
	a, c := gmtCredential(t)
	tok, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := jwt.NewParser().ParseUnverified(tok, &credentialClaims{})
	if err != nil || p.Header["alg"] != JWSAlgSM2 || p.Header["kid"] != a.Public().SM2().KeyID() {
		t.Fatalf("header %v, %v; want alg SM2 and the root's SM2 key id", p.Header, err)
	}
	if p.Claims.(*credentialClaims).PQ != "" {
		t.Error("an SM2 credential carries a pq claim")
	}
	now := issued.Add(time.Hour)
	got, err := ParseCredential(tok, a.Public(), "beijing-edu", now)
	if err != nil || got.NodeID != "uni-a" || got.CurrentSigningKey().Algorithm() != SM2 || got.CurrentKEMKey().Suite() != SuiteSM2 {
		t.Fatalf("ParseCredential = %+v, %v", got, err)
	}
	// Another SM2 root, or the same composite key without its SM2 half.
	other, _ := GenerateAuthorityKeyFor(SuiteSM2, detRand("other gmt authority"))
	if _, err := ParseCredential(tok, other.Public(), "beijing-edu", now); err == nil {
		t.Error("parsed under another SM2 root")
	}
	compositeOnly := AuthorityPublicKey{cv: a.Public().cv}
	if _, err := ParseCredential(tok, compositeOnly, "beijing-edu", now); err == nil {
		t.Error("an SM2 credential parsed under a root without an SM2 key")
	}
	edRoot, ec := testCredential(t)
	edTok, err := edRoot.Issue(ec)
	if err != nil {
		t.Fatal(err)
	}
	withSM2 := edRoot.Public()
	withSM2.sm2 = a.Public().SM2()
	if _, err := ParseCredential(edTok, withSM2, "city-edu", now); err == nil {
		t.Error("an EdDSA credential parsed under a root with an SM2 key")
	}
	parts := strings.Split(tok, ".")
	payload := []byte(parts[1])
	payload[12] ^= 1
	if _, err := ParseCredential(parts[0]+"."+string(payload)+"."+parts[2], a.Public(), "beijing-edu", now); err == nil {
		t.Error("a tampered SM2 credential parsed")
	}

	// Key files: 96-byte private key, public key file with a third block.
	dir := t.TempDir()
	if err := WriteAuthorityKeyFile(filepath.Join(dir, "authority.key.pem"), a); err != nil {
		t.Fatal(err)
	}
	back, err := ReadAuthorityKeyFile(filepath.Join(dir, "authority.key.pem"))
	if err != nil || !back.Equal(a) {
		t.Fatalf("authority key file round trip: %v", err)
	}
	pub := filepath.Join(dir, "authority.pub.pem")
	if err := WriteAuthorityPublicKey(pub, a.Public()); err != nil {
		t.Fatal(err)
	}
	pk, err := ReadAuthorityPublicKey(pub)
	if err != nil || !pk.Equal(a.Public()) {
		t.Fatalf("public key file round trip: %v", err)
	}
	if pk2, err := ParseAuthorityPublicKey(a.Public().Bytes()); err != nil || !pk2.Equal(a.Public()) {
		t.Errorf("ParseAuthorityPublicKey(Bytes()) = %v", err)
	}
}

// TestCredentialSM2OpenSSL has openssl verify an SM2 credential with the
// third block of authority.pub.pem, the root's SM2 key.
func TestCredentialSM2OpenSSL(t *testing.T) {
	openssl := opensslGMT(t)
	a, c := gmtCredential(t)
	tok, err := a.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub := filepath.Join(dir, "authority.pub.pem")
	if err := WriteAuthorityPublicKey(pub, a.Public()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(pub)
	var third *pem.Block
	for rest := data; ; {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		third, rest = b, r
	}
	smPub := writeTemp(t, dir, "sm2.pub.pem", pem.EncodeToMemory(third))
	dot := strings.LastIndexByte(tok, '.')
	sig, err := b64.DecodeString(tok[dot+1:])
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", smPub, "-rawin", "-digest", "sm3",
		"-pkeyopt", "distid:"+SM2UserID, "-in", writeTemp(t, dir, "input", []byte(tok[:dot])),
		"-sigfile", writeTemp(t, dir, "sig.der", derSignature(t, sig))).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl refused the SM2 credential with the root's SM2 key: %v\n%s", err, out)
	}
}
