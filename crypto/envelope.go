package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors. Callers branch on them with errors.Is; ENVELOPE.md §6 says
// which step gives which.
var (
	ErrMalformed = errors.New("malformed envelope")
	ErrVersion   = errors.New("unsupported envelope version")
	ErrTooLarge  = errors.New("envelope too large")
	ErrSignature = errors.New("envelope signature invalid")
	ErrDecrypt   = errors.New("envelope decryption failed")
	ErrSuite     = errors.New("unknown or mismatched suite")
)

// Limits of the envelope format (ENVELOPE.md §1).
const (
	MaxEnvelopeSize = 8 << 20 // bytes, whole envelope
	MaxCount        = 100000  // records per envelope
)

// Envelope kinds (ENVELOPE.md §1).
const (
	KindRecords        uint8 = 1  // a batch of records
	KindReceipt        uint8 = 2  // a signed receipt for an envelope received
	KindErasureRequest uint8 = 3  // a request to erase a data subject's records
	KindErasureReceipt uint8 = 4  // confirmation that an erasure was done
	KindAgreement      uint8 = 5  // an agreement proposal, acceptance or revocation between two members
	KindAggregate      uint8 = 6  // a message of an aggregate round (query, secure-aggregation step, release)
	KindRecovery       uint8 = 7  // a restored node's recovery request, or a peer's answer (deploy/README.md, Backup and restore)
	KindLinkage        uint8 = 8  // a linkage evaluation request (blinded identifiers) or the evaluator's answer (node/linkage/LINKAGE.md)
	KindCatalogue      uint8 = 9  // a node's catalogue of offered datasets, published to every member (node/catalogue/CATALOGUE.md)
	KindRelease        uint8 = 10 // a dataset release's manifest, after its rows (node/release/RELEASES.md §8)
	KindProvenance     uint8 = 11 // a training-provenance declaration of an AI service (node/release/RELEASES.md §9)
)

// knownKind reports whether kind is one of the kinds above.
func knownKind(kind uint8) bool {
	return kind >= KindRecords && kind <= KindProvenance
}

const (
	magic        = "EDSE"
	version1     = 1
	version2     = 2  // version 1 and the strings legal_basis and standard
	fixedHeader  = 52 // magic through count
	sigSize      = ed25519.SignatureSize
	aeadOverhead = 16
)

// label is the domain-separation label of one use (hpke, sig) under one
// version (ENVELOPE.md §3, §4): "eduspace envelope v1 sig", and so on.
func label(version byte, use string) string {
	return "eduspace envelope v" + strconv.Itoa(int(version)) + " " + use
}

// string field limits, in header order: a version 1 header has the first
// stringsV1, a version 2 header all of them.
var stringFields = [...]struct {
	name     string
	min, max int
}{
	{"sender", 1, 128},
	{"sender_key_id", 1, 64},
	{"recipient", 1, 128},
	{"recipient_key_id", 1, 64},
	{"agreement", 0, 128},
	{"purpose", 0, 64},
	{"record_type", 0, 64},
	{"level", 0, 4},
	{"legal_basis", 0, 32},
	{"standard", 0, 64},
}

const stringsV1 = 8

// Header is the authenticated, unencrypted part of an envelope. Every field is
// visible to the transport: nothing personal belongs here.
type Header struct {
	Suite          SuiteID
	Sender         string // sender node id
	SenderKeyID    string // id of the sender's Ed25519 key that signs the envelope
	Recipient      string // recipient node id
	RecipientKeyID string // id of the recipient's KEM key the payload is sealed to
	ID             [16]byte
	Seq            uint64 // sequence number per (sender, recipient)
	// Created and Expires are encoded as Unix milliseconds; finer precision
	// is dropped.
	Created, Expires time.Time
	Agreement        string
	Purpose          string
	RecordType       string
	Count            uint32 // records inside
	Level            string // highest level inside: "", L1, L2, L3, L4, IMP or CORE
	Kind             uint8  // KindRecords, KindReceipt, ...
	// LegalBasis is the ground on which the sender discloses what is
	// inside (a records envelope: its agreement's legal basis), and
	// Standard the grading standard it classified the records with, as
	// NAME/VERSION. Either one set makes the header one of version 2
	// (ENVELOPE.md §1); both empty, of version 1.
	LegalBasis string
	Standard   string
}

// IDString returns the envelope id as 32 lowercase hex digits.
func (h Header) IDString() string { return hex.EncodeToString(h.ID[:]) }

// version is the version h is written in: the lowest that holds it.
func (h Header) version() uint8 {
	if h.LegalBasis != "" || h.Standard != "" {
		return version2
	}
	return version1
}

