package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
)

// TestMinorAcrossRecordTypes: a student whose student record shows her
// under 14 is a minor in every record the node holds of her: her course
// grades, which carry no birth date, are denied without a guardian's
// consent like her student record, while an adult's grades leave.
func TestMinorAcrossRecordTypes(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	child := time.Now().AddDate(-10, 0, 0).Format(time.DateOnly)
	var data strings.Builder
	for _, st := range []struct{ id, born string }{{"M0001", child}, {"A0001", "2000-03-01"}} {
		fmt.Fprintf(&data, `{"type":"student","student_id":%q,"name":"N","birth_date":%q}`+"\n", st.id, st.born)
		for _, c := range []string{"CS101", "MA101"} {
			fmt.Fprintf(&data, `{"type":"course_grade","student_id":%q,"course_code":%q,"score":88}`+"\n", st.id, c)
		}
	}
	if res, err := a.Ingest(ctx, strings.NewReader(data.String()), ""); err != nil || res.Invalid != 0 {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	ag := agreeGrades(t, "grades", s.now, a, b)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sr.Permitted != 2 || sr.Denied[string(policy.ReasonMinorNeedsGuardian)] != 2 {
		t.Errorf("share: %+v; want the adult's 2 grades permitted and the minor's 2 denied (minor_needs_guardian)", sr)
	}

	// A student the node learns of later: while the node, which keeps its
	// students' records, holds none of her, her grade is decided as a
	// minor's and the reason says she is unknown; once her record shows a
	// minor, the reason says so.
	more := `{"type":"course_grade","student_id":"M0002","course_code":"CS101","score":70}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonPersonUnknown)] != 1 ||
		sr.Denied[string(policy.ReasonMinorNeedsGuardian)] != 2 {
		t.Fatalf("share of a grade whose student is unknown: %+v, %v; want it denied (person_unknown), the minor's two as before", sr, err)
	}
	reasons := map[string]int{}
	for _, e := range nodetest.Evidence(t, s.conf["uni-a"].DataDir) {
		if e["kind"] == "decide" {
			reasons[fmt.Sprint(e["reason"])]++
		}
	}
	if reasons[string(policy.ReasonPersonUnknown)] != 1 {
		t.Errorf("evidence of decisions by reason: %v; want one person_unknown", reasons)
	}
	more = fmt.Sprintf(`{"type":"student","student_id":"M0002","name":"N","birth_date":%q}`+"\n", child) +
		`{"type":"course_grade","student_id":"M0002","course_code":"MA101","score":71}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	sr, err = a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonMinorNeedsGuardian)] != 4 || sr.Denied[string(policy.ReasonPersonUnknown)] != 0 {
		t.Errorf("share after the minor's student record: %+v, %v; want her two grades and the first minor's two denied as a minor's", sr, err)
	}

	// An adult the node learns of later: once her record is held, her
	// grade leaves.
	more = `{"type":"course_grade","student_id":"A0002","course_code":"CS101","score":90}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Denied[string(policy.ReasonPersonUnknown)] != 1 {
		t.Fatalf("share of an unknown adult's grade: %+v, %v; want it denied (person_unknown)", sr, err)
	}
	more = `{"type":"student","student_id":"A0002","name":"N","birth_date":"2001-05-01"}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Permitted != 1 || sr.Denied[string(policy.ReasonPersonUnknown)] != 0 {
		t.Errorf("share once the adult's record is held: %+v, %v; want her grade permitted", sr, err)
	}
}

// TestUnknownPersonStrict: a node that holds grades and no student
// record cannot tell a known person from an unknown one; by default it
// decides every grade as a minor's, with reason person_unknown, until a
// guardian's consent is recorded. Under a space rulebook that opts out
// (unknown_person_strict false) it shares the grades; a node under that
// rulebook that holds student records still decides a student it holds
// none of as unknown.
func TestUnknownPersonStrict(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	rules := filepath.Join(t.TempDir(), "rulebook.json")
	if err := os.WriteFile(rules, []byte(`{"unknown_person_strict": false}`), 0o644); err != nil {
		t.Fatal(err)
	}
	optOut := func(c *node.Config) { c.Rulebook = rules }
	strict := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	plain := s.member("uni-c", crypto.SuiteX25519, optOut)
	roster := s.member("uni-d", crypto.SuiteX25519, optOut)
	grades := `{"type":"course_grade","student_id":"U0001","course_code":"CS101","score":80}` + "\n" +
		`{"type":"course_grade","student_id":"U0002","course_code":"CS101","score":81}` + "\n"
	for _, n := range []*node.Node{strict, plain} {
		if _, err := n.Ingest(ctx, strings.NewReader(grades), ""); err != nil {
			t.Fatal(err)
		}
	}
	ag := agreeGrades(t, "strict", s.now, strict, b)
	if sr, err := strict.Share(ctx, ag.ID); err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonPersonUnknown)] != 2 {
		t.Fatalf("share under the default rulebook, no student record held: %+v, %v; want both grades denied (person_unknown)", sr, err)
	}
	reasons := map[string]string{} // reason → records decided, as the evidence entry counts them
	for _, e := range nodetest.Evidence(t, s.conf["uni-a"].DataDir) {
		if e["kind"] == "decide" {
			reasons[fmt.Sprint(e["reason"])] = fmt.Sprint(e["count"])
		}
	}
	if reasons[string(policy.ReasonPersonUnknown)] != "2" {
		t.Errorf("evidence of decisions by reason (records each): %v; want both grades person_unknown", reasons)
	}
	if _, err := strict.GrantConsent(ctx, policy.ConsentRecord{ID: "guardian-u1", Subject: "U0001", Purpose: policy.PurposeCreditTransfer,
		Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute), Guardian: true}); err != nil {
		t.Fatal(err)
	}
	if sr, err := strict.Share(ctx, ag.ID); err != nil || sr.Permitted != 1 || sr.Denied[string(policy.ReasonPersonUnknown)] != 1 {
		t.Errorf("share with a guardian's consent for one: %+v, %v; want that one permitted", sr, err)
	}

	other := gradeAgreement("plain", "uni-c", "uni-b", s.now)
	for _, n := range []*node.Node{plain, b} {
		if err := n.AddAgreement(ctx, other); err != nil {
			t.Fatal(err)
		}
	}
	if sr, err := plain.Share(ctx, other.ID); err != nil || sr.Permitted != 2 {
		t.Errorf("share under unknown_person_strict false, no student record held: %+v, %v; want both grades permitted", sr, err)
	}

	if _, err := roster.Ingest(ctx, strings.NewReader(knownStudents("U0001")+grades), ""); err != nil {
		t.Fatal(err)
	}
	third := gradeAgreement("roster", "uni-d", "uni-b", s.now)
	for _, n := range []*node.Node{roster, b} {
		if err := n.AddAgreement(ctx, third); err != nil {
			t.Fatal(err)
		}
	}
	if sr, err := roster.Share(ctx, third.ID); err != nil || sr.Permitted != 1 || sr.Denied[string(policy.ReasonPersonUnknown)] != 1 {
		t.Errorf("share under unknown_person_strict false, one student record held: %+v, %v; want the known student's grade permitted, the other's denied (person_unknown)", sr, err)
	}
}

// knownStudents are adult student records of ids, as NDJSON: ingested
// beside their grades, they make each student a person the node knows,
// whose grades are decided by the rules of an adult's rather than as an
// unknown person's (person_unknown).
func knownStudents(ids ...string) string {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, `{"type":"student","student_id":%q,"name":"N","birth_date":"2001-05-01"}`+"\n", id)
	}
	return b.String()
}
