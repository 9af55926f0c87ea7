package timestamp_test

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto/timestamp"
)

// testdata/token.der is a token `openssl ts -reply` issued (tsatest) over
// SHA-256("eduspace checkpoint vector") at 2026-12-04T17:17:01Z, by a TSA
// whose CA is testdata/tsa-ca.pem. It verifies without openssl, and for
// ever: the TSA certificate is checked at the token's time.
func readVector(t testing.TB) ([]byte, []byte) {
	t.Helper()
	der, err := os.ReadFile("testdata/token.der")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile("testdata/tsa-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return der, ca
}

func TestVector(t *testing.T) {
	der, caPEM := readVector(t)
	ca, err := timestamp.ParseCertificates(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := timestamp.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("eduspace checkpoint vector"))
	if err := tok.Verify(digest[:], ca); err != nil {
		t.Errorf("Verify: %v", err)
	}
	want := time.Date(2026, 12, 4, 17, 17, 1, 0, time.UTC)
	if !tok.Time.Equal(want) || tok.Serial.Int64() != 2 || tok.Policy.String() != "1.3.6.1.4.1.99999.1" || tok.Nonce == nil {
		t.Errorf("token: time %s serial %s policy %s nonce %v; want %s, 2, 1.3.6.1.4.1.99999.1, a nonce",
			tok.Time, tok.Serial, tok.Policy, tok.Nonce, want)
	}
	// Every truncation is refused by Parse, never a panic.
	for i := range len(der) {
		if _, err := timestamp.Parse(der[:i]); err == nil {
			t.Fatalf("Parse of the first %d bytes: no error", i)
		}
	}
}

// FuzzParseVerify: no input makes Parse or Verify panic, and nothing but
// the vector's own bytes verifies for its digest.
func FuzzParseVerify(f *testing.F) {
	der, caPEM := readVector(f)
	ca, err := timestamp.ParseCertificates(caPEM)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add(der[:len(der)/2])
	digest := sha256.Sum256([]byte("eduspace checkpoint vector"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := timestamp.Parse(b)
		if err != nil {
			return
		}
		if tok.Verify(digest[:], ca) == nil && string(b) != string(der) {
			// Another encoding of the same signed content could verify
			// only if it carries the same signed attributes and
			// signature: the signed bytes must then be the vector's.
			t2, _ := timestamp.Parse(der)
			if !tok.Time.Equal(t2.Time) || tok.Serial.Cmp(t2.Serial) != 0 {
				t.Errorf("a different token verifies: time %s serial %s", tok.Time, tok.Serial)
			}
		}
	})
}
