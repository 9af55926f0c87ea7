package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/test/wait"
)

// TestBackupOnline: `node backup` copies a running node's database while
// it exchanges: the copy opens, its evidence chain verifies, and its
// manifest says what it holds; an existing file is never overwritten.
func TestBackupOnline(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := agreeGrades(t, "backup", s.now, a, b)
	if _, err := a.Share(ctx, ag.ID); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 27 })

	out := filepath.Join(t.TempDir(), "uni-a.db")
	m, err := node.Backup(ctx, s.conf["uni-a"], out, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Node != "uni-a" || m.Records != st.Records || m.Evidence.Count == 0 || m.Evidence.Count > st.EvidenceEntries {
		t.Errorf("manifest %+v; node holds %d records, %d evidence entries", m, st.Records, st.EvidenceEntries)
	}
	if len(m.SeqOut) == 0 || m.Schema == 0 {
		t.Errorf("manifest lacks sequence numbers or schema: %+v", m)
	}
	var onDisk node.BackupManifest
	raw, err := os.ReadFile(out + node.ManifestSuffix)
	if err != nil || json.Unmarshal(raw, &onDisk) != nil || onDisk.Evidence != m.Evidence || onDisk.Database != "uni-a.db" {
		t.Errorf("manifest file: %s, %v", raw, err)
	}
	db, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	head, err := evidence.Verify(ctx, db)
	if err != nil || head.Count != m.Evidence.Count {
		t.Errorf("the copy's evidence: %+v, %v; manifest says %d entries", head, err, m.Evidence.Count)
	}
	if _, err := node.Backup(ctx, s.conf["uni-a"], out, time.Now()); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a backup over an existing file: %v; want it refused", err)
	}
}

// TestRestoreFromOlderCopyDetected: a node whose database is replaced by
// a backup older than its newest published checkpoint sees it at start,
// by the checkpoint the space holds: it fails closed, says why, and
// publishes no checkpoint that would contradict the space's.
func TestRestoreFromOlderCopyDetected(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	fast := func(c *node.Config) {
		c.Checkpoint.Interval = 100 * time.Millisecond
		c.Checkpoint.MaxAge = time.Hour
	}
	a := s.member("uni-a", crypto.SuiteX25519, fast)
	b := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	covered := func() bool {
		return strings.Contains(nodetest.Scrape(t, a), "\neduspace_checkpoint_age_seconds 0\n")
	}
	wait.Until(t, 20*time.Second, "uni-a's log covered by a checkpoint", covered)
	out := filepath.Join(t.TempDir(), "uni-a.db")
	m, err := node.Backup(ctx, s.conf["uni-a"], out, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// After the backup: an exchange, checkpointed on the space.
	ag := agreeGrades(t, "after-backup", s.now, a, b)
	if _, err := a.Share(ctx, ag.ID); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 27 })
	wait.Until(t, 20*time.Second, "uni-a's newer log covered by a checkpoint", covered)
	if st, _ := a.Status(ctx); st.EvidenceEntries <= m.Evidence.Count {
		t.Fatalf("uni-a's log has %d entries, the backup %d: nothing happened after it", st.EvidenceEntries, m.Evidence.Count)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// Restore the older copy, as an operator would with the node stopped.
	dbPath := filepath.Join(s.conf["uni-a"].DataDir, "node.db")
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(dbPath + suffix)
	}
	copyFile(t, out, dbPath)
	a = s.open("uni-a", node.Env{})
	probs := a.Problems()
	if len(probs) == 0 || !strings.Contains(probs[0], "restored from an older copy") {
		t.Fatalf("problems after the restore: %q; want the restore named", probs)
	}
	if a.Ready() {
		t.Error("a node restored from an older copy reports ready")
	}
	if m := nodetest.Scrape(t, a); !strings.Contains(m, "\neduspace_sending_blocked 1\n") {
		t.Error("a node restored from an older copy does not report sending blocked")
	}
	if code, detail := readyz(t, a); code != http.StatusServiceUnavailable || !strings.Contains(detail, "restored from an older copy") {
		t.Errorf("/readyz after the restore: %d (%s)", code, detail)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
