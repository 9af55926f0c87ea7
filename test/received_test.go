package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// TestReceivedExport: the receiving university lists what it received and
// exports it under the agreement, as NDJSON or CSV: every record holds
// only what the agreement lets leave, the count and digest are announced
// before the first byte and match what arrives, and each export is an
// evidence entry. An unknown agreement, one this node is not the
// recipient of, a CSV of no one type and a revoked agreement are refused
// with their reason.
func TestReceivedExport(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := agreeGrades(t, "credit", s.now, a, b)
	var in strings.Builder
	const n = 150
	for i := range n {
		in.WriteString(knownStudents(fmt.Sprintf("S%04d", i)))
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":"S%04d","course_code":"CS%d","score":%d,"course_name":"数据结构"}`+"\n", i, 100+i%3, 50+i%50)
	}
	if _, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, n)
	dirB := s.conf["uni-b"].DataDir

	var list []receive.Holding
	if resp := adminCall(t, b, dirB, http.MethodGet, "/v1/received/summary", "", &list); resp.StatusCode != http.StatusOK ||
		len(list) != 1 || list[0].Agreement != "credit" || list[0].Provider != "uni-a" || list[0].Type != "course_grade" ||
		list[0].Records != n || list[0].Latest.IsZero() {
		t.Fatalf("received list: %s %+v", resp.Status, list)
	}

	export := func(query string) (*http.Response, []byte) {
		t.Helper()
		return adminRaw(t, b, dirB, http.MethodGet, "/v1/received?"+query, "")
	}
	digestOK := func(what string, resp *http.Response, body []byte, records int) {
		t.Helper()
		sum := sha256.Sum256(body)
		if resp.Header.Get("Eduspace-Export-Digest") != hex.EncodeToString(sum[:]) ||
			resp.Header.Get("Eduspace-Export-Records") != fmt.Sprint(records) || resp.Trailer.Get("Eduspace-Export-Error") != "" {
			t.Errorf("%s: headers %v trailer %v; want %d records and the body's digest", what, resp.Header, resp.Trailer, records)
		}
	}

	// NDJSON: the records as they arrived, only the agreed fields.
	resp, body := export("agreement=credit")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("export: %s %s", resp.Status, body)
	}
	digestOK("ndjson", resp, body, n)
	lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("export: %d records, want %d", len(lines), n)
	}
	allowed := append(slices.Clone(ag.RecordTypes["course_grade"]), "type")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if !slices.Contains(allowed, k) {
				t.Fatalf("exported record %s has %s, which the agreement does not let leave", l, k)
			}
		}
		if id, _ := m["student_id"].(string); strings.HasPrefix(id, "S0") {
			t.Fatalf("exported record %s carries a student number in clear under credit_transfer's default", l)
		}
	}

	// CSV of one type: a header row, then the same records.
	resp, body = export("agreement=credit&type=course_grade&format=csv")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("csv export: %s %s", resp.Status, body)
	}
	digestOK("csv", resp, body, n)
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil || len(rows) != n+1 || strings.Join(rows[0], ",") != "course_code,score,student_id" {
		t.Fatalf("csv export: %d rows, header %v, %v", len(rows), rows[0], err)
	}

	// Each export is in uni-b's evidence log, with its count and digest.
	exports := 0
	for _, e := range nodetest.Evidence(t, dirB) {
		if d, _ := e["digest"].(string); e["kind"] == "export" && e["agreement"] == "credit" && e["count"] == float64(n) && len(d) == 64 {
			exports++
		}
	}
	if exports != 2 {
		t.Errorf("export evidence entries: %d, want 2", exports)
	}

	for _, c := range []struct {
		name, query string
		at          string
		status      int
		reason      string
	}{
		{"unknown agreement", "agreement=nope", "uni-b", http.StatusNotFound, receive.ExportUnknownAgreement},
		{"CSV of every type", "agreement=credit&format=csv", "uni-b", http.StatusBadRequest, receive.ExportBadFormat},
		{"no agreement named", "", "uni-b", http.StatusBadRequest, "bad-request"},
	} {
		resp, body := export(c.query)
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.reason) {
			t.Errorf("%s: %s %s; want %d naming %s", c.name, resp.Status, body, c.status, c.reason)
		}
	}
	// At the provider the agreement is not one to export under.
	if resp := adminCall(t, a, s.conf["uni-a"].DataDir, http.MethodGet, "/v1/received?agreement=credit", "", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("export at the provider: %s, want 403", resp.Status)
	}
	// Revoked: what was received under it may no longer be used.
	if _, err := b.RevokeAgreement(ctx, ag.ID); err != nil {
		t.Fatal(err)
	}
	if resp, body := export("agreement=credit"); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), receive.ExportRevoked) {
		t.Errorf("export after revocation: %s %s; want 403 %s", resp.Status, body, receive.ExportRevoked)
	}
}