// strings are h's strings in header order, as many as its version has.
func (h Header) strings() []string {
	all := [...]string{h.Sender, h.SenderKeyID, h.Recipient, h.RecipientKeyID,
		h.Agreement, h.Purpose, h.RecordType, h.Level, h.LegalBasis, h.Standard}
	if h.version() == version1 {
		return all[:stringsV1]
	}
	return all[:]
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// validate checks the rules of ENVELOPE.md §1 other than the suite.
func (h Header) validate() error {
	if !knownKind(h.Kind) {
		return malformed("unknown kind %d", h.Kind)
	}
	if h.Count > MaxCount {
		return malformed("count %d above %d", h.Count, MaxCount)
	}
	if h.Kind == KindRecords && h.Count == 0 {
		return malformed("records envelope with count 0")
	}
	c, e := h.Created.UnixMilli(), h.Expires.UnixMilli()
	if h.Created.IsZero() || c < 0 {
		return malformed("created before 1970")
	}
	if e <= c {
		return malformed("expires not after created")
	}
	for i, s := range h.strings() {
		f := stringFields[i]
		if len(s) < f.min || len(s) > f.max {
			return malformed("%s length %d outside %d..%d", f.name, len(s), f.min, f.max)
		}
		if !utf8.ValidString(s) {
			return malformed("%s not UTF-8", f.name)
		}
		for _, r := range s {
			if unicode.IsControl(r) {
				return malformed("%s has a control character", f.name)
			}
		}
	}
	switch h.Level {
	case "", "L1", "L2", "L3", "L4", "IMP", "CORE":
	default:
		return malformed("unknown level")
	}
	return nil
}

func (h Header) appendTo(b []byte) []byte {
	b = append(b, magic...)
	b = append(b, h.version())
	b = binary.BigEndian.AppendUint16(b, uint16(h.Suite))
	b = append(b, h.Kind)
	b = append(b, h.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Created.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(h.Expires.UnixMilli()))
	b = binary.BigEndian.AppendUint32(b, h.Count)
	for _, s := range h.strings() {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// hpkeInfo is the HPKE info for an envelope with header, under the label
// of the header's version; the GM/T suite hashes with SM3 (§3.1).
func hpkeInfo(header []byte) []byte {
	h := headerSuite(header).NewHash()
	h.Write(header)
	return h.Sum([]byte(label(header[len(magic)], "hpke")))
}

// sigDigest is the digest the signature covers, under the label of the
// version signed names, with the hash of its suite (SM3 for the GM/T
// suite, SHA-256 for the others).
func sigDigest(signed []byte) []byte {
	h := headerSuite(signed).NewHash()
	h.Write([]byte(label(signed[len(magic)], "sig")))
	h.Write(signed)
	return h.Sum(nil)
}

// headerSuite reads the suite of an encoded header.
func headerSuite(header []byte) SuiteID {
	return SuiteID(binary.BigEndian.Uint16(header[len(magic)+1:]))
}

// Seal encrypts plaintext to the recipient key to and signs the envelope with
// signer, drawing randomness from rand (crypto/rand when nil). h.Suite must
// equal to.Suite() and signer's algorithm be the suite's
// ([SuiteID.SignatureAlgorithm]) (else ErrSuite), h.RecipientKeyID must be to's key id and
// h.SenderKeyID signer's; an invalid header gives ErrMalformed and an envelope
// above MaxEnvelopeSize gives ErrTooLarge.
func Seal(rnd io.Reader, h Header, to *KEMPublicKey, signer *SigningKey, plaintext []byte) ([]byte, error) {
	if to == nil || signer == nil {
		return nil, errors.New("seal envelope: nil key")
	}
	if h.Suite != to.Suite() {
		return nil, fmt.Errorf("seal envelope: header suite %s, key suite %s: %w", h.Suite, to.Suite(), ErrSuite)
	}
	if a := signer.Algorithm(); a != h.Suite.SignatureAlgorithm() {
		return nil, fmt.Errorf("seal envelope: suite %s is signed with %s, the signing key is %s: %w", h.Suite, h.Suite.SignatureAlgorithm(), a, ErrSuite)
	}
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	if h.RecipientKeyID != to.KeyID() {
		return nil, errors.New("seal envelope: recipient key id does not match the recipient key")
	}
	if h.SenderKeyID != signer.Public().KeyID() {
		return nil, errors.New("seal envelope: sender key id does not match the signing key")
	}
	scheme := h.Suite.scheme()
	size := fixedHeader + 2 + scheme.CiphertextSize() + 4 + len(plaintext) + aeadOverhead + sigSize
	for _, s := range h.strings() {
		size += 1 + len(s)
	}
	if size > MaxEnvelopeSize {
		return nil, fmt.Errorf("seal envelope: %d bytes: %w", size, ErrTooLarge)
	}
	if rnd == nil {
		rnd = rand.Reader
	}

	out := h.appendTo(make([]byte, 0, size))
	header := out[:len(out):len(out)]
	var enc, ct []byte
	var err error
	if h.Suite == SuiteSM2 {
		enc, ct, err = sealSM2(rnd, header, to, plaintext)
	} else {
		enc, ct, err = sealHPKE(rnd, h.Suite, header, to, plaintext)
	}
	if err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(enc)))
	out = append(out, enc...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(ct)))
	out = append(out, ct...)
	out = append(out, signer.Sign(sigDigest(out))...)
	if len(out) != size {
		return nil, errors.New("seal envelope: internal size mismatch")
	}
	return out, nil
}

