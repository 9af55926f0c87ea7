package evidence_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// chain builds a database with n entries.
func chain(t *testing.T, n int) *store.DB {
	t.Helper()
	ctx := context.Background()
	db := openDB(t)
	clock := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	log := evidence.New("uni-a", []byte("0123456789abcdef0123456789abcdef"), func() time.Time { return clock })
	for i := 0; i < n; i++ {
		err := db.Write(ctx, func(tx *sql.Tx) error {
			return log.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDecide, Reason: "permit", Count: i,
				Subjects: []string{log.Subject("2023010001")}})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func TestVerifyIntact(t *testing.T) {
	db := chain(t, 10)
	head, err := evidence.Verify(context.Background(), db.R)
	if err != nil || head.Count != 10 {
		t.Fatalf("got %d entries, %v; want 10 and nil", head.Count, err)
	}
}

func TestSubjectIsKeyedHash(t *testing.T) {
	a := evidence.New("n", []byte("key-a"), time.Now)
	b := evidence.New("n", []byte("key-b"), time.Now)
	if a.Subject("2023010001") == b.Subject("2023010001") || a.Subject("2023010001") != a.Subject("2023010001") {
		t.Error("subject hashes must be stable per key and differ between keys")
	}
	if len(a.Subject("x")) != 32 {
		t.Errorf("subject hash length %d, want 32 hex characters", len(a.Subject("x")))
	}
}

// TestTamperingDetected edits the table the way an attacker with write
// access to the database could, and expects the first bad entry named.
func TestTamperingDetected(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sql     string
		wantSeq int64
	}{
		{"edited entry", `UPDATE evidence SET entry = replace(entry, '"permit"', '"deny"') WHERE seq = 4`, 4},
		{"deleted entry", `DELETE FROM evidence WHERE seq = 5`, 5},
		{"inserted entry", `UPDATE evidence SET seq = -seq WHERE seq >= 7; UPDATE evidence SET seq = 1 - seq WHERE seq < 0; INSERT INTO evidence SELECT 7, entry, prev_hash, hash FROM evidence WHERE seq = 3`, 7},
		{"reordered entries", `UPDATE evidence SET seq = -1 WHERE seq = 3; UPDATE evidence SET seq = 3 WHERE seq = 6; UPDATE evidence SET seq = 6 WHERE seq = -1`, 3},
		{"rewritten hash", `UPDATE evidence SET hash = zeroblob(32) WHERE seq = 9`, 9},
		{"truncated head", `DELETE FROM evidence WHERE seq <= 2`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := chain(t, 10)
			if _, err := db.W.Exec(tc.sql); err != nil {
				t.Fatal(err)
			}
			_, err := evidence.Verify(context.Background(), db.R)
			var be *evidence.BrokenError
			if !errors.As(err, &be) || be.Seq != tc.wantSeq {
				t.Fatalf("got %v, want broken at entry %d", err, tc.wantSeq)
			}
		})
	}
}
