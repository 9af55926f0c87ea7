// Package timestamp is the RFC 3161 time-stamp protocol, client side: it
// builds a time-stamp request over a SHA-256 digest, reads the authority's
// response, and parses and verifies the token offline (a CMS SignedData
// whose content is a TSTInfo, RFC 5652 and RFC 3161 §2.4.2) with the
// standard library only.
//
// A token proves that the digest existed at its time, as the time-stamping
// authority (TSA) says; the TSA sees only the digest.
package timestamp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"

	_ "crypto/sha1"   // ESSCertID names the signer's certificate by SHA-1
	_ "crypto/sha512" // SHA-384 and SHA-512 signatures
)

var (
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidTSTInfo       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningCert   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 12} // ESSCertID, SHA-1 (RFC 2634)
	oidSigningCertV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47} // ESSCertIDv2 (RFC 5035)

	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	oidRSA             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// ErrNotVerified is wrapped by every error of [Token.Verify] that finds the
// token does not hold: a wrong digest, a bad signature, an untrusted signer.
var ErrNotVerified = errors.New("time-stamp token does not verify")

type messageImprint struct {
	HashAlgorithm pkix.AlgorithmIdentifier
	HashedMessage []byte
}

type timeStampReq struct {
	Version        int
	MessageImprint messageImprint
	Nonce          *big.Int `asn1:"optional"`
	CertReq        bool     `asn1:"optional"`
}

type pkiStatusInfo struct {
	Status       int
	StatusString []string       `asn1:"optional,utf8"`
	FailInfo     asn1.BitString `asn1:"optional"`
}

type timeStampResp struct {
	Status pkiStatusInfo
	Token  asn1.RawValue `asn1:"optional"`
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0"` // [0] EXPLICIT: Bytes is the content
}