// sealHPKE encrypts plaintext to to with one HPKE context (§3).
func sealHPKE(rnd io.Reader, s SuiteID, header []byte, to *KEMPublicKey, plaintext []byte) (enc, ct []byte, err error) {
	sender, err := s.hpke().NewSender(to.pk, hpkeInfo(header))
	if err != nil {
		return nil, nil, fmt.Errorf("hpke sender: %w", err)
	}
	enc, sealer, err := sender.Setup(rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke setup: %w", err)
	}
	ct, err = sealer.Seal(plaintext, header)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke seal: %w", err)
	}
	return enc, ct, nil
}

// sealSM2 encrypts plaintext to to with the GM/T suite (§3.1): a fresh
// secret SM2-encrypted to the key, SM4-GCM under the key and nonce derived
// from it.
func sealSM2(rnd io.Reader, header []byte, to *KEMPublicKey, plaintext []byte) (enc, ct []byte, err error) {
	seed := make([]byte, sm2Scheme{}.EncapsulationSeedSize())
	defer clear(seed)
	if _, err := io.ReadFull(rnd, seed); err != nil {
		return nil, nil, fmt.Errorf("sm2 randomness: %w", err)
	}
	enc, secret, err := sm2Scheme{}.EncapsulateDeterministically(to.pk, seed)
	if err != nil {
		return nil, nil, err
	}
	defer clear(secret)
	aead, nonce, err := sm4GCMKey(secret, enc, to.raw, hpkeInfo(header))
	if err != nil {
		return nil, nil, fmt.Errorf("sm4-gcm: %w", err)
	}
	return enc, aead.Seal(nil, nonce, plaintext, header), nil
}

// Envelope is a parsed envelope. Header is a decoded copy for the caller to
// read; Verify and Open work on the bytes that were parsed.
type Envelope struct {
	Header Header

	raw    []byte // whole envelope
	header []byte // raw[:end of header]
	enc    []byte
	ct     []byte
	sig    []byte
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = malformed("truncated")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// ParseEnvelope decodes an envelope strictly (ENVELOPE.md §6, step 1). It does
// not verify the signature. Errors match ErrTooLarge, ErrMalformed, ErrVersion
// or ErrSuite. The envelope refers to b, which must not change while the
// envelope is in use.
func ParseEnvelope(b []byte) (*Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return nil, fmt.Errorf("parse envelope: %d bytes: %w", len(b), ErrTooLarge)
	}
	if len(b) < len(magic)+1 || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("parse envelope: %w", malformed("bad magic"))
	}
	version := b[len(magic)]
	if version != version1 && version != version2 {
		return nil, fmt.Errorf("parse envelope: version %d: %w", version, ErrVersion)
	}
	raw := b[:len(b):len(b)]
	r := &reader{b: raw[len(magic)+1:]}
	var h Header
	h.Suite = SuiteID(r.u16())
	if r.err == nil && !h.Suite.known() {
		return nil, fmt.Errorf("parse envelope: suite %d: %w", uint16(h.Suite), ErrSuite)
	}
	h.Kind = r.u8()
	copy(h.ID[:], r.take(len(h.ID)))
	h.Seq = r.u64()
	created, expires := int64(r.u64()), int64(r.u64())
	h.Count = r.u32()
	var strs [len(stringFields)]string
	n := stringsV1
	if version == version2 {
		n = len(strs)
	}
	for i := range n {
		strs[i] = string(r.take(int(r.u8())))
	}
	if r.err != nil {
		return nil, fmt.Errorf("parse envelope: header: %w", r.err)
	}
	h.Sender, h.SenderKeyID, h.Recipient, h.RecipientKeyID = strs[0], strs[1], strs[2], strs[3]
	h.Agreement, h.Purpose, h.RecordType, h.Level = strs[4], strs[5], strs[6], strs[7]
	h.LegalBasis, h.Standard = strs[8], strs[9]
	// Each header has one encoding: version 2 only for what version 1
	// cannot hold.
	if version != h.version() {
		return nil, fmt.Errorf("parse envelope: %w", malformed("version 2 header with neither legal basis nor standard"))
	}
	if created < 0 || expires <= created {
		return nil, fmt.Errorf("parse envelope: %w", malformed("bad times"))
	}
	h.Created, h.Expires = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC()
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("parse envelope: %w", err)
	}
	e := &Envelope{Header: h, raw: raw}
	e.header = raw[: len(raw)-len(r.b) : len(raw)-len(r.b)]

	encLen := int(r.u16())
	if r.err == nil && encLen != h.Suite.scheme().CiphertextSize() {
		return nil, fmt.Errorf("parse envelope: %w", malformed("encapsulated key of %d bytes", encLen))
	}
	e.enc = r.take(encLen)
	ctLen := r.u32()
	if r.err == nil && (ctLen < aeadOverhead || uint64(ctLen) > uint64(len(r.b))) {
		return nil, fmt.Errorf("parse envelope: %w", malformed("ciphertext length %d", ctLen))
	}
	e.ct = r.take(int(ctLen))
	e.sig = r.take(sigSize)
	if r.err != nil {
		return nil, fmt.Errorf("parse envelope: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("parse envelope: %w", malformed("%d trailing bytes", len(r.b)))
	}
	return e, nil
}

