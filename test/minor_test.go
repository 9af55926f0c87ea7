package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
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

	// A student the node learns of later: a grade shared while no record
	// showed the age leaves; once a record shows a minor, the next share
	// (which reads only what was ingested since) holds back the rest.
	more := `{"type":"course_grade","student_id":"M0002","course_code":"CS101","score":70}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Permitted != 1 {
		t.Fatalf("share of a grade whose student is unknown: %+v, %v", sr, err)
	}
	more = fmt.Sprintf(`{"type":"student","student_id":"M0002","name":"N","birth_date":%q}`+"\n", child) +
		`{"type":"course_grade","student_id":"M0002","course_code":"MA101","score":71}` + "\n"
	if _, err := a.Ingest(ctx, strings.NewReader(more), ""); err != nil {
		t.Fatal(err)
	}
	sr, err = a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 0 || sr.Denied[string(policy.ReasonMinorNeedsGuardian)] != 3 {
		t.Errorf("share after the minor's student record: %+v, %v; want the new grade and the first minor's two denied", sr, err)
	}
}