type encapContentInfo struct {
	EContentType asn1.ObjectIdentifier
	EContent     []byte `asn1:"explicit,optional,tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	EncapContentInfo encapContentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

// essCertID is an ESSCertID or, with HashAlgorithm (SHA-256 when absent),
// an ESSCertIDv2: the hash of the signer's certificate.
type essCertID struct {
	CertHash     []byte
	IssuerSerial asn1.RawValue `asn1:"optional"`
}

type essCertIDv2 struct {
	HashAlgorithm pkix.AlgorithmIdentifier `asn1:"optional"`
	CertHash      []byte
	IssuerSerial  asn1.RawValue `asn1:"optional"`
}

type signingCertificate struct {
	Certs    []essCertID
	Policies asn1.RawValue `asn1:"optional"`
}

type signingCertificateV2 struct {
	Certs    []essCertIDv2
	Policies asn1.RawValue `asn1:"optional"`
}

type accuracy struct {
	Seconds int `asn1:"optional"`
	Millis  int `asn1:"optional,tag:0"`
	Micros  int `asn1:"optional,tag:1"`
}

type tstInfo struct {
	Version        int
	Policy         asn1.ObjectIdentifier
	MessageImprint messageImprint
	SerialNumber   *big.Int
	GenTime        time.Time     `asn1:"generalized"`
	Accuracy       accuracy      `asn1:"optional"`
	Ordering       bool          `asn1:"optional"`
	Nonce          *big.Int      `asn1:"optional"`
	TSA            asn1.RawValue `asn1:"optional,tag:0"`
	Extensions     asn1.RawValue `asn1:"optional,tag:1"`
}

// Request returns a DER time-stamp request (RFC 3161 §2.4.1) over a
// SHA-256 digest, asking for the TSA's certificate in the token; nonce may
// be nil.
func Request(digest []byte, nonce *big.Int) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("time-stamp request: digest of %d bytes, want SHA-256", len(digest))
	}
	return asn1.Marshal(timeStampReq{
		Version: 1,
		MessageImprint: messageImprint{
			HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidSHA256, Parameters: asn1.NullRawValue},
			HashedMessage: digest,
		},
		Nonce:   nonce,
		CertReq: true,
	})
}

// ParseResponse reads a DER time-stamp response (RFC 3161 §2.4.2) and
// returns its token, or an error saying why the TSA refused.
func ParseResponse(der []byte) ([]byte, error) {
	var resp timeStampResp
	if rest, err := asn1.Unmarshal(der, &resp); err != nil {
		return nil, fmt.Errorf("time-stamp response: %w", err)
	} else if len(rest) > 0 {
		return nil, errors.New("time-stamp response: trailing data")
	}
	if s := resp.Status.Status; s != 0 && s != 1 { // granted, grantedWithMods
		return nil, fmt.Errorf("time-stamp response: refused, status %d %q (failure bits %x)",
			s, resp.Status.StatusString, resp.Status.FailInfo.Bytes)
	}
	if len(resp.Token.FullBytes) == 0 {
		return nil, errors.New("time-stamp response: granted without a token")
	}
	return resp.Token.FullBytes, nil
}

// Token is a parsed time-stamp token. Nothing in it is verified until
// [Token.Verify] says so.
type Token struct {
	Time     time.Time     // genTime: when the TSA says it stamped the digest
	Accuracy time.Duration // zero when the token states none
	Serial   *big.Int
	Policy   asn1.ObjectIdentifier
	Hash     crypto.Hash // of the message imprint
	Digest   []byte      // the message imprint
	Nonce    *big.Int    // nil when the request had none
	// Certificates are those the token carries (the TSA's, when asked).
	Certificates []*x509.Certificate

	econtent []byte
	signer   signerInfo
}

// Parse reads a DER time-stamp token: a ContentInfo holding a SignedData
// whose content is a TSTInfo. It verifies nothing.
func Parse(der []byte) (*Token, error) {
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, fmt.Errorf("parse time-stamp token: %w", err)
	} else if len(rest) > 0 {
		return nil, errors.New("parse time-stamp token: trailing data")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("parse time-stamp token: content type %s, not SignedData", ci.ContentType)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("parse time-stamp token: signed data: %w", err)
	}
	if !sd.EncapContentInfo.EContentType.Equal(oidTSTInfo) || len(sd.EncapContentInfo.EContent) == 0 {
		return nil, errors.New("parse time-stamp token: content is not a TSTInfo")
	}
	if len(sd.SignerInfos) != 1 {
		return nil, fmt.Errorf("parse time-stamp token: %d signers, want 1", len(sd.SignerInfos))
	}
	var info tstInfo
	if rest, err := asn1.Unmarshal(sd.EncapContentInfo.EContent, &info); err != nil {
		return nil, fmt.Errorf("parse time-stamp token: TSTInfo: %w", err)
	} else if len(rest) > 0 {
		return nil, errors.New("parse time-stamp token: trailing data after TSTInfo")
	}
	if info.Version != 1 {
		return nil, fmt.Errorf("parse time-stamp token: TSTInfo version %d", info.Version)
	}
	h, err := hashOf(info.MessageImprint.HashAlgorithm.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("parse time-stamp token: message imprint: %w", err)
	}
	t := &Token{
		Time:   info.GenTime,
		Serial: info.SerialNumber,
		Policy: info.Policy,
		Hash:   h,
		Digest: info.MessageImprint.HashedMessage,
		Nonce:  info.Nonce,
		Accuracy: time.Duration(info.Accuracy.Seconds)*time.Second +
			time.Duration(info.Accuracy.Millis)*time.Millisecond +
			time.Duration(info.Accuracy.Micros)*time.Microsecond,
		econtent: sd.EncapContentInfo.EContent,
		signer:   sd.SignerInfos[0],
	}
	if len(sd.Certificates.Bytes) > 0 {
		// [0] IMPLICIT SET OF: the contents are the certificates, one after
		// another (other certificate choices are not read).
		if t.Certificates, err = x509.ParseCertificates(sd.Certificates.Bytes); err != nil {
			return nil, fmt.Errorf("parse time-stamp token: certificates: %w", err)
		}
	}
	return t, nil
}

func hashOf(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("hash algorithm %s not supported (SHA-256, -384, -512 are)", oid)
}

// signatureAlgorithm maps a SignerInfo's digest and signature algorithms
// onto x509's.
func signatureAlgorithm(digest crypto.Hash, sig asn1.ObjectIdentifier) (x509.SignatureAlgorithm, error) {
	byHash := func(a256, a384, a512 x509.SignatureAlgorithm) x509.SignatureAlgorithm {
		return map[crypto.Hash]x509.SignatureAlgorithm{crypto.SHA256: a256, crypto.SHA384: a384, crypto.SHA512: a512}[digest]
	}
	switch {
	case sig.Equal(oidRSA), sig.Equal(oidSHA256WithRSA), sig.Equal(oidSHA384WithRSA), sig.Equal(oidSHA512WithRSA):
		return byHash(x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA), nil
	case sig.Equal(oidECDSAWithSHA256), sig.Equal(oidECDSAWithSHA384), sig.Equal(oidECDSAWithSHA512), sig.Equal(oidECPublicKey):
		return byHash(x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512), nil
	case sig.Equal(oidEd25519):
		return x509.PureEd25519, nil
	}
	return 0, fmt.Errorf("signature algorithm %s not supported", sig)
}

// Verify checks the token offline: its message imprint must be the SHA-256
// digest given; its one SignerInfo must carry signed attributes whose
// content type is TSTInfo, whose message digest is the hash of the
// TSTInfo and whose signing certificate attribute (ESSCertIDv2, or
// ESSCertID) is the hash of the signer's certificate, and its signature
// over their DER (re-tagged as a SET) must verify with that certificate;
// and the certificate must be one
// of trusted, or chain to one of them through the token's certificates, be
// valid at the token's time and allow time stamping. Failures wrap
// [ErrNotVerified].
func (t *Token) Verify(digest []byte, trusted []*x509.Certificate) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrNotVerified}, a...)...)
	}
	if t.Hash != crypto.SHA256 || !bytes.Equal(t.Digest, digest) {
		return fail("it stamps another digest (%s %x), not %x", t.Hash, t.Digest, digest)
	}
	if len(trusted) == 0 {
		return fail("no TSA certificate to verify it with")
	}
	si := t.signer
	h, err := hashOf(si.DigestAlgorithm.Algorithm)
	if err != nil {
		return fail("signer: %v", err)
	}
	if len(si.SignedAttrs.FullBytes) == 0 {
		return fail("signer has no signed attributes")
	}
	set := bytes.Clone(si.SignedAttrs.FullBytes)
	set[0] = 0x31 // [0] IMPLICIT SET OF Attribute is signed as a SET OF
	var attrs []attribute
	if _, err := asn1.UnmarshalWithParams(set, &attrs, "set"); err != nil {
		return fail("signed attributes: %v", err)
	}
	var gotType, gotDigest bool
	var certHash []byte // the signing certificate attribute's
	var certHashAlg crypto.Hash
	for _, a := range attrs {
		switch {
		case a.Type.Equal(oidContentType):
			var ct asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(a.Values.Bytes, &ct); err != nil || !ct.Equal(oidTSTInfo) {
				return fail("signed content type is not TSTInfo")
			}
			gotType = true
		case a.Type.Equal(oidMessageDigest):
			var md []byte
			if _, err := asn1.Unmarshal(a.Values.Bytes, &md); err != nil {
				return fail("message digest attribute: %v", err)
			}
			hh := h.New()
			hh.Write(t.econtent)
			if !bytes.Equal(md, hh.Sum(nil)) {
				return fail("the signed message digest is not the TSTInfo's hash (content altered)")
			}
			gotDigest = true
		case a.Type.Equal(oidSigningCertV2):
			var sc signingCertificateV2
			if _, err := asn1.Unmarshal(a.Values.Bytes, &sc); err != nil || len(sc.Certs) == 0 {
				return fail("signing certificate attribute malformed")
			}
			certHash, certHashAlg = sc.Certs[0].CertHash, crypto.SHA256
			if alg := sc.Certs[0].HashAlgorithm.Algorithm; len(alg) > 0 {
				if certHashAlg, err = hashOf(alg); err != nil {
					return fail("signing certificate attribute: %v", err)
				}
			}
		case a.Type.Equal(oidSigningCert) && certHash == nil:
			var sc signingCertificate
			if _, err := asn1.Unmarshal(a.Values.Bytes, &sc); err != nil || len(sc.Certs) == 0 {
				return fail("signing certificate attribute malformed")
			}
			certHash, certHashAlg = sc.Certs[0].CertHash, crypto.SHA1
		}
	}
	if !gotType || !gotDigest {
		return fail("signed attributes lack the content type or message digest")
	}
	if certHash == nil {
		return fail("signed attributes lack the signing certificate (RFC 3161 §2.4.2 requires it)")
	}

	signer, err := t.findSigner(trusted)
	if err != nil {
		return fail("%v", err)
	}
	// The signing certificate attribute binds the signature to the one
	// certificate: another issued for the same key does not stand in.
	ch := certHashAlg.New()
	ch.Write(signer.Raw)
	if !bytes.Equal(ch.Sum(nil), certHash) {
		return fail("the signer's certificate is not the one the signing certificate attribute names")
	}
	alg, err := signatureAlgorithm(h, si.SignatureAlgorithm.Algorithm)
	if err != nil || alg == x509.UnknownSignatureAlgorithm {
		return fail("signer: %v", err)
	}
	if err := signer.CheckSignature(alg, set, si.Signature); err != nil {
		return fail("signature: %v", err)
	}
	for _, c := range trusted {
		if c.Equal(signer) {
			if !allowsTimeStamping(signer) {
				return fail("the TSA certificate does not allow time stamping")
			}
			if t.Time.Before(signer.NotBefore) || t.Time.After(signer.NotAfter) {
				return fail("the TSA certificate was not valid at %s", t.Time.UTC().Format(time.RFC3339))
			}
			return nil
		}
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range trusted {
		roots.AddCert(c)
	}
	for _, c := range t.Certificates {
		inter.AddCert(c)
	}
	if _, err := signer.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: t.Time,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
	}); err != nil {
		return fail("TSA certificate %q: %v", signer.Subject.CommonName, err)
	}
	return nil
}

func allowsTimeStamping(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageTimeStamping {
			return true
		}
	}
	return false
}

// findSigner returns the certificate the SignerInfo names, among the
// token's and the trusted ones.
func (t *Token) findSigner(trusted []*x509.Certificate) (*x509.Certificate, error) {
	sid := t.signer.SID
	match := func(c *x509.Certificate) bool {
		if sid.Class == asn1.ClassContextSpecific && sid.Tag == 0 { // subjectKeyIdentifier
			return len(c.SubjectKeyId) > 0 && bytes.Equal(c.SubjectKeyId, sid.Bytes)
		}
		var ias issuerAndSerial
		if _, err := asn1.Unmarshal(sid.FullBytes, &ias); err != nil || ias.Serial == nil {
			return false
		}
		return bytes.Equal(ias.Issuer.FullBytes, c.RawIssuer) && ias.Serial.Cmp(c.SerialNumber) == 0
	}
	for _, c := range append(append([]*x509.Certificate{}, t.Certificates...), trusted...) {
		if match(c) {
			return c, nil
		}
	}
	return nil, errors.New("the signer's certificate is neither in the token nor given")
}

// ParseCertificates reads the PEM certificates in data: the TSA's, or the
// CA's that issued it.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse TSA certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("parse TSA certificate: no PEM CERTIFICATE block")
	}
	return out, nil
}

// Client asks a TSA for tokens over HTTP (RFC 3161 §3.4).
type Client struct {
	URL  string
	HTTP *http.Client // nil: a client with a 10 s timeout
	// Trusted, when set, are the certificates every token must verify
	// under before Stamp returns it.
	Trusted []*x509.Certificate
}

// Stamp asks the TSA to stamp a SHA-256 digest, with a fresh nonce, and
// returns the token (DER) after checking it stamps that digest and nonce
// (and, with Trusted, that it verifies).
func (c *Client) Stamp(ctx context.Context, digest []byte) ([]byte, *Token, error) {
	nb := make([]byte, 8)
	if _, err := rand.Read(nb); err != nil {
		return nil, nil, err
	}
	nonce := new(big.Int).SetBytes(nb)
	req, err := Request(digest, nonce)
	if err != nil {
		return nil, nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(req))
	if err != nil {
		return nil, nil, fmt.Errorf("time-stamp request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/timestamp-query")
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return nil, nil, fmt.Errorf("time-stamp request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("time-stamp response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("time-stamp response: HTTP %s", resp.Status)
	}
	der, err := ParseResponse(body)
	if err != nil {
		return nil, nil, err
	}
	tok, err := Parse(der)
	if err != nil {
		return nil, nil, err
	}
	if tok.Hash != crypto.SHA256 || !bytes.Equal(tok.Digest, digest) {
		return nil, nil, errors.New("time-stamp response: the token stamps another digest")
	}
	if tok.Nonce == nil || tok.Nonce.Cmp(nonce) != 0 {
		return nil, nil, errors.New("time-stamp response: the token does not carry the request's nonce")
	}
	if len(c.Trusted) > 0 {
		if err := tok.Verify(digest, c.Trusted); err != nil {
			return nil, nil, err
		}
	}
	return der, tok, nil
}
