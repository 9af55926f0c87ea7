package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// PEM block types of key files (ENVELOPE.md §9).
const (
	pemSigningKey   = "EDUSPACE SIGNING KEY"
	pemAuthorityKey = "EDUSPACE AUTHORITY KEY"
	pemPublicKey    = "PUBLIC KEY"
	maxKeyFileSize  = 64 << 10
)

// WriteKeyFile writes der as one PEM block of type blockType to path with
// mode 0600, atomically: a temporary file in the same directory is written,
// synced and renamed over path.
func WriteKeyFile(path, blockType string, der []byte) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	// Make the rename durable; some file systems cannot sync a directory,
	// and the file itself is already synced, so a failure here is ignored.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ReadKeyFile reads a PEM key file holding exactly one block of type
// blockType and returns its bytes. It refuses a file that is not a regular
// file or that group or others may access (any of mode 0077).
func ReadKeyFile(path, blockType string) ([]byte, error) {
	return readPEMFile(path, blockType, true)
}

func readPEMFile(path, blockType string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read key file %s: not a regular file", path)
	}
	if private && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read key file %s: mode %04o lets group or others access it, want 0600", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("read key file %s: larger than %d bytes", path, maxKeyFileSize)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != blockType {
		return nil, fmt.Errorf("read key file %s: no PEM block of type %q", path, blockType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read key file %s: data after the PEM block", path)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("read key file %s: unexpected PEM headers", path)
	}
	return block.Bytes, nil
}

// WriteSigningKeyFile writes a node signing key to path (mode 0600).
func WriteSigningKeyFile(path string, k *SigningKey) error {
	b, _ := k.MarshalBinary()
	defer clear(b)
	return WriteKeyFile(path, pemSigningKey, b)
}

// ReadSigningKeyFile reads a node signing key written by [WriteSigningKeyFile].
func ReadSigningKeyFile(path string) (*SigningKey, error) {
	b, err := ReadKeyFile(path, pemSigningKey)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	k, err := ParseSigningKey(b)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKEMKeyFile writes a KEM private key to path (mode 0600); the PEM block
// type names the suite.
func WriteKEMKeyFile(path string, k *KEMPrivateKey) error {
	b, err := k.MarshalBinary()
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	defer clear(b)
	return WriteKeyFile(path, k.Suite().pemType(), b)
}

// ReadKEMKeyFile reads a KEM private key written by [WriteKEMKeyFile], of
// either suite.
func ReadKEMKeyFile(path string) (*KEMPrivateKey, error) {
	var errs []error
	for _, s := range []SuiteID{SuiteXWing, SuiteX25519} {
		b, err := ReadKeyFile(path, s.pemType())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defer clear(b)
		k, err := ParseKEMPrivateKey(s, b)
		if err != nil {
			return nil, fmt.Errorf("read key file %s: %w", path, err)
		}
		return k, nil
	}
	return nil, errors.Join(errs...)
}

// WriteAuthorityKeyFile writes the authority root key to path (mode 0600).
func WriteAuthorityKeyFile(path string, a *AuthorityKey) error {
	b, _ := a.MarshalBinary()
	defer clear(b)
	return WriteKeyFile(path, pemAuthorityKey, b)
}

// ReadAuthorityKeyFile reads the authority root key written by
// [WriteAuthorityKeyFile].
func ReadAuthorityKeyFile(path string) (*AuthorityKey, error) {
	b, err := ReadKeyFile(path, pemAuthorityKey)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	a, err := ParseAuthorityKey(b)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return a, nil
}

// WriteAuthorityPublicKey writes the root public key to path as a PEM
// "PUBLIC KEY" block (X.509 SubjectPublicKeyInfo, Ed25519), mode 0644,
// atomically.
func WriteAuthorityPublicKey(path string, p AuthorityPublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(p.Bytes()))
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), 0o644)
}

// ReadAuthorityPublicKey reads a root public key written by
// [WriteAuthorityPublicKey] (or any PEM SubjectPublicKeyInfo of an Ed25519
// key, such as openssl's).
func ReadAuthorityPublicKey(path string) (AuthorityPublicKey, error) {
	der, err := readPEMFile(path, pemPublicKey, false)
	if err != nil {
		return AuthorityPublicKey{}, err
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: %w", path, err)
	}
	edPub, ok := pub.(ed25519.PublicKey)
	if !ok {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: not an Ed25519 public key", path)
	}
	return ParseAuthorityPublicKey(edPub)
}