// TestClearIdentityUnderCreditTransfer: a credit-transfer agreement may
// ask for the student number in clear (the rulebook lets credit transfer
// ask), and the receiver, checking against the same agreement, stores it;
// the same ask under statistics leaves a token.
func TestClearIdentityUnderCreditTransfer(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	credit := gradeAgreement("credit-clear", "uni-a", "uni-b", s.now)
	credit.Transforms = map[string]policy.Transform{"student_id": policy.TransformKeep}
	stats := gradeAgreement("stats-clear", "uni-a", "uni-b", s.now)
	stats.Purpose, stats.LegalBasis = policy.PurposeStatistics, policy.BasisPublicInterest
	stats.Transforms = map[string]policy.Transform{"student_id": policy.TransformKeep}
	for _, ag := range []*policy.Agreement{credit, stats} {
		for _, n := range []*node.Node{a, b} {
			if err := n.AddAgreement(ctx, ag); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := a.Ingest(ctx, strings.NewReader(knownStudents("S0042")+`{"type":"course_grade","student_id":"S0042","course_code":"CS101","score":88}`+"\n"), ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{credit.ID, stats.ID} {
		if res, err := a.Share(ctx, id); err != nil || res.Permitted != 1 {
			t.Fatalf("share %s: %+v, %v", id, res, err)
		}
	}
	wait.Until(t, 30*time.Second, "uni-b to store both", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 2
	})
	for id, want := range map[string]func(string) bool{
		credit.ID: func(v string) bool { return v == "S0042" },
		stats.ID:  func(v string) bool { return strings.HasPrefix(v, "tk_") },
	} {
		var out bytes.Buffer
		if _, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: id}, &out); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v: %s", id, err, out.Bytes())
		}
		if v, _ := m["student_id"].(string); !want(v) {
			t.Errorf("%s: student_id arrived as %q", id, v)
		}
	}
	if refused := refusals(t, s.conf["uni-b"].DataDir); len(refused) != 0 {
		t.Errorf("uni-b refused %v", refused)
	}
}

// TestErasureOfAnIdentifierInClear: records delivered with the student
// number in clear (an agreement that keeps it under credit transfer) are
// erased on withdrawal too: the erasure request names the number as the
// copies carry it, besides the token, and the recipient deletes them.
func TestErasureOfAnIdentifierInClear(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := gradeAgreement("credit-kept", "uni-a", "uni-b", s.now)
	ag.LegalBasis = policy.BasisConsent
	ag.Transforms = map[string]policy.Transform{"student_id": policy.TransformKeep}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"K0001", "K0002"} {
		if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeCreditTransfer,
			Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	in := knownStudents("K0001", "K0002") +
		`{"type":"course_grade","student_id":"K0001","course_code":"CS101","score":80}` + "\n" +
		`{"type":"course_grade","student_id":"K0002","course_code":"CS101","score":81}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(in), ""); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, 2)
	if wr, err := a.WithdrawConsent(ctx, "c-K0001"); err != nil || wr.Requests != 1 {
		t.Fatalf("withdraw: %+v, %v", wr, err)
	}
	wait.Until(t, 20*time.Second, "uni-b to erase K0001's record", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 1
	})
	var out bytes.Buffer
	if _, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: ag.ID}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "K0001") || !strings.Contains(out.String(), "K0002") {
		t.Errorf("after the erasure uni-b holds: %s", out.Bytes())
	}
}

// TestEvidenceFetch: a running node's evidence log is exported through
// its admin API (`eduspace audit fetch`), as `audit export` writes it from
// the database: every entry, no student number.
func TestEvidenceFetch(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	ag := agreeGrades(t, "fetch", s.now, a, b)
	if _, err := a.Ingest(ctx, strings.NewReader(knownStudents("F0001")+`{"type":"course_grade","student_id":"F0001","course_code":"CS101","score":80}`+"\n"), ""); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, 1)
	resp, body := adminRaw(t, a, s.conf["uni-a"].DataDir, http.MethodGet, "/v1/evidence/export", "")
	if resp.StatusCode != http.StatusOK || resp.Trailer.Get("Eduspace-Export-Error") != "" {
		t.Fatalf("fetch: %s, trailer %v", resp.Status, resp.Trailer)
	}
	r, err := evidence.NewExportReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := a.Status(ctx)
	if r.Header.Node != "uni-a" || r.Header.Entries < st.EvidenceEntries || r.Header.Entries == 0 {
		t.Errorf("export header %+v; want uni-a's %d entries", r.Header, st.EvidenceEntries)
	}
	if bytes.Contains(body, []byte("F0001")) {
		t.Error("the evidence export holds a student number")
	}
	plain, err := http.Get("http://" + a.AdminAddr() + "/v1/evidence/export")
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusUnauthorized {
		t.Errorf("fetch without the token: %s", plain.Status)
	}
}
