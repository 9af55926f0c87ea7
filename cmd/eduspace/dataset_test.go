package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node/nodetest"
)

// TestDatasetCommands: against a running node's admin API, `dataset
// offer` offers a dataset, `dataset list` (table and versioned JSON) and
// `dataset show` (by argument or --id, human and JSON) show it with its
// fields, levels and noised rows, `dataset withdraw` removes it, and
// wrong use says what was expected.
func TestDatasetCommands(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	n := s.Open(s.Config("uni-a"))
	if _, err := n.Ingest(ctx, strings.NewReader(nodetest.Records(s.Now)), ""); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte(n.AdminToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	offerFile := filepath.Join(dir, "dataset.json")
	if err := os.WriteFile(offerFile, []byte(`{"id":"grades-2026","title":"Course grades","record_types":["course_grade"],
		"fields":{"course_grade":["student_id","score"]},"purposes":["learning_analytics"],"licence":"CC-BY-NC-4.0",
		"retention_days":365,"contact":"data-office@uni-a.example.edu"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--node", "http://" + n.AdminAddr(), "--token-file", tok}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return run(t, ctx, append(args, conn...)...)
	}

	if code, out, errOut := cli("dataset", "list"); code != exitOK || !strings.Contains(out, "no datasets offered") {
		t.Errorf("empty list: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := cli("dataset", "offer", "--file", offerFile); code != exitOK || !strings.Contains(out, `"grades-2026"`) {
		t.Fatalf("offer: exit %d: %s%s", code, out, errOut)
	}
	code, out, errOut := cli("dataset", "list", "--json")
	var list struct {
		Version  int `json:"version"`
		Datasets []struct {
			ID, Publisher, Level string
			Own                  bool
			Rows                 struct{ Noised int64 }
		}
	}
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || list.Version != 1 || len(list.Datasets) != 1 {
		t.Fatalf("list --json: exit %d: %s%s", code, out, errOut)
	}
	d := list.Datasets[0]
	if d.ID != "grades-2026" || d.Publisher != "uni-a" || !d.Own || d.Level != "L3" || d.Rows.Noised < 0 {
		t.Errorf("list --json: %+v", d)
	}
	if code, out, _ := cli("dataset", "list"); code != exitOK || !strings.Contains(out, "uni-a (this node)") || !strings.Contains(out, "grades-2026") ||
		!strings.Contains(out, "learning_analytics") {
		t.Errorf("list: exit %d:\n%s", code, out)
	}
	for _, args := range [][]string{append([]string{"dataset", "show", "grades-2026"}, conn...),
		append([]string{"dataset", "show", "--id", "grades-2026"}, conn...), append(append([]string{"dataset", "show"}, conn...), "grades-2026")} {
		code, out, errOut := run(t, ctx, args...)
		if code != exitOK || !strings.Contains(out, "score") || !strings.Contains(out, "L3") || !strings.Contains(out, "discrete_gaussian") ||
			!strings.Contains(out, "365 days") || !strings.Contains(out, "data-office@uni-a.example.edu") {
			t.Errorf("%v: exit %d:\n%s%s", args, code, out, errOut)
		}
	}
	if code, out, _ := cli("dataset", "show", "grades-2026", "--json"); code != exitOK || !strings.Contains(out, `"sigma2": 500`) {
		t.Errorf("show --json: exit %d:\n%s", code, out)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"dataset", "show", "nope"}, exitFailure, "eduspace dataset list"},
		{[]string{"dataset", "show", "grades-2026", "--id", "x"}, exitUsage, "give the id once"},
		{[]string{"dataset", "offer"}, exitUsage, "--file is required"},
		{[]string{"dataset", "withdraw"}, exitUsage, "--id is required"},
	} {
		code, out, errOut := cli(c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%v: exit %d, want %d with %q:\n%s%s", c.args, code, c.code, c.want, out, errOut)
		}
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"id":"x","title":"t","record_types":["course_grade"],"purposes":["marketing"],"licence":"l","retention_days":1,"contact":"a@b.example"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := cli("dataset", "offer", "--file", bad); code != exitFailure || !strings.Contains(errOut, "purposes[0]") {
		t.Errorf("invalid offer: exit %d: %s%s", code, out, errOut)
	}
	if code, out, errOut := cli("dataset", "withdraw", "--id", "grades-2026"); code != exitOK {
		t.Errorf("withdraw: exit %d: %s%s", code, out, errOut)
	}
	if code, _, errOut := cli("dataset", "withdraw", "--id", "grades-2026"); code != exitFailure || !strings.Contains(errOut, "offers no such dataset") {
		t.Errorf("withdraw twice: exit %d: %s", code, errOut)
	}
}

// TestDatasetDispatch: a subcommand another file adds to datasetCommands
// (as the release command does) is listed in the help and run with the
// arguments after its name; an unknown one is a usage error naming the
// subcommands there are.
func TestDatasetDispatch(t *testing.T) {
	var got []string
	datasetCommands["zz-added"] = func(_ context.Context, args []string, _, _ io.Writer) error { got = args; return nil }
	datasetHelp["zz-added"] = "a subcommand added by another file"
	t.Cleanup(func() { delete(datasetCommands, "zz-added"); delete(datasetHelp, "zz-added") })
	if code, _, errOut := run(t, context.Background(), "dataset", "zz-added", "--x", "y"); code != exitOK || !slices.Equal(got, []string{"--x", "y"}) {
		t.Errorf("added subcommand: exit %d, args %v: %s", code, got, errOut)
	}
	if _, _, errOut := run(t, context.Background(), "dataset", "-h"); !strings.Contains(errOut, "zz-added") || !strings.Contains(errOut, "list") {
		t.Errorf("dataset -h does not list the added subcommand:\n%s", errOut)
	}
	code, _, errOut := run(t, context.Background(), "dataset", "nope")
	if code != exitUsage || !strings.Contains(errOut, `unknown subcommand "nope"`) || !strings.Contains(errOut, "zz-added") {
		t.Errorf("unknown subcommand: exit %d: %s", code, errOut)
	}
}
