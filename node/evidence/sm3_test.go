package evidence_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// appendN appends n entries to db through log.
func appendN(t *testing.T, db *store.DB, log *evidence.Log, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			return log.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDecide, Reason: "permit", Count: i})
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func openDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestChainSM3: the log of a node on the GM/T suite hashes its chain with
// SM3, starting from the SM3 genesis; it verifies, says so, and tampering
// is caught as in a SHA-256 chain.
func TestChainSM3(t *testing.T) {
	db := openDB(t)
	log := evidence.New("uni-a", []byte("key"), time.Now).UseDB(db).ForSuite(crypto.SuiteSM2)
	appendN(t, db, log, 5)
	head, err := evidence.Verify(context.Background(), db.R)
	if err != nil || head.Count != 5 || head.Algorithm != "SM3" {
		t.Fatalf("verify: %+v, %v; want 5 entries of an SM3 chain", head, err)
	}
	rs := rowsOf(t, db)
	g := crypto.SuiteSM2.NewHash()
	g.Write([]byte("eduspace evidence chain v1 sm3"))
	if !bytes.Equal(rs[0].PrevHash, g.Sum(nil)) {
		t.Errorf("entry 1's prev_hash %x, want the SM3 genesis", rs[0].PrevHash)
	}
	for _, r := range rs {
		h := crypto.SuiteSM2.NewHash()
		h.Write(r.PrevHash)
		h.Write(r.Entry)
		if !bytes.Equal(r.Hash, h.Sum(nil)) {
			t.Errorf("entry %d: hash is not SM3(prev ‖ entry)", r.Seq)
		}
	}
	if _, err := db.W.Exec(`UPDATE evidence SET entry = replace(entry, 'permit', 'permiT') WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	var be *evidence.BrokenError
	if _, err := evidence.Verify(context.Background(), db.R); !errors.As(err, &be) || be.Seq != 3 {
		t.Errorf("entry 3 altered: %v, want broken at 3", err)
	}
}

// TestChainKeepsItsAlgorithm: a log that starts with one algorithm goes on
// with it whatever suite the node later has, so old SHA-256 logs stay
// verifiable; a genesis of neither algorithm is refused.
func TestChainKeepsItsAlgorithm(t *testing.T) {
	db := openDB(t)
	appendN(t, db, evidence.New("uni-a", []byte("key"), time.Now).UseDB(db), 3)
	appendN(t, db, evidence.New("uni-a", []byte("key"), time.Now).UseDB(db).ForSuite(crypto.SuiteSM2), 3)
	head, err := evidence.Verify(context.Background(), db.R)
	if err != nil || head.Count != 6 || head.Algorithm != "SHA-256" {
		t.Fatalf("verify: %+v, %v; want 6 entries of a SHA-256 chain", head, err)
	}
	if _, err := db.W.Exec(`UPDATE evidence SET prev_hash = zeroblob(31) || x'01' WHERE seq = 1`); err != nil {
		t.Fatal(err)
	}
	var be *evidence.BrokenError
	if _, err := evidence.Verify(context.Background(), db.R); !errors.As(err, &be) || be.Seq != 1 {
		t.Errorf("entry 1 with an unknown genesis: %v, want broken at 1", err)
	}
	err = db.Write(context.Background(), func(tx *sql.Tx) error {
		return evidence.New("uni-a", []byte("key"), time.Now).UseDB(db).Append(context.Background(), tx, evidence.Entry{Kind: evidence.KindDecide})
	})
	if err == nil {
		t.Error("appended to a chain whose entry 1 starts no known chain")
	}
}

// TestChainSM3OpenSSL has an independent implementation, openssl, compute
// the SM3 links of a chain: entry n's hash is SM3(prev_hash ‖ entry).
func TestChainSM3OpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH: cannot check the SM3 chain with an independent implementation (Debian: apt-get install openssl)")
	}
	if out, err := exec.Command(openssl, "list", "-digest-algorithms").CombinedOutput(); err != nil || !bytes.Contains(out, []byte("SM3")) {
		t.Skipf("openssl list -digest-algorithms names no SM3 (%v): an openssl 3 with SM3 is needed", err)
	}
	db := openDB(t)
	appendN(t, db, evidence.New("uni-a", []byte("key"), time.Now).UseDB(db).ForSuite(crypto.SuiteSM2), 3)
	dir := t.TempDir()
	for _, r := range rowsOf(t, db) {
		in := filepath.Join(dir, "link")
		if err := os.WriteFile(in, append(bytes.Clone(r.PrevHash), r.Entry...), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "dgst", "-sm3", "-binary", in).Output()
		if err != nil {
			t.Fatalf("openssl dgst -sm3: %v", err)
		}
		if !bytes.Equal(out, r.Hash) {
			t.Errorf("entry %d: openssl SM3 %x, the chain has %x", r.Seq, out, r.Hash)
		}
	}
}
