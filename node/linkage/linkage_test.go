package linkage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
)

// students writes n student records whose student_id has prefix and whose
// resident ids are the i-th of a shared sequence, from first.
func students(now time.Time, prefix string, first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		birth := now.AddDate(-20, 0, -(i % 3000))
		fmt.Fprintf(&b, `{"type":"student","student_id":"%s%05d","name":"Student %d","birth_date":%q,"id_type":"resident_id","id_number":%q}`+"\n",
			prefix, i, i, birth.Format("2006-01-02"), nodetest.ResidentID(fmt.Sprintf("110101%s%03d", birth.Format("20060102"), i/3000)))
	}
	return b.String()
}

// linkSpace opens universities uni-a and uni-b and the evaluator uni-e.
func linkSpace(t *testing.T, edit func(*node.Config)) (s *nodetest.Space, a, b, e *node.Node) {
	t.Helper()
	s = nodetest.NewSpace(t)
	ca, cb, ce := s.Config("uni-a"), s.Config("uni-b"), s.Config("uni-e")
	if edit != nil {
		edit(&ce)
		s.Configs["uni-e"] = ce
	}
	s.LinkageEvaluator("uni-e")
	return s, s.Open(ca), s.Open(cb), s.Open(ce)
}

func ingest(t *testing.T, n *node.Node, ndjson string) {
	t.Helper()
	if _, err := n.Ingest(context.Background(), strings.NewReader(ndjson), ""); err != nil {
		t.Fatal(err)
	}
}

// TestLinkageSamePerson: two universities holding the same people under
// different student ids get the same pseudonyms for one purpose and
// epoch, and different ones across purposes and epochs.
func TestLinkageSamePerson(t *testing.T) {
	s, a, b, _ := linkSpace(t, nil)
	ingest(t, a, students(s.Now, "A", 0, 40))
	ingest(t, b, students(s.Now, "B", 20, 40)) // people 20..39 at both
	ctx := context.Background()
	pa, ra, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	pb, rb, err := b.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	if ra.Evaluated != 40 || rb.Evaluated != 40 || ra.Excluded != 0 {
		t.Fatalf("reports: %+v %+v", ra, rb)
	}
	for i := 0; i < 60; i++ {
		xa, okA := pa[fmt.Sprintf("A%05d", i)]
		xb, okB := pb[fmt.Sprintf("B%05d", i)]
		if okA && okB && xa != xb {
			t.Errorf("person %d: pseudonyms differ between the universities", i)
		}
		if okA != (i < 40) || okB != (i >= 20) {
			t.Errorf("person %d: at a %v, at b %v", i, okA, okB)
		}
	}
	if pa["A00000"] == pa["A00001"] {
		t.Error("two people, one pseudonym")
	}
	other, _, err := a.LinkagePseudonyms(ctx, policy.PurposeResearch, "2026")
	if err != nil {
		t.Fatal(err)
	}
	later, _, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2027")
	if err != nil {
		t.Fatal(err)
	}
	for id, p := range pa {
		if other[id] == p || later[id] == p {
			t.Fatalf("%s: the same pseudonym across purposes or epochs", id)
		}
	}
	_ = crypto.KindLinkage
}
