package evidence_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
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
		{"inserted entry", `UPDATE evidence SET seq = -seq WHERE seq >= 7; UPDATE evidence SET seq = 1 - seq WHERE seq < 0; INSERT INTO evidence(seq, entry, prev_hash, hash) SELECT 7, entry, prev_hash, hash FROM evidence WHERE seq = 3`, 7},
		{"reordered entries", `UPDATE evidence SET seq = -1 WHERE seq = 3; UPDATE evidence SET seq = 3 WHERE seq = 6; UPDATE evidence SET seq = 6 WHERE seq = -1`, 3},
		{"rewritten hash", `UPDATE evidence SET hash = zeroblob(32) WHERE seq = 9`, 9},
		{"truncated head", `DELETE FROM evidence WHERE seq <= 2`, 1},
		{"kind column edited, hiding an entry from About", `UPDATE evidence SET kind = 'x' || kind WHERE seq = 4`, 4},
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

// TestVerifyWithoutKindColumn: a database from before the kind column (an
// older copy under audit) verifies on its entries alone.
func TestVerifyWithoutKindColumn(t *testing.T) {
	db := chain(t, 10)
	if _, err := db.W.Exec(`DROP INDEX evidence_kind; ALTER TABLE evidence DROP COLUMN kind`); err != nil {
		t.Fatal(err)
	}
	head, err := evidence.Verify(context.Background(), db.R)
	if err != nil || head.Count != 10 {
		t.Fatalf("verify without the kind column: %+v, %v", head, err)
	}
}

// TestAboutByKind: About finds the entries of a kind that name a subject,
// oldest first, and none of another kind or subject; its query reads the
// entries of the kind through the index evidence_kind, not the whole log.
func TestAboutByKind(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	log := evidence.New("uni-a", []byte("key"), time.Now).UseDB(db)
	s1, s2 := log.Subject("s1"), log.Subject("s2")
	for _, e := range []evidence.Entry{
		{Kind: evidence.KindDecide, Reason: "permit", Subjects: []string{s1, s2}},
		{Kind: evidence.KindExport, Count: 1, Subjects: []string{s1}},
		{Kind: evidence.KindExport, Count: 2, Subjects: []string{s2}},
		{Kind: evidence.KindExport, Count: 3, Subjects: []string{s2, s1}},
	} {
		if err := db.Write(ctx, func(tx *sql.Tx) error { return log.Append(ctx, tx, e) }); err != nil {
			t.Fatal(err)
		}
	}
	got, err := log.About(ctx, evidence.KindExport, s1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 2 || got[1].Seq != 4 || got[0].Count != 1 || got[1].Count != 3 {
		t.Errorf("About(export, s1) = %+v, want entries 2 and 4", got)
	}
	if got, err := log.About(ctx, evidence.KindExport, log.Subject("s3")); err != nil || len(got) != 0 {
		t.Errorf("About(export, s3) = %+v, %v; want none", got, err)
	}
	var kinds int
	if err := db.R.QueryRowContext(ctx, `SELECT count(*) FROM evidence WHERE kind = ?`, evidence.KindExport).Scan(&kinds); err != nil || kinds != 3 {
		t.Errorf("%d entries with kind column export (%v), want 3", kinds, err)
	}

	plan, err := store.QueryPlan(ctx, db.R, evidence.QAbout, evidence.KindExport, `"x"`)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || !strings.Contains(plan[0], "USING INDEX evidence_kind (kind=?)") {
		t.Errorf("About's plan %q, want a search of evidence by the index evidence_kind and no sort", plan)
	}
}
