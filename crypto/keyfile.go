package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// PEM block types of key files (ENVELOPE.md §9).
const (
	pemSigningKey   = "EDUSPACE SIGNING KEY"
	pemSM2Signing   = "EDUSPACE SM2 SIGNING KEY"
	pemAuthorityKey = "EDUSPACE AUTHORITY KEY"
	pemCompositeKey = "EDUSPACE COMPOSITE KEY"
	pemPublicKey    = "PUBLIC KEY"
	maxKeyFileSize  = 64 << 10
)

// WriteKeyFile writes der as one PEM block of type blockType to path with
// mode 0600, atomically: a temporary file in the same directory is written,
// synced and renamed over path.
func WriteKeyFile(path, blockType string, der []byte) error {
	return WriteFileBytes(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600)
}

// WriteFile writes a file so that a crash at any instant leaves either the
// old file or the new one whole: write fills a temporary file in the same
// directory, which is given mode, synced and renamed over path, and the
// directory is synced. Key files, credentials, revocation lists and
// evidence exports are all written through it.
func WriteFile(path string, mode os.FileMode, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := write(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Make the rename durable; some file systems cannot sync a directory,
	// and the file itself is already synced, so a failure here is ignored.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// WriteFileBytes is WriteFile of data.
func WriteFileBytes(path string, data []byte, mode os.FileMode) error {
	return WriteFile(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// ReadKeyFile reads a PEM key file holding exactly one block of type
// blockType and returns its bytes. It refuses a file that is not a regular
// file or that group or others may access (any of mode 0077).
func ReadKeyFile(path, blockType string) ([]byte, error) {
	return readPEMFile(path, blockType, true)
}

func readPEMFile(path, blockType string, private bool) ([]byte, error) {
	blocks, err := readPEMBlocks(path, blockType, 1, private)
	if err != nil {
		return nil, err
	}
	return blocks[0], nil
}

// readPEMBlocks reads a PEM file holding exactly n blocks, all of type
// blockType and without headers, and returns their bytes.
func readPEMBlocks(path, blockType string, n int, private bool) ([][]byte, error) {
	return readPEMBlocksRange(path, blockType, n, n, private)
}

// readPEMBlocksRange reads a PEM file holding min to max blocks, all of
// type blockType and without headers, and returns their bytes.
func readPEMBlocksRange(path, blockType string, min, max int, private bool) ([][]byte, error) {
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
	var out [][]byte
	rest := data
	for i := range max {
		block, rest2 := pem.Decode(rest)
		if i >= min && block == nil {
			break
		}
		rest = rest2
		if block == nil || block.Type != blockType {
			want := strconv.Itoa(min)
			if max > min {
				want += " to " + strconv.Itoa(max)
			}
			return nil, fmt.Errorf("read key file %s: want %s PEM blocks of type %q, found %d", path, want, blockType, len(out))
		}
		if len(block.Headers) != 0 {
			return nil, fmt.Errorf("read key file %s: unexpected PEM headers", path)
		}
		out = append(out, block.Bytes)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("read key file %s: data after the PEM block", path)
	}
	return out, nil
}

// WriteSigningKeyFile writes a node signing key to path (mode 0600); the
// PEM block type names SM2 keys.
func WriteSigningKeyFile(path string, k *SigningKey) error {
	b, _ := k.MarshalBinary()
	defer clear(b)
	if k.Algorithm() == SM2 {
		return WriteKeyFile(path, pemSM2Signing, b)
	}
	return WriteKeyFile(path, pemSigningKey, b)
}

// ReadSigningKeyFile reads a node signing key written by
// [WriteSigningKeyFile], Ed25519 or SM2.
func ReadSigningKeyFile(path string) (*SigningKey, error) {
	b, err := ReadKeyFile(path, pemSigningKey)
	parse := ParseSigningKey
	if err != nil {
		var err2 error
		if b, err2 = ReadKeyFile(path, pemSM2Signing); err2 != nil {
			return nil, errors.Join(err, err2)
		}
		parse = ParseSM2SigningKey
	}
	defer clear(b)
	k, err := parse(b)
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
// any suite.
func ReadKEMKeyFile(path string) (*KEMPrivateKey, error) {
	var errs []error
	for _, s := range knownSuites {
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

// WriteCompositeKeyFile writes a composite private key to path (mode 0600).
func WriteCompositeKeyFile(path string, k *CompositeKey) error {
	b, err := k.MarshalBinary()
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	defer clear(b)
	return WriteKeyFile(path, pemCompositeKey, b)
}

// ReadCompositeKeyFile reads a composite private key written by
// [WriteCompositeKeyFile].
func ReadCompositeKeyFile(path string) (*CompositeKey, error) {
	b, err := ReadKeyFile(path, pemCompositeKey)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	k, err := ParseCompositeKey(b)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	return k, nil
}

// oidMLDSA65 is id-ml-dsa-65 (RFC 9881).
var oidMLDSA65 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 3, 18}

// oidECPublicKey is id-ecPublicKey (RFC 5480) and oidSM2 the SM2 curve
// (GM/T 0006): together the algorithm of an SM2 SubjectPublicKeyInfo.
var (
	oidECPublicKey = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidSM2         = asn1.ObjectIdentifier{1, 2, 156, 10197, 1, 301}
)

type subjectPublicKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// WriteAuthorityPublicKey writes the root public key to path, mode 0644,
// atomically, as two PEM "PUBLIC KEY" blocks (X.509 SubjectPublicKeyInfo):
// first the Ed25519 key, which openssl and JOSE libraries read to verify
// credentials' EdDSA signatures, then the ML-DSA-65 key (RFC 9881 encoding:
// algorithm id-ml-dsa-65 without parameters, the 1952-byte key as the bit
// string), and for a space on the GM/T suite a third, the SM2 key
// (id-ecPublicKey with the SM2 curve, the 65-byte uncompressed point).
func WriteAuthorityPublicKey(path string, p AuthorityPublicKey) error {
	if p.IsZero() {
		return fmt.Errorf("write key file %s: no key", path)
	}
	edDER, err := x509.MarshalPKIXPublicKey(p.Ed25519())
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	mlRaw := p.Composite().Bytes()[ed25519.PublicKeySize:]
	mlDER, err := asn1.Marshal(subjectPublicKeyInfo{
		Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidMLDSA65},
		PublicKey: asn1.BitString{Bytes: mlRaw, BitLength: 8 * len(mlRaw)},
	})
	if err != nil {
		return fmt.Errorf("write key file %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: edDER})
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: mlDER})...)
	if sm := p.SM2(); !sm.IsZero() {
		params, _ := asn1.Marshal(oidSM2)
		smDER, err := asn1.Marshal(subjectPublicKeyInfo{
			Algorithm: pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey, Parameters: asn1.RawValue{FullBytes: params}},
			PublicKey: asn1.BitString{Bytes: sm.Bytes(), BitLength: 8 * sm2PublicKeySize},
		})
		if err != nil {
			return fmt.Errorf("write key file %s: %w", path, err)
		}
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: smDER})...)
	}
	return WriteFileBytes(path, data, 0o644)
}

