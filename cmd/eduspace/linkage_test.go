package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/nodetest"
)

// TestLinkageCommands: `linkage pseudonymize` runs a linkage through the
// admin API and prints its report; `linkage status` shows the evaluator,
// its key and, on the evaluator, each member's usage; bad flags are usage
// errors that say what is expected.
func TestLinkageCommands(t *testing.T) {
	s := nodetest.NewSpace(t)
	ca, ce := s.Config("uni-a"), s.Config("uni-e")
	ev := s.LinkageEvaluator("uni-e")
	a, e := s.Open(ca), s.Open(ce)
	var b strings.Builder
	for i := range 12 {
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%02d","name":"N","birth_date":"2004-01-01","id_type":"resident_id","id_number":%q}`+"\n",
			i, nodetest.ResidentID(fmt.Sprintf("11010120040101%03d", i)))
	}
	b.WriteString(`{"type":"student","student_id":"P1","name":"N","birth_date":"2004-01-01","id_type":"passport","id_number":"E1234567"}` + "\n")
	if _, err := a.Ingest(context.Background(), strings.NewReader(b.String()), ""); err != nil {
		t.Fatal(err)
	}
	flags := func(cfgDir, addr string) []string {
		return []string{"--node", "http://" + addr, "--token-file", filepath.Join(cfgDir, "admin.token")}
	}
	ctx := context.Background()
	args := append([]string{"linkage", "pseudonymize", "--purpose", "statistics", "--epoch", "2026", "--json"}, flags(ca.DataDir, a.AdminAddr())...)
	code, out, stderr := run(t, ctx, args...)
	if code != exitOK {
		t.Fatalf("pseudonymize: exit %d: %s", code, stderr)
	}
	var rep linkage.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.Evaluated != 12 || rep.Missing != 1 || rep.Evaluator != "uni-e" || rep.KeyID != linkage.KeyID(ev.Suite, ev.Key) {
		t.Errorf("report %+v", rep)
	}
	code, out, stderr = run(t, ctx, append([]string{"linkage", "pseudonymize", "--purpose", "research"}, flags(ca.DataDir, a.AdminAddr())...)...)
	if code != exitOK || !strings.Contains(out, "pseudonyms:         12") || !strings.Contains(out, "no resident id:   1") {
		t.Errorf("pseudonymize (text): exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = run(t, ctx, append([]string{"linkage", "status"}, flags(ce.DataDir, e.AdminAddr())...)...)
	if code != exitOK || !strings.Contains(out, "evaluator (this node)") || !strings.Contains(out, linkage.KeyID(ev.Suite, ev.Key)) ||
		!strings.Contains(out, "uni-a") || !strings.Contains(out, "statistics") {
		t.Errorf("status on the evaluator: exit %d\n%s%s", code, out, stderr)
	}
	code, out, _ = run(t, ctx, append([]string{"linkage", "status"}, flags(ca.DataDir, a.AdminAddr())...)...)
	if code != exitOK || !strings.Contains(out, "this node: requester") {
		t.Errorf("status on a member: exit %d\n%s", code, out)
	}
	for _, bad := range [][]string{
		{"linkage", "pseudonymize"},
		{"linkage", "pseudonymize", "--purpose", "statistics", "--epoch", "Spring 2026"},
	} {
		if code, _, stderr := run(t, ctx, bad...); code != exitUsage || !strings.Contains(stderr, "--") {
			t.Errorf("%v: exit %d, %s", bad, code, stderr)
		}
	}
	code, _, stderr = run(t, ctx, append([]string{"linkage", "pseudonymize", "--purpose", "marketing"}, flags(ca.DataDir, a.AdminAddr())...)...)
	if code != exitFailure || !strings.Contains(stderr, "purpose") {
		t.Errorf("unknown purpose: exit %d, %s", code, stderr)
	}
}
