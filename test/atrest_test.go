package test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// TestNoPersonalValueAtRest: with storage.encrypt (the default) neither
// the provider's nor the recipient's database files hold a student's
// number, name or resident ID in clear, although the agreement sends the
// student number in clear (credit transfer asks for it) and both nodes
// hold the records; and what was held is read back whole (the export).
func TestNoPersonalValueAtRest(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := gradeAgreement("credit-rest", "uni-a", "uni-b", s.now)
	ag.RecordTypes["student"] = []string{"student_id", "name"}
	ag.Transforms = map[string]policy.Transform{"student_id": policy.TransformKeep, "name": policy.TransformKeep}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	var in strings.Builder
	var secrets []string
	const n = 40
	for i := range n {
		id, name := fmt.Sprintf("ZX%08d", 73100000+i), fmt.Sprintf("欧阳静%d号", i)
		resident := residentID(fmt.Sprintf("110101199%d0101%03d", i%10, 100+i))
		secrets = append(secrets, id, name, resident)
		fmt.Fprintf(&in, `{"type":"student","student_id":%q,"name":%q,"gender":"女","birth_date":"199%d-01-01","id_type":"resident_id","id_number":%q}`+"\n",
			id, name, i%10, resident)
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":%q,"course_code":"CS101","score":%d}`+"\n", id, 60+i)
	}
	if res, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil || res.Stored != 2*n {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	shareAndWait(t, a, b, ag.ID, 2*n)
	// What arrived reads back whole, student numbers and names included.
	var out bytes.Buffer
	if _, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: ag.ID}, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range secrets[:2] {
		if !strings.Contains(out.String(), v) {
			t.Fatalf("the export lacks %q: %s", v, out.Bytes()[:min(300, out.Len())])
		}
	}
	// A consent recorded and withdrawn: the ledger, the erasure request
	// (which names the student number, delivered in clear) and the
	// recipient's tombstone hold no id in clear either.
	if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "consent-1", Subject: secrets[0], Purpose: policy.PurposeCreditTransfer,
		Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if wr, err := a.WithdrawConsent(ctx, "consent-1"); err != nil || wr.Requests != 1 {
		t.Fatalf("withdraw: %+v, %v", wr, err)
	}
	wait.Until(t, 20*time.Second, "uni-b to erase the student's records", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 2*n-2
	})
	var ledger []policy.ConsentRecord
	if resp := adminCall(t, a, s.conf["uni-a"].DataDir, http.MethodGet, "/v1/consents?purpose=credit_transfer", "", &ledger); resp.StatusCode != http.StatusOK ||
		len(ledger) != 1 || ledger[0].Subject != secrets[0] || ledger[0].Withdrawn.IsZero() {
		t.Fatalf("the ledger reads back: %s %+v", resp.Status, ledger)
	}

	// The scan finds what is there: a node with storage.encrypt off
	// holds the same records in clear.
	c := s.member("uni-c", crypto.SuiteX25519, func(c *node.Config) { c.Storage.Encrypt = false })
	if _, err := c.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*node.Node{a, b, c} {
		if err := nd.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if found := inClear(t, s.conf["uni-c"].DataDir, secrets); len(found) == 0 {
		t.Fatal("uni-c, storage.encrypt off: the scan finds no value in clear; it cannot tell")
	}
	for _, id := range []string{"uni-a", "uni-b"} {
		for _, f := range inClear(t, s.conf[id].DataDir, secrets) {
			t.Errorf("%s: %s", id, f)
		}
	}
}

// inClear lists the values of secrets that the database files in dir
// hold in clear.
func inClear(t *testing.T, dir string, secrets []string) []string {
	t.Helper()
	var found []string
	files, _ := filepath.Glob(filepath.Join(dir, "node.db*"))
	if len(files) == 0 {
		t.Fatalf("no database files in %s", dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range secrets {
			if bytes.Contains(data, []byte(v)) {
				found = append(found, fmt.Sprintf("%s holds %q in clear", filepath.Base(f), v))
			}
		}
	}
	return found
}

// TestSealAtRestAfterTheFact: a node that held records, received records
// and kept a consent ledger with storage.encrypt off seals them all when
// it starts with it on, and reads them back the same.
func TestSealAtRestAfterTheFact(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	off := func(c *node.Config) { c.Storage.Encrypt = false }
	a := s.member("uni-a", crypto.SuiteX25519, off)
	b := s.member("uni-b", crypto.SuiteX25519, off)
	ag := agreeGrades(t, "later", s.now, a, b)
	in := knownStudents("L0001", "L0002") +
		`{"type":"course_grade","student_id":"L0001","course_code":"CS101","score":80}` + "\n" +
		`{"type":"course_grade","student_id":"L0002","course_code":"CS101","score":81}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(in), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "consent-later", Subject: "L0001", Purpose: policy.PurposeCreditTransfer,
		Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, 2)
	for _, n := range []*node.Node{a, b} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	nodes := map[string]*node.Node{}
	for _, id := range []string{"uni-a", "uni-b"} {
		cfg := s.conf[id]
		cfg.Storage.Encrypt = true
		s.conf[id] = cfg
		nodes[id] = s.open(id, node.Env{})
	}
	for id, q := range map[string]string{
		"uni-a": `SELECT (SELECT count(*) FROM records WHERE substr(body, 1, 2) != x'EDA7') + (SELECT count(*) FROM consents WHERE substr(body, 1, 2) != x'EDA7')`,
		"uni-b": `SELECT count(*) FROM received WHERE substr(body, 1, 2) != x'EDA7'`,
	} {
		wait.Until(t, 20*time.Second, id+" to seal what it stored in clear", func() bool {
			db, err := sql.Open("sqlite3", "file:"+filepath.Join(s.conf[id].DataDir, "node.db")+"?mode=ro")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var clear int
			return db.QueryRow(q).Scan(&clear) == nil && clear == 0
		})
	}
	if names := heldRecords(t, s.conf["uni-a"].DataDir, "course_grade"); len(names) != 2 {
		t.Errorf("uni-a reads back %d held records, want 2", len(names))
	}
	var out bytes.Buffer
	if res, err := nodes["uni-b"].ExportReceived(ctx, receive.ExportOptions{Agreement: ag.ID}, &out); err != nil || res.Records != 2 {
		t.Errorf("uni-b's export after sealing: %+v, %v", res, err)
	}
	var ledger []policy.ConsentRecord
	if resp := adminCall(t, nodes["uni-a"], s.conf["uni-a"].DataDir, http.MethodGet, "/v1/consents", "", &ledger); resp.StatusCode != http.StatusOK ||
		len(ledger) != 1 || ledger[0].Subject != "L0001" {
		t.Errorf("uni-a's ledger after sealing: %s %+v", resp.Status, ledger)
	}
}
