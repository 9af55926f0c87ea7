// Package tsatest runs a local RFC 3161 time-stamping authority for tests:
// a CA and a TSA certificate made with openssl, and an HTTP server on
// 127.0.0.1 that answers each request by running `openssl ts -reply`. It is
// imported by tests only.
package tsatest

import (
	"bytes"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/eduspace/eduspace/crypto/timestamp"
)

// TSA is a running local time-stamping authority.
type TSA struct {
	URL    string // where to POST requests
	Dir    string // its files: ca.pem, tsa.pem, tsa.key, openssl.cnf
	CAFile string // the CA certificate (PEM) that issued the TSA's
	CA     []*x509.Certificate
	// TSACert is the TSA's own certificate (PEM file).
	TSACert string

	mu     sync.Mutex
	served int
}

// Served is how many requests the TSA has answered with a token.
func (a *TSA) Served() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served
}

// OpenSSL runs openssl with args in the TSA's directory and returns its
// standard output, failing the test on error.
func (a *TSA) OpenSSL(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, err := run(a.Dir, stdin, args...)
	if err != nil {
		t.Fatalf("openssl %v: %v", args, err)
	}
	return out
}

func run(dir string, stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &runError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type runError struct {
	err    error
	stderr string
}

func (e *runError) Error() string { return e.err.Error() + ": " + e.stderr }

// Option changes the TSA Start runs.
type Option func(*options)

type options struct{ essAlg string }

// ESSCertIDSHA1 has the TSA name its certificate in a signingCertificate
// attribute (ESSCertID, SHA-1, RFC 2634) instead of signingCertificateV2
// with SHA-256, as older TSAs do.
func ESSCertIDSHA1() Option { return func(o *options) { o.essAlg = "sha1" } }

// Start makes a CA (ECDSA P-256) and a TSA certificate it issues (RSA 2048,
// extendedKeyUsage timeStamping, critical), and serves the TSA on
// 127.0.0.1 until the test ends. It skips the test when openssl is not on
// PATH.
func Start(t testing.TB, opts ...Option) *TSA {
	t.Helper()
	o := options{essAlg: "sha256"}
	for _, f := range opts {
		f(&o)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not on PATH: the local time-stamping authority runs `openssl ts -reply` (install Debian's openssl)")
	}
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ext.cnf", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\n")
	write("serial", "01\n")
	write("openssl.cnf", `
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = `+dir+`
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = `+o.essAlg+`
`)
	a := &TSA{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), TSACert: filepath.Join(dir, "tsa.pem")}
	a.OpenSSL(t, nil, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=eduspace test TSA CA", "-days", "30",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
	a.OpenSSL(t, nil, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
		"-subj", "/CN=eduspace test TSA")
	a.OpenSSL(t, nil, "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
		"-out", "tsa.pem", "-days", "30", "-extfile", "ext.cnf")
	pemCA, err := os.ReadFile(a.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if a.CA, err = timestamp.ParseCertificates(pemCA); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a time-stamp request", http.StatusMethodNotAllowed)
			return
		}
		req, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.mu.Lock() // openssl keeps the serial number in a file
		defer a.mu.Unlock()
		f, err := os.CreateTemp(dir, "query-*.tsq")
		if err == nil {
			_, err = f.Write(req)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer os.Remove(f.Name())
		out, err := run(dir, nil, "ts", "-reply", "-config", "openssl.cnf", "-queryfile", f.Name(), "-out", "-")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		a.served++
		w.Header().Set("Content-Type", "application/timestamp-reply")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}
