package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/evidence"
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
	ag := gradeAgreement("backup", "uni-a", "uni-b", s.now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
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
