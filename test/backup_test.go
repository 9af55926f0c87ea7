package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/recovery"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
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
	s, a, b, _ := restorePair(t)
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
	restoreCopy(t, s.conf["uni-a"].DataDir, out)
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

// restorePair opens uni-a, which checkpoints every 100 ms, holding
// records(now), and uni-b.
func restorePair(t *testing.T) (s *testSpace, a, b *node.Node, data string) {
	t.Helper()
	s = newSpace(t)
	fast := func(c *node.Config) {
		c.Checkpoint.Interval = 100 * time.Millisecond
		c.Checkpoint.MaxAge = time.Hour
	}
	a = s.member("uni-a", crypto.SuiteX25519, fast)
	b = s.member("uni-b", crypto.SuiteX25519)
	data, _ = records(s.now)
	if _, err := a.Ingest(context.Background(), strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	return s, a, b, data
}

// restoreCopy puts the database copy backup in place in the stopped node's
// data directory dir, as deploy/README.md says: its WAL and shared-memory
// files removed.
func restoreCopy(t *testing.T, dir, backup string) {
	t.Helper()
	db := filepath.Join(dir, "node.db")
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(db + suffix)
	}
	copyFile(t, backup, db)
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

// TestRestoreRecover: a node restored from a copy taken before it shared
// more records, granted and withdrew consents and took a new agreement
// recovers with its peer's answer and shares again. Nothing is lost or
// stored twice at the peer, nothing withdrawn comes back, its sequences go
// on past what the peer holds (no envelope is refused as replayed), its
// evidence log verifies against its checkpoints with the lost entries
// declared, and the report counts what could not be recovered.
func TestRestoreRecover(t *testing.T) {
	ctx := context.Background()
	s, a, b, data := restorePair(t)
	study := &policy.Agreement{ID: "study", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisConsent, RecordTypes: map[string][]string{"student": {"student_id", "name", "birth_date"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, study); err != nil {
			t.Fatal(err)
		}
	}
	grant := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id := fmt.Sprintf("S%04d", i)
			if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
				Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	received := func(want int64, what string) {
		t.Helper()
		wait.Until(t, 20*time.Second, what, func() bool { st, _ := b.Status(ctx); return st.Received == want })
	}
	covered := func() bool {
		return strings.Contains(nodetest.Scrape(t, a), "\neduspace_checkpoint_age_seconds 0\n")
	}
	share := func(id string) {
		t.Helper()
		if _, err := a.Share(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	// Before the copy: five students consent and are shared.
	grant(0, 5)
	share("study")
	received(5, "5 students at uni-b")
	wait.Until(t, 20*time.Second, "uni-a's log covered by a checkpoint", covered)
	out := filepath.Join(t.TempDir(), "uni-a.db")
	if _, err := node.Backup(ctx, s.conf["uni-a"], out, time.Now()); err != nil {
		t.Fatal(err)
	}

	// After it: five more consent and are shared, one of the first
	// withdraws (uni-b erases), and a new agreement shares the grades.
	grant(5, 10)
	share("study")
	received(10, "10 students at uni-b")
	if _, err := a.WithdrawConsent(ctx, "c-S0001"); err != nil {
		t.Fatal(err)
	}
	received(9, "the withdrawn student erased at uni-b")
	agreeGrades(t, "grades", s.now, a, b)
	share("grades")
	received(36, "the grades at uni-b")
	// uni-b shares its own grades with uni-a, which the copy will not hold.
	if _, err := b.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	back := gradeAgreement("back", "uni-b", "uni-a", s.now)
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, back); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Share(ctx, "back"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "uni-b's grades at uni-a", func() bool { st, _ := a.Status(ctx); return st.Received == 27 })
	wait.Until(t, 20*time.Second, "uni-a's newer log covered by a checkpoint", covered)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	// The restore, then the node fails closed with its log frozen.
	restoreCopy(t, s.conf["uni-a"].DataDir, out)
	dbPath := filepath.Join(s.conf["uni-a"].DataDir, "node.db")
	a = s.open("uni-a", node.Env{})
	if a.Ready() {
		t.Fatal("a restored node reports ready")
	}
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err == nil || !strings.Contains(err.Error(), "restored") {
		t.Errorf("ingest into a restored node: %v; want it refused, naming the restore", err)
	}

	rep, err := a.Recover(ctx, recovery.Options{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("recover: %v (report %+v)", err, rep)
	}
	if len(rep.Peers) != 1 || rep.Peers[0].Peer != "uni-b" || len(rep.Missing) != 0 {
		t.Fatalf("peers in the report: %+v, missing %v", rep.Peers, rep.Missing)
	}
	p := rep.Peers[0]
	// Lost with the copy: the second study share and the grades share.
	if p.LostEnvelopes < 2 || p.LostRecords != 5+27 || rep.Unrecoverable.SentRecords != 32 {
		t.Errorf("shares after the copy: %d envelopes, %d records (unrecoverable %+v); want at least 2 and 32", p.LostEnvelopes, p.LostRecords, rep.Unrecoverable)
	}
	if rep.ConsentsWithdrawn != 1 || p.Erasures != 1 {
		t.Errorf("withdrawals learnt back: %d (erasures %d); want 1", rep.ConsentsWithdrawn, p.Erasures)
	}
	if rep.EvidenceLost.From == 0 || rep.EvidenceLost.To < rep.EvidenceLost.From ||
		rep.Unrecoverable.EvidenceEntries != rep.EvidenceLost.To-rep.EvidenceLost.From+1 {
		t.Errorf("evidence lost: %+v, unrecoverable %d", rep.EvidenceLost, rep.Unrecoverable.EvidenceEntries)
	}
	wait.Until(t, 20*time.Second, "uni-a ready after recovering", a.Ready)
	// What uni-b sent after the copy comes again (the agreement too must be
	// installed again: the copy lost it).
	if p.Republished.Envelopes == 0 || p.Republished.Expired != 0 {
		t.Errorf("uni-b published again %+v; want its envelope of grades, none expired", p.Republished)
	}
	if !slices.Equal(p.MissingAgreements, []string{"back", "grades"}) || rep.Unrecoverable.MissingAgreements != 2 {
		t.Errorf("agreements the copy lacks: %v (%d); want back and grades", p.MissingAgreements, rep.Unrecoverable.MissingAgreements)
	}
	// Before the agreement is back, they wait for it: retried, not
	// refused.
	retried := func() float64 {
		for _, line := range strings.Split(nodetest.Scrape(t, a), "\n") {
			if v, ok := strings.CutPrefix(line, `eduspace_messages_retried_total{consumer="deliver"} `); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	before := retried()
	wait.Until(t, 20*time.Second, "uni-b's grades waiting at uni-a for their agreement", func() bool { return retried() > before })
	if st, _ := a.Status(ctx); st.Received != 0 {
		t.Fatalf("uni-a holds %d records before the agreement is back", st.Received)
	}
	if err := a.AddAgreement(ctx, back); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 40*time.Second, "uni-b's grades at uni-a again", func() bool { st, _ := a.Status(ctx); return st.Received == 27 })
	var c policy.ConsentRecord
	if adminCall(t, a, s.conf["uni-a"].DataDir, http.MethodGet, "/v1/consents/c-S0001", "", &c); c.Withdrawn.IsZero() {
		t.Errorf("the withdrawal made after the copy: %+v; want it withdrawn again", c)
	}

	// The operator grants again the consents the copy lost and installs
	// the agreement again: what uni-b holds already is not stored twice.
	grant(5, 10)
	if err := a.AddAgreement(ctx, gradeAgreement("grades", "uni-a", "uni-b", s.now)); err != nil {
		t.Fatal(err)
	}
	share("study")
	share("grades")
	// And something new arrives, under sequence numbers uni-b has not seen.
	more := `{"type":"student","student_id":"S0100","name":"李100","gender":"男","birth_date":"2004-05-06","id_type":"resident_id","id_number":"` +
		residentID("11010120040506123") + `","religion":"none"}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	grant(100, 101)
	share("study")
	received(37, "the new student at uni-b")
	wait.Until(t, 20*time.Second, "every envelope answered", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), "\neduspace_envelopes_awaiting_receipt 0\n")
	})
	if st, _ := b.Status(ctx); st.Received != 37 {
		t.Errorf("uni-b holds %d records, want 37: shares after the copy stored twice, or lost", st.Received)
	}
	if m := nodetest.Scrape(t, b); !strings.Contains(m, "\neduspace_envelopes_refused_total{reason=\"replayed\"} 0\n") {
		t.Errorf("uni-b refused an envelope of the recovered node as replayed (report %+v)", rep)
	}

	// The log: the gap is declared, and vouched for by the checkpoint.
	wait.Until(t, 20*time.Second, "uni-a's recovered log covered by a checkpoint", covered)
	head, err := a.VerifyEvidence(ctx)
	if err != nil || len(head.Gaps) != 1 || head.Gaps[0] != rep.EvidenceLost {
		t.Errorf("uni-a's evidence after recovery: %+v, %v; want the gap %+v", head, err, rep.EvidenceLost)
	}
	db, err := sql.Open("sqlite3", "file:"+dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	signed, err := checkpoint.ReadSigned(ctx, db, "uni-a")
	if err != nil {
		t.Fatal(err)
	}
	var cps []evidence.Checkpoint
	for _, sc := range signed {
		cps = append(cps, sc.Checkpoint())
	}
	if _, err := evidence.VerifyCheckpoints(evidence.DBRows(ctx, db), cps); err != nil {
		t.Errorf("uni-a's log against its %d checkpoints: %v", len(cps), err)
	}

	// A restart finds nothing to recover.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = s.open("uni-a", node.Env{})
	if probs := a.Problems(); len(probs) != 0 {
		t.Errorf("problems after restarting the recovered node: %q", probs)
	}
}
