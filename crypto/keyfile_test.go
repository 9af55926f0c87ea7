package crypto

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	sk, _ := GenerateSigningKey(nil)
	p := filepath.Join(dir, "signing.pem")
	if err := WriteSigningKeyFile(p, sk); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := ReadSigningKeyFile(p)
	if err != nil || !got.Equal(sk) {
		t.Fatalf("ReadSigningKeyFile: %v", err)
	}
	// Overwrite atomically, leaving no temporary files.
	sk2, _ := GenerateSigningKey(nil)
	if err := WriteSigningKeyFile(p, sk2); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadSigningKeyFile(p); !got.Equal(sk2) {
		t.Error("overwrite did not take")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the directory, want 1", len(ents))
	}

	// A file group or others can read is refused, naming the path only.
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadSigningKeyFile(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("0644 key file: got %v, want an error naming %s", err, p)
	}
	data, _ := os.ReadFile(p)
	if strings.Contains(err.Error(), string(data[30:50])) {
		t.Error("error contains file content")
	}
	os.Chmod(p, 0o640)
	if _, err := ReadKeyFile(p, pemSigningKey); err == nil {
		t.Error("0640 key file accepted")
	}
	os.Chmod(p, 0o600)
	if _, err := ReadKeyFile(p, pemAuthorityKey); err == nil {
		t.Error("wrong block type accepted")
	}
	os.WriteFile(p, append(data, "junk\n"...), 0o600)
	if _, err := ReadKeyFile(p, pemSigningKey); err == nil {
		t.Error("trailing data accepted")
	}

	for _, s := range suites {
		k, _ := GenerateKEMKey(s, nil)
		p := filepath.Join(dir, s.String()+".pem")
		if err := WriteKEMKeyFile(p, k); err != nil {
			t.Fatal(err)
		}
		got, err := ReadKEMKeyFile(p)
		if err != nil || !got.Equal(k) || got.Suite() != s || !got.Public().Equal(k.Public()) {
			t.Errorf("%s: ReadKEMKeyFile: %v", s, err)
		}
	}

	a, _ := GenerateAuthorityKey(nil)
	ap := filepath.Join(dir, "authority.pem")
	if err := WriteAuthorityKeyFile(ap, a); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAuthorityKeyFile(ap); err != nil || !got.Public().Equal(a.Public()) {
		t.Errorf("ReadAuthorityKeyFile: %v", err)
	}
	pub := filepath.Join(dir, "authority.pub.pem")
	if err := WriteAuthorityPublicKey(pub, a.Public()); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadAuthorityPublicKey(pub); err != nil || !got.Equal(a.Public()) {
		t.Errorf("ReadAuthorityPublicKey: %v", err)
	}
	if pem, _ := os.ReadFile(pub); !bytes.HasPrefix(pem, []byte("-----BEGIN PUBLIC KEY-----\n")) {
		t.Errorf("public key file:\n%s", pem)
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(openssl, "pkey", "-pubin", "-in", pub, "-noout", "-text").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("ED25519")) {
			t.Errorf("openssl cannot read the public key: %v\n%s", err, out)
		}
	}
}