// ReadAuthorityPublicKey reads a root public key written by
// [WriteAuthorityPublicKey]. It requires the two blocks, Ed25519 first and
// ML-DSA-65 second, then at most the SM2 block, without headers and with
// nothing after them.
func ReadAuthorityPublicKey(path string) (AuthorityPublicKey, error) {
	blocks, err := readPEMBlocksRange(path, pemPublicKey, 2, 3, false)
	if err != nil {
		return AuthorityPublicKey{}, err
	}
	pub, err := x509.ParsePKIXPublicKey(blocks[0])
	if err != nil {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: first block: %w", path, err)
	}
	edPub, ok := pub.(ed25519.PublicKey)
	if !ok {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: first block is not an Ed25519 public key", path)
	}
	var spki subjectPublicKeyInfo
	rest, err := asn1.Unmarshal(blocks[1], &spki)
	if err != nil || len(rest) != 0 {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: second block is not a SubjectPublicKeyInfo", path)
	}
	if !spki.Algorithm.Algorithm.Equal(oidMLDSA65) || len(spki.Algorithm.Parameters.FullBytes) != 0 ||
		spki.PublicKey.BitLength != 8*len(spki.PublicKey.Bytes) {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: second block is not an ML-DSA-65 public key", path)
	}
	raw := append(append([]byte(nil), edPub...), spki.PublicKey.Bytes...)
	if len(blocks) == 3 {
		var sm subjectPublicKeyInfo
		var curve asn1.ObjectIdentifier
		rest, err := asn1.Unmarshal(blocks[2], &sm)
		if err == nil && len(rest) == 0 {
			rest, err = asn1.Unmarshal(sm.Algorithm.Parameters.FullBytes, &curve)
		}
		if err != nil || len(rest) != 0 || !sm.Algorithm.Algorithm.Equal(oidECPublicKey) || !curve.Equal(oidSM2) ||
			sm.PublicKey.BitLength != 8*len(sm.PublicKey.Bytes) || len(sm.PublicKey.Bytes) != sm2PublicKeySize {
			return AuthorityPublicKey{}, fmt.Errorf("read key file %s: third block is not an SM2 public key", path)
		}
		raw = append(raw, sm.PublicKey.Bytes...)
	}
	p, err := ParseAuthorityPublicKey(raw)
	if err != nil {
		return AuthorityPublicKey{}, fmt.Errorf("read key file %s: %w", path, err)
	}
	return p, nil
}
