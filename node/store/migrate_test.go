package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestDeliveriesMigration (migrations 3 and 4): a database written by a binary that stored one
// deliveries row per record reads the same rows through the deliveries
// view after migration 3, and new envelopes written in the new form read
// back one row per record with their field lists.
func TestDeliveriesMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	old, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:2] {
		if _, err := old.ExecContext(ctx, m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	type row struct{ Envelope, Subject, Level, Fields string }
	var want []row
	for e := range 3 {
		for r := range 4 {
			x := row{fmt.Sprintf("env-%d", 2-e), fmt.Sprintf("subj-%d-%d", e, r), fmt.Sprintf("L%d", 1+r%3), fmt.Sprintf("a,b,f%d", r)}
			if _, err := old.ExecContext(ctx, `INSERT INTO deliveries(subject, envelope_id, level, fields) VALUES (?, ?, ?, ?)`,
				x.Subject, x.Envelope, x.Level, x.Fields); err != nil {
				t.Fatal(err)
			}
			want = append(want, x)
		}
	}
	if _, err := old.ExecContext(ctx, `INSERT INTO outbox(id, envelope_id, recipient, kind, subject, seq, records, data, created_ms)
		VALUES (7, 'env-0', 'uni-b', 1, 'eds.s.deliver.uni-b.uni-a', 1, 4, x'00ff10', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.ExecContext(ctx, `PRAGMA user_version = 2`); err != nil {
		t.Fatal(err)
	}
	old.Close()

	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// A new envelope: two distinct field lists over three records.
	if err := db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO delivered(envelope_id, fields, items) VALUES (?, ?, ?)`, "env-new",
			`["a,b","a"]`, `[["s1","L3",0],["s2","L2",1],["s3","L3",0]]`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want = append(want, row{"env-new", "s1", "L3", "a,b"}, row{"env-new", "s2", "L2", "a"}, row{"env-new", "s3", "L3", "a,b"})

	rows, err := db.R.QueryContext(ctx, `SELECT envelope_id, subject, level, fields FROM deliveries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[row]int{}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.Envelope, &r.Subject, &r.Level, &r.Fields); err != nil {
			t.Fatal(err)
		}
		got[r]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	wantSet := map[row]int{}
	for _, r := range want {
		wantSet[r]++
	}
	if !reflect.DeepEqual(got, wantSet) {
		t.Errorf("deliveries after migration:\n got %v\nwant %v", got, wantSet)
	}
	var one string
	if err := db.R.QueryRowContext(ctx, `SELECT subject FROM deliveries WHERE subject = ?`, "subj-1-2").Scan(&one); err != nil {
		t.Errorf("select one subject: %v", err)
	}
	// Migration 4: the envelope moved to outbox_data under the row's id.
	var data []byte
	var eid string
	if err := db.R.QueryRowContext(ctx, `SELECT o.envelope_id, d.data FROM outbox o JOIN outbox_data d ON d.id = o.id`).Scan(&eid, &data); err != nil {
		t.Fatalf("outbox after migration: %v", err)
	}
	if eid != "env-0" || string(data) != "\x00\xff\x10" {
		t.Errorf("outbox after migration: %s %x", eid, data)
	}
}

// migrationWith is the index of the migration that contains s.
func migrationWith(t *testing.T, s string) int {
	t.Helper()
	for i, m := range migrations {
		if strings.Contains(m, s) {
			return i
		}
	}
	t.Fatalf("no migration contains %q", s)
	return 0
}

// TestEvidenceKindMigration: the migration that adds evidence.kind fills
// it from the entries already written, so About finds old entries too.
func TestEvidenceKindMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "node.db")
	old, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	n := migrationWith(t, "ALTER TABLE evidence ADD COLUMN kind")
	for i, m := range migrations[:n] {
		if _, err := old.ExecContext(ctx, m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	for i, kind := range []string{"decide", "export", "ingest"} {
		if _, err := old.ExecContext(ctx, `INSERT INTO evidence(seq, entry, prev_hash, hash) VALUES (?, ?, x'00', x'00')`,
			i+1, []byte(`{"seq":`+fmt.Sprint(i+1)+`,"t":1,"node":"uni-a","kind":"`+kind+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, n)); err != nil {
		t.Fatal(err)
	}
	old.Close()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var kinds string
	if err := db.R.QueryRowContext(ctx, `SELECT group_concat(kind, ',' ORDER BY seq) FROM evidence`).Scan(&kinds); err != nil || kinds != "decide,export,ingest" {
		t.Errorf("evidence.kind after migration %q (%v), want decide,export,ingest", kinds, err)
	}
}
