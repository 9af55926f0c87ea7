package timestamp_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/crypto/timestamp/tsatest"
)

// TestOpenSSLTSA stamps a digest at a local TSA run by `openssl ts
// -reply`, verifies the token here, and has `openssl ts -verify` verify it
// too.
func TestOpenSSLTSA(t *testing.T) {
	tsa := tsatest.Start(t)
	digest := sha256.Sum256([]byte("a checkpoint"))
	before := time.Now().Add(-2 * time.Second)
	c := &timestamp.Client{URL: tsa.URL, Trusted: tsa.CA}
	der, tok, err := c.Stamp(context.Background(), digest[:])
	if err != nil {
		t.Fatalf("Stamp: %v", err)
	}
	if tok.Time.Before(before) || tok.Time.After(time.Now().Add(2*time.Second)) {
		t.Errorf("token time %s, want about now", tok.Time)
	}
	if tok.Accuracy != 1500*time.Millisecond {
		t.Errorf("accuracy %s, want 1.5s", tok.Accuracy)
	}
	if len(tok.Certificates) == 0 {
		t.Errorf("token carries no certificate though the request asked for it")
	}

	// Offline, from the DER alone.
	parsed, err := timestamp.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.Verify(digest[:], tsa.CA); err != nil {
		t.Errorf("Verify under the CA: %v", err)
	}
	tsaCert, err := os.ReadFile(tsa.TSACert)
	if err != nil {
		t.Fatal(err)
	}
	own, err := timestamp.ParseCertificates(tsaCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.Verify(digest[:], own); err != nil {
		t.Errorf("Verify under the TSA's own certificate: %v", err)
	}

	// Interop: openssl verifies the token too.
	path := filepath.Join(t.TempDir(), "token.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out := tsa.OpenSSL(t, nil, "ts", "-verify", "-digest", hex.EncodeToString(digest[:]), "-in", path, "-token_in", "-CAfile", tsa.CAFile)
	if !strings.Contains(string(out), "Verification: OK") {
		t.Errorf("openssl ts -verify: %s", out)
	}

	// What must not verify.
	other := sha256.Sum256([]byte("another checkpoint"))
	otherCA := tsatest.Start(t).CA
	for _, tc := range []struct {
		name    string
		der     []byte
		digest  []byte
		trusted any
		want    string
	}{
		{"other digest", der, other[:], nil, "another digest"},
		{"other CA", der, digest[:], otherCA, "TSA certificate"},
		{"no certificate", der, digest[:], "none", "no TSA certificate"},
		{"content altered", alterTime(t, der, tok.Time), digest[:], nil, "message digest"},
		{"signature altered", flipLast(der), digest[:], nil, "signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trusted := tsa.CA
			switch v := tc.trusted.(type) {
			case string:
				trusted = nil
			case nil:
			default:
				trusted = v.([]*x509.Certificate)
			}
			p, err := timestamp.Parse(tc.der)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = p.Verify(tc.digest, trusted)
			if !errors.Is(err, timestamp.ErrNotVerified) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify: got %v, want an ErrNotVerified saying %q", err, tc.want)
			}
		})
	}
}

// alterTime changes the token's genTime by a second, in place of the
// TSTInfo the signature covers.
func alterTime(t *testing.T, der []byte, at time.Time) []byte {
	t.Helper()
	s := []byte(at.UTC().Format("20060102150405"))
	i := bytes.Index(der, s)
	if i < 0 {
		t.Fatalf("genTime %s not found in the token", s)
	}
	out := bytes.Clone(der)
	last := i + len(s) - 1
	if out[last] == '9' {
		out[last] = '8'
	} else {
		out[last]++
	}
	return out
}

// flipLast flips a bit of the token's last byte: its signature's.
func flipLast(der []byte) []byte {
	out := bytes.Clone(der)
	out[len(out)-1] ^= 1
	return out
}

// TestRequest checks the request's DER against what openssl reads from it.
func TestRequest(t *testing.T) {
	digest := sha256.Sum256([]byte("x"))
	if _, err := timestamp.Request(digest[:10], nil); err == nil {
		t.Errorf("Request with a short digest: no error")
	}
	req, err := timestamp.Request(digest[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	tsa := tsatest.Start(t)
	out := string(tsa.OpenSSL(t, req, "ts", "-query", "-in", "/dev/stdin", "-text"))
	for _, want := range []string{"Version: 1", "Hash Algorithm: sha256", "Nonce: unspecified", "Certificate required: yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl reads the request as\n%s\nwant %q in it", out, want)
		}
	}
}

// TestParseResponseRefused: a TSA's refusal is an error with its status.
func TestParseResponseRefused(t *testing.T) {
	// TimeStampResp { status { rejection(2), "bad alg" } }
	der := []byte{0x30, 0x0e, 0x30, 0x0c, 0x02, 0x01, 0x02, 0x30, 0x07, 0x0c, 0x05, 'b', 'a', 'd', 'a', 'l'}
	_, err := timestamp.ParseResponse(der)
	if err == nil || !strings.Contains(err.Error(), "status 2") {
		t.Errorf("ParseResponse of a rejection: got %v, want an error naming status 2", err)
	}
	if _, err := timestamp.ParseResponse([]byte{0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x00}); err == nil {
		t.Errorf("ParseResponse of a grant without a token: no error")
	}
}

// TestESSCertIDSHA1: a TSA that names its certificate with SHA-1
// (signingCertificate, not signingCertificateV2) issues tokens that verify.
func TestESSCertIDSHA1(t *testing.T) {
	tsa := tsatest.Start(t, tsatest.ESSCertIDSHA1())
	digest := sha256.Sum256([]byte("a checkpoint"))
	der, _, err := (&timestamp.Client{URL: tsa.URL}).Stamp(context.Background(), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	tok, err := timestamp.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Verify(digest[:], tsa.CA); err != nil {
		t.Errorf("Verify: %v", err)
	}
	path := filepath.Join(t.TempDir(), "token.der")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := tsa.OpenSSL(t, nil, "ts", "-verify", "-digest", hex.EncodeToString(digest[:]), "-in", path, "-token_in", "-CAfile", tsa.CAFile); !strings.Contains(string(out), "Verification: OK") {
		t.Errorf("openssl ts -verify: %s", out)
	}
}
