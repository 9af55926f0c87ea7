package test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestLegalBasisAndStandard: a share names its agreement's legal basis and
// the standard it classified the records with in every records envelope's
// header and in every evidence entry about the records, at both ends
// (decide, seal, send; receive, export). The receiver refuses an envelope
// whose header names another basis than the agreement's, though its sender
// signed it with its real key: refused as no_agreement, counted, recorded
// with the basis it named, never stored. An envelope of version 1, which
// names no basis (a sender not yet upgraded), is taken on the agreement's.
func TestLegalBasisAndStandard(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := agreeGrades(t, "credit", s.now, a, b)
	basis, std := string(ag.LegalBasis), schema.Default().Ref()
	if basis != string(policy.BasisContract) || std != "EDU-CN-DEFAULT/1" {
		t.Fatalf("agreement basis %q, standard %q", basis, std)
	}
	dirA, dirB := s.conf["uni-a"].DataDir, s.conf["uni-b"].DataDir

	const n = 25 // three envelopes of at most 10
	var in strings.Builder
	for i := range n {
		in.WriteString(knownStudents(fmt.Sprintf("S%04d", i)))
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":"S%04d","course_code":"CS101","score":%d}`+"\n", i, 60+i)
	}
	if _, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, n)

	// Every records envelope uni-a sealed names the basis and the standard.
	envs := outboxRecordEnvelopes(t, dirA)
	if len(envs) != 3 {
		t.Fatalf("uni-a sealed %d records envelopes, want 3", len(envs))
	}
	for _, data := range envs {
		e, err := crypto.ParseEnvelope(data)
		if err != nil {
			t.Fatal(err)
		}
		if h := e.Header; h.LegalBasis != basis || h.Standard != std || data[4] != 2 {
			t.Errorf("envelope %s: version %d, legal basis %q, standard %q; want 2, %q, %q", h.IDString(), data[4], h.LegalBasis, h.Standard, basis, std)
		}
	}

	// A forged envelope: uni-a's real key, the agreement's id and purpose,
	// another legal basis. And one of version 1, naming none.
	aKeys, err := keys.LoadKeys(dirA)
	if err != nil {
		t.Fatal(err)
	}
	bKeys, err := keys.LoadKeys(dirB)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	seal := func(seq uint64, legalBasis, standard string) []byte {
		t.Helper()
		h := crypto.Header{Suite: crypto.SuiteX25519, Kind: crypto.KindRecords, Sender: "uni-a", SenderKeyID: aKeys.Signing.Public().KeyID(),
			Recipient: "uni-b", RecipientKeyID: bKeys.KEM.Public().KeyID(), Seq: seq, Created: now, Expires: now.Add(time.Hour),
			Agreement: ag.ID, Purpose: string(ag.Purpose), RecordType: "course_grade", Count: 1, Level: "L3",
			LegalBasis: legalBasis, Standard: standard}
		rand.Read(h.ID[:])
		env, err := crypto.Seal(nil, h, bKeys.KEM.Public(), aKeys.Signing,
			[]byte(`{"type":"course_grade","student_id":"tk_0123456789abcdefghijkl","course_code":"CS102","score":77}`+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	js := s.js()
	subject := bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a")
	for _, env := range [][]byte{
		seal(1000, string(policy.BasisConsent), std), // another basis
		seal(1001, "", std),                          // a standard, no basis
		seal(1002, "", ""),                           // version 1
	} {
		if _, err := js.Publish(ctx, subject, env); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 20*time.Second, "uni-b to refuse two envelopes and store one", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == n+1 && refusedCounts(t, b)[envelope.RefuseNoAgreement] == 2
	})
	if got := refusedCounts(t, b); len(got) != 1 {
		t.Errorf("uni-b refused %v, want only 2 no_agreement", got)
	}

	// uni-b's inbox keeps what each header named.
	named := inboxNamed(t, dirB)
	if named[[2]string{basis, std}] != 3 || named[[2]string{}] != 1 || len(named) != 2 {
		t.Errorf("uni-b's inbox: %v; want 3 envelopes naming %s and %s, 1 naming nothing", named, basis, std)
	}

	// The export names the agreement's basis and the standards the
	// envelopes named.
	res, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: ag.ID}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != n+1 || res.LegalBasis != basis || res.Standard != std {
		t.Errorf("export: %+v; want %d records, basis %s, standard %s", res, n+1, basis, std)
	}

	// Every entry about the records names both, at both ends; the
	// refusals name the basis their header named.
	wait.Until(t, 20*time.Second, "uni-a to record its three sends", func() bool { return countKind(nodetest.Evidence(t, dirA), evidence.KindSend) == 3 })
	for _, e := range nodetest.Evidence(t, dirA) {
		switch e["kind"] {
		case evidence.KindDecide, evidence.KindSeal, evidence.KindSend:
			if e["legal_basis"] != basis || e["standard"] != std {
				t.Errorf("uni-a's %s entry %v: want legal_basis %s and standard %s", e["kind"], e, basis, std)
			}
		}
	}
	kinds := map[string]int{}
	for _, e := range nodetest.Evidence(t, dirB) {
		k, _ := e["kind"].(string)
		switch k {
		case evidence.KindReceive:
			kinds[k]++
			if e["legal_basis"] != basis {
				t.Errorf("uni-b's receive entry %v: want legal_basis %s", e, basis)
			}
			if e["standard"] != std && e["standard"] != nil {
				t.Errorf("uni-b's receive entry %v: want standard %s, or none for an envelope of version 1", e, std)
			}
			if e["standard"] == nil {
				kinds["receive without standard"]++
			}
		case evidence.KindExport:
			kinds[k]++
			if e["legal_basis"] != basis || e["standard"] != std {
				t.Errorf("uni-b's export entry %v: want legal_basis %s and standard %s", e, basis, std)
			}
		case evidence.KindRefuse:
			kinds[k]++
			if e["reason"] != envelope.RefuseNoAgreement || e["standard"] != std ||
				(e["legal_basis"] != string(policy.BasisConsent) && e["legal_basis"] != nil) {
				t.Errorf("uni-b's refuse entry %v: want reason no_agreement, the basis the header named (consent, or none) and standard %s", e, std)
			}
		}
	}
	if want := map[string]int{"receive": 4, "receive without standard": 1, "export": 1, "refuse": 2}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("uni-b's entries about records: %v, want %v", kinds, want)
	}
}

// outboxRecordEnvelopes is every records envelope in the outbox of the
// node in dir.
func outboxRecordEnvelopes(t *testing.T, dir string) [][]byte {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT d.data FROM outbox o JOIN outbox_data d ON d.id = o.id WHERE o.kind = ? ORDER BY o.id`, crypto.KindRecords)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// inboxNamed counts the envelopes in the inbox of the node in dir by the
// legal basis and standard their headers named.
func inboxNamed(t *testing.T, dir string) map[[2]string]int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT coalesce(legal_basis, ''), coalesce(standard, '') FROM inbox`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[[2]string]int{}
	for rows.Next() {
		var k [2]string
		if err := rows.Scan(&k[0], &k[1]); err != nil {
			t.Fatal(err)
		}
		out[k]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func countKind(entries []map[string]any, kind string) int {
	n := 0
	for _, e := range entries {
		if e["kind"] == kind {
			n++
		}
	}
	return n
}
