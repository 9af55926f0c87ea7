package keys

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// TestKeyGenerations: LoadKeys reads every generation, refuses readable or
// incomplete ones, and Use makes the credential's first keys current and
// opens only with KEM keys the credential lists.
func TestKeyGenerations(t *testing.T) {
	dir := t.TempDir()
	k1, err := InitKeys(dir, "uni-a", crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitKeys(dir, "uni-a", crypto.SuiteX25519); err == nil {
		t.Error("InitKeys over existing keys succeeded")
	}
	g2, err := newKeySet(dir, 2, crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Generations) != 2 || !k.KEM.Equal(g2.KEM) || !k.Generations[0].KEM.Equal(k1.KEM) {
		t.Fatalf("LoadKeys: %d generations, newest not current", len(k.Generations))
	}

	ak, err := crypto.GenerateAuthorityKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cred := func(sets ...KeySet) *crypto.Credential {
		t.Helper()
		r := requestFor("uni-a", sets)
		tok, err := ak.Issue(crypto.Credential{Space: "s", NodeID: "uni-a", Institution: "A", Role: crypto.RoleUniversity,
			KEMKeys: r.KEMKeys, SigningKeys: r.SigningKeys, CheckpointKeys: r.CheckpointKeys, IssuedAt: now, Expires: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := crypto.ParseCredential(tok, ak.Public(), "s", now)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	g1 := k.Generations[0]
	// Announced: generation 1 current, both open.
	if err := k.Use(cred(g1, g2)); err != nil {
		t.Fatal(err)
	}
	if !k.KEM.Equal(g1.KEM) || !k.Signing.Equal(g1.Signing) || !k.Checkpoint.Equal(g1.Checkpoint) {
		t.Error("announced credential: generation 1 is not current")
	}
	for _, g := range []KeySet{g1, g2} {
		if _, ok := k.KEMKey(g.KEM.Public().KeyID()); !ok {
			t.Errorf("generation %d's KEM key does not open", g.Generation)
		}
	}
	// Retired generation 1: only generation 2 opens.
	if err := k.Use(cred(g2)); err != nil {
		t.Fatal(err)
	}
	if !k.Signing.Equal(g2.Signing) {
		t.Error("retired credential: generation 2 does not sign")
	}
	if _, ok := k.KEMKey(g1.KEM.Public().KeyID()); ok {
		t.Error("a KEM key the credential does not list still opens")
	}
	// A credential for keys this node does not hold.
	other, err := newKeySet(t.TempDir(), 1, crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	// The error names the key expected, those held, and what to do.
	if err := k.Use(cred(other, g1)); err == nil || !strings.Contains(err.Error(), "KEM key "+other.KEM.Public().KeyID()+" is not among this node's keys") ||
		!strings.Contains(err.Error(), g1.KEM.Public().KeyID()) || !strings.Contains(err.Error(), "have the authority issue a credential from "+RequestFile) {
		t.Errorf("Use with foreign current keys: %v", err)
	}

	// Refused on disk: a readable key of generation 2, a generation without
	// its signing key.
	os.Chmod(filepath.Join(dir, "keys", "2", "checkpoint.pem"), 0o640)
	if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "generation 2") {
		t.Errorf("readable generation 2 key: %v", err)
	}
	os.Chmod(filepath.Join(dir, "keys", "2", "checkpoint.pem"), 0o600)
	os.Remove(filepath.Join(dir, "keys", "signing.pem"))
	if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "generation 1") {
		t.Errorf("generation 1 without its signing key: %v", err)
	}
	// Generation 1 retired whole: the node runs on generation 2.
	os.Remove(filepath.Join(dir, "keys", "kem.pem"))
	os.Remove(filepath.Join(dir, "keys", "checkpoint.pem"))
	if k, err := LoadKeys(dir); err != nil || len(k.Generations) != 1 || k.Generations[0].Generation != 2 {
		t.Errorf("after deleting generation 1: %v", err)
	}
}
