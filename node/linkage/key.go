package linkage

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloudflare/circl/oprf"

	"github.com/eduspace/eduspace/crypto"
)

// Suite is the RFC 9497 suite of the space's linkage pseudonyms:
// ristretto255 with SHA-512, the suite the RFC recommends first. It has
// prime order (no cofactor to clear), 32-byte elements (a chunk of a
// request carries more of them than P-256's 33-byte points) and it blinds
// about twice as fast as P-256 in circl (LINKAGE.md, Costs).
var Suite = oprf.SuiteRistretto255

// keyDir is where an evaluator keeps its linkage keys, inside its data
// directory: one file per key, named by key id, files 0600.
const keyDir = "linkage"

// keyFile is the content of a kept linkage private key.
type keyFile struct {
	Suite   string `json:"suite"`
	Private []byte `json:"private"`
}

// KeyID names a linkage public key: "l-" and the first 8 bytes of
// SHA-256(label ‖ suite ‖ 0 ‖ key), in hex.
func KeyID(suite string, pub []byte) string {
	h := sha256.New()
	h.Write([]byte("eduspace linkage key id\x00"))
	h.Write([]byte(suite))
	h.Write([]byte{0})
	h.Write(pub)
	return "l-" + hex.EncodeToString(h.Sum(nil)[:8])
}

// GenerateKey makes a new linkage key for an evaluator whose data
// directory is dir, keeps it there (dir/linkage/<key id>.key, 0600), and
// returns its public part as a space policy names it. Keys kept before
// stay: an evaluator answers under the key the space's policy names, so a
// rotation is a new key here, then a policy naming it (LINKAGE.md, Keys).
func GenerateKey(dir, node string) (*crypto.LinkageEvaluator, error) {
	k, err := oprf.GenerateKey(Suite, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate linkage key: %w", err)
	}
	priv, err := k.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("generate linkage key: %w", err)
	}
	pub, err := k.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("generate linkage key: %w", err)
	}
	ev := &crypto.LinkageEvaluator{Node: node, Suite: Suite.Identifier(), Key: pub}
	data, err := json.Marshal(keyFile{Suite: ev.Suite, Private: priv})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, keyDir), 0o700); err != nil {
		return nil, fmt.Errorf("keep linkage key: %w", err)
	}
	if err := crypto.WriteFileBytes(keyPath(dir, KeyID(ev.Suite, pub)), data, 0o600); err != nil {
		return nil, fmt.Errorf("keep linkage key: %w", err)
	}
	return ev, nil
}

func keyPath(dir, id string) string { return filepath.Join(dir, keyDir, id+".key") }

// errNoKey is loadKey's error when the data directory holds no key with
// the id the policy names.
var errNoKey = errors.New("no linkage key with the id the space policy names")

// loadKey reads the private key of the evaluator whose data directory is
// dir that matches want, the public key its space's policy names.
func loadKey(dir string, want *crypto.LinkageEvaluator) (*oprf.PrivateKey, error) {
	if want.Suite != Suite.Identifier() {
		return nil, fmt.Errorf("linkage suite %q: this node evaluates %q", want.Suite, Suite.Identifier())
	}
	id := KeyID(want.Suite, want.Key)
	data, err := os.ReadFile(keyPath(dir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s): generate one with `eduspace linkage keygen` and have the authority name it", errNoKey, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read linkage key: %w", err)
	}
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil || kf.Suite != Suite.Identifier() {
		return nil, fmt.Errorf("linkage key %s: not a %s key file", keyPath(dir, id), Suite.Identifier())
	}
	k := new(oprf.PrivateKey)
	if err := k.UnmarshalBinary(Suite, kf.Private); err != nil {
		return nil, fmt.Errorf("linkage key %s: %w", keyPath(dir, id), err)
	}
	pub, err := k.Public().MarshalBinary()
	if err != nil || string(pub) != string(want.Key) {
		return nil, fmt.Errorf("linkage key %s: does not match the space policy's key", keyPath(dir, id))
	}
	return k, nil
}

// publicKey parses the evaluator's public key from the space policy.
func publicKey(ev *crypto.LinkageEvaluator) (*clientKey, error) {
	if ev.Suite != Suite.Identifier() {
		return nil, fmt.Errorf("linkage suite %q in the space policy: this node speaks %q", ev.Suite, Suite.Identifier())
	}
	pk := new(oprf.PublicKey)
	if err := pk.UnmarshalBinary(Suite, ev.Key); err != nil {
		return nil, fmt.Errorf("linkage key in the space policy: %w", err)
	}
	return newClientKey(pk)
}

// DefaultEpoch is the epoch of a calendar year.
func DefaultEpoch(year int) string { return fmt.Sprintf("%04d", year) }

// Info is the POPRF public input of a purpose and an epoch:
// "eduspace linkage v1" ‖ 0 ‖ purpose ‖ 0 ‖ epoch. Different info, different
// pseudonyms for the same identifier, under the same key.
func Info(purpose, epoch string) []byte {
	return []byte("eduspace linkage v1\x00" + purpose + "\x00" + epoch)
}

// pseudonymOf derives the 32-byte pseudonym from a POPRF output.
func pseudonymOf(output []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("eduspace linkage pseudonym v1\x00"))
	h.Write(output)
	var p [32]byte
	h.Sum(p[:0])
	return p
}

// publicFile is the file `eduspace linkage keygen` writes for the
// authority: the evaluator, the suite and the public key (base64 in JSON),
// with its key id for the operators to compare.
type publicFile struct {
	Node  string `json:"node"`
	Suite string `json:"suite"`
	Key   []byte `json:"key"`
	KeyID string `json:"key_id"`
}

// WritePublic writes ev's public part to path for the authority.
func WritePublic(path string, ev *crypto.LinkageEvaluator) error {
	data, err := json.MarshalIndent(publicFile{Node: ev.Node, Suite: ev.Suite, Key: ev.Key, KeyID: KeyID(ev.Suite, ev.Key)}, "", "  ")
	if err != nil {
		return err
	}
	if err := crypto.WriteFileBytes(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write linkage public key: %w", err)
	}
	return nil
}

// ReadPublic reads a file WritePublic wrote, checking that the key parses
// and that its key id is the one written beside it.
func ReadPublic(path string) (*crypto.LinkageEvaluator, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read linkage public key: %w", err)
	}
	var pf publicFile
	if err := json.Unmarshal(data, &pf); err != nil {
		return nil, fmt.Errorf("linkage public key %s: not the JSON `eduspace linkage keygen` writes: %w", path, err)
	}
	ev := &crypto.LinkageEvaluator{Node: pf.Node, Suite: pf.Suite, Key: pf.Key}
	if _, err := publicKey(ev); err != nil {
		return nil, fmt.Errorf("linkage public key %s: %w", path, err)
	}
	if KeyID(ev.Suite, ev.Key) != pf.KeyID {
		return nil, fmt.Errorf("linkage public key %s: key id %s does not match the key (%s)", path, pf.KeyID, KeyID(ev.Suite, ev.Key))
	}
	return ev, nil
}