// Verify checks the envelope's signature with the sender's key pub. It fails
// with ErrSignature when the signature is invalid, Header.SenderKeyID is not
// pub's key id, or pub is not of the suite's algorithm.
func (e *Envelope) Verify(pub VerifyKey) error {
	if e.Header.SenderKeyID != pub.KeyID() {
		return fmt.Errorf("verify envelope: sender key id does not match the key: %w", ErrSignature)
	}
	if want := e.Header.Suite.SignatureAlgorithm(); pub.Algorithm() != want {
		return fmt.Errorf("verify envelope: suite %s is signed with %s, the sender's key is %s: %w", e.Header.Suite, want, pub.Algorithm(), ErrSignature)
	}
	signed := e.raw[:len(e.raw)-sigSize]
	if !pub.Verify(sigDigest(signed), e.sig) {
		return fmt.Errorf("verify envelope: %w", ErrSignature)
	}
	return nil
}

// Open decrypts the payload with the recipient's private key. Call it only
// after Verify succeeded. It fails with ErrSuite when priv is of another suite
// than the envelope, and ErrDecrypt when decryption fails (wrong key, altered
// header or ciphertext).
func (e *Envelope) Open(priv *KEMPrivateKey) ([]byte, error) {
	if priv == nil {
		return nil, errors.New("open envelope: nil key")
	}
	if priv.Suite() != e.Header.Suite {
		return nil, fmt.Errorf("open envelope: envelope suite %s, key suite %s: %w", e.Header.Suite, priv.Suite(), ErrSuite)
	}
	if e.Header.Suite == SuiteSM2 {
		return e.openSM2(priv)
	}
	recv, err := e.Header.Suite.hpke().NewReceiver(priv.sk, hpkeInfo(e.header))
	if err != nil {
		return nil, fmt.Errorf("open envelope: %w", ErrDecrypt)
	}
	opener, err := recv.Setup(e.enc)
	if err != nil {
		return nil, fmt.Errorf("open envelope: hpke setup: %w", ErrDecrypt)
	}
	pt, err := opener.Open(e.ct, e.header)
	if err != nil {
		return nil, fmt.Errorf("open envelope: %w", ErrDecrypt)
	}
	return pt, nil
}

// openSM2 decrypts an envelope of the GM/T suite (§3.1).
func (e *Envelope) openSM2(priv *KEMPrivateKey) ([]byte, error) {
	secret, err := sm2Scheme{}.Decapsulate(priv.sk, e.enc)
	if err != nil {
		return nil, fmt.Errorf("open envelope: sm2 decrypt: %w", ErrDecrypt)
	}
	defer clear(secret)
	aead, nonce, err := sm4GCMKey(secret, e.enc, priv.pub.raw, hpkeInfo(e.header))
	if err != nil {
		return nil, fmt.Errorf("open envelope: %w", ErrDecrypt)
	}
	pt, err := aead.Open(nil, nonce, e.ct, e.header)
	if err != nil {
		return nil, fmt.Errorf("open envelope: %w", ErrDecrypt)
	}
	return pt, nil
}

// Size returns the envelope's length in bytes.
func (e *Envelope) Size() int { return len(e.raw) }
