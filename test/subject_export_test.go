package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// TestSubjectReportShowsExports: the recipient's subject report for a
// student lists each export of received records that included theirs
// (agreement, provider, purpose, count, digest, evidence entry), and no
// other; with a tokenised agreement the report finds them by the token
// they arrived under, not by the student number; the recipient's
// database still holds no student number in clear.
func TestSubjectReportShowsExports(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	clear := gradeAgreement("credit-clear", "uni-a", "uni-b", s.now)
	clear.Transforms = map[string]policy.Transform{"student_id": policy.TransformKeep}
	tokens := gradeAgreement("credit-tokens", "uni-a", "uni-b", s.now)
	for _, ag := range []*policy.Agreement{clear, tokens} {
		for _, n := range []*node.Node{a, b} {
			if err := n.AddAgreement(ctx, ag); err != nil {
				t.Fatal(err)
			}
		}
	}
	var in strings.Builder
	ids := []string{"EX0000001", "EX0000002", "EX0000003"}
	for i, id := range ids {
		in.WriteString(knownStudents(id))
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":%q,"course_code":"CS10%d","score":%d}`+"\n", id, i, 70+i)
	}
	if res, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil || res.Stored != 2*len(ids) {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	shareAndWait(t, a, b, clear.ID, len(ids))
	if res, err := a.Share(ctx, tokens.ID); err != nil || res.Permitted != len(ids) {
		t.Fatalf("share under %s: %+v, %v", tokens.ID, res, err)
	}
	wait.Until(t, 30*time.Second, "uni-b to hold both shares", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == int64(2*len(ids))
	})

	// Before any export, the recipient's report of a student lists none.
	if rep, err := b.SubjectReport(ctx, ids[0]); err != nil || len(rep.Exports) != 0 {
		t.Fatalf("uni-b's report before an export: %+v, %v", rep, err)
	}
	var first bytes.Buffer
	res, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: clear.ID}, &first)
	if err != nil || res.Records != len(ids) {
		t.Fatalf("export: %+v, %v", res, err)
	}
	if _, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: clear.ID, Format: "csv", Type: "course_grade"}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var rep consent.SubjectReport
	if resp := adminCall(t, b, s.conf["uni-b"].DataDir, http.MethodPost, "/v1/subjects/report", fmt.Sprintf(`{"subject":%q}`, ids[1]), &rep); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/subjects/report at uni-b: %s", resp.Status)
	}
	if len(rep.Exports) != 2 {
		t.Fatalf("uni-b's report of %s: %d exports, want 2: %+v", ids[1], len(rep.Exports), rep.Exports)
	}
	e := rep.Exports[0]
	if e.Agreement != clear.ID || e.Provider != "uni-a" || e.Purpose != string(policy.PurposeCreditTransfer) || e.Records != len(ids) ||
		e.Digest != res.Digest || e.Evidence == 0 || e.Exported.IsZero() {
		t.Errorf("the export in uni-b's report: %+v; want agreement %s from uni-a, %d records, digest %s", e, clear.ID, len(ids), res.Digest)
	}
	if rep, err := b.SubjectReport(ctx, "EX9999999"); err != nil || len(rep.Exports) != 0 {
		t.Errorf("a student never exported: %+v, %v", rep.Exports, err)
	}
	// The provider exported nothing: its report lists deliveries only.
	if rep, err := a.SubjectReport(ctx, ids[1]); err != nil || len(rep.Exports) != 0 || len(rep.Deliveries) != 2 {
		t.Errorf("uni-a's report: %d deliveries, %d exports, %v; want 2 and 0", len(rep.Deliveries), len(rep.Exports), err)
	}

	// Tokenised: the records arrived under a token, and the report finds
	// the export by it.
	var tok bytes.Buffer
	if _, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: tokens.ID}, &tok); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(bytes.SplitN(tok.Bytes(), []byte("\n"), 2)[0], &rec); err != nil {
		t.Fatal(err)
	}
	token, _ := rec["student_id"].(string)
	if token == "" || strings.HasPrefix(token, "EX") {
		t.Fatalf("the tokenised agreement delivered student_id %q", token)
	}
	if rep, err := b.SubjectReport(ctx, token); err != nil || len(rep.Exports) != 1 || rep.Exports[0].Agreement != tokens.ID {
		t.Errorf("uni-b's report by the token: %+v, %v; want the one export under %s", rep.Exports, err, tokens.ID)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range inClear(t, s.conf["uni-b"].DataDir, ids) {
		t.Error(f)
	}
}
