package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/test/wait"
)

func run(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestDemoJSON(t *testing.T) {
	code, out, stderr := run(t, context.Background(), "demo", "--json", "--students", "60")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var res struct {
		Version          int            `json:"version"`
		Delivered        int            `json:"delivered"`
		Denied           map[string]int `json:"denied"`
		EvidenceVerified bool           `json:"evidence_verified"`
		Requested        int            `json:"erasures_requested"`
		Confirmed        int            `json:"erasures_confirmed"`
		Shares           []struct {
			Agreement string         `json:"agreement"`
			To        string         `json:"to"`
			Permitted int            `json:"permitted"`
			Denied    map[string]int `json:"denied"`
		} `json:"shares"`
		Aggregate *struct {
			CellsReleased   *int     `json:"cells_released"`
			CellsSuppressed *int     `json:"cells_suppressed"`
			EpsilonSpent    *float64 `json:"epsilon_spent"`
			Survivors       int      `json:"survivors"`
		} `json:"aggregate"`
		Joined *struct {
			Query        map[string]any `json:"query"`
			Participants []string       `json:"participants"`
			RhoSpent     float64        `json:"rho_spent"`
			Cells        []struct {
				Key        []string `json:"key"`
				Count      *int64   `json:"count"`
				Rate       *float64 `json:"rate"`
				Suppressed bool     `json:"suppressed"`
				Accuracy   *struct {
					HalfWidth float64 `json:"half_width"`
					Lower     float64 `json:"lower"`
					Upper     float64 `json:"upper"`
				} `json:"accuracy"`
			} `json:"cells"`
			Employment *struct {
				RhoSpent float64 `json:"rho_spent"`
			} `json:"employment"`
		} `json:"joined"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if res.Version != 1 || res.Delivered == 0 || len(res.Denied) == 0 || !res.EvidenceVerified {
		t.Errorf("got %+v, want version 1, delivered > 0, some denied, evidence verified", res)
	}
	if res.Requested == 0 || res.Confirmed != res.Requested {
		t.Errorf("erasures: %d requested, %d confirmed; want some, all confirmed", res.Requested, res.Confirmed)
	}
	// One aggregate round of the three universities: students by gender
	// (女, 男, other), the empty "other" cell suppressed under k.
	if ag := res.Aggregate; ag == nil || ag.CellsReleased == nil || ag.CellsSuppressed == nil || ag.EpsilonSpent == nil {
		t.Errorf("aggregate object missing or incomplete: %s", out)
	} else if *ag.CellsReleased+*ag.CellsSuppressed != 3 || *ag.CellsSuppressed < 1 || ag.Survivors != 3 ||
		*ag.EpsilonSpent <= 0 || *ag.EpsilonSpent > 1.5 {
		t.Errorf("aggregate: %d released, %d suppressed, ε = %v, %d survivors; want 3 cells, ≥ 1 suppressed, 0 < ε ≤ 1.5, 3 survivors",
			*ag.CellsReleased, *ag.CellsSuppressed, *ag.EpsilonSpent, ag.Survivors)
	}
	// The joined aggregate: the school's cohort linked to two universities,
	// progression rates by hukou_type and gender with their accuracy.
	if j := res.Joined; j == nil || j.Query["join"] == nil || len(j.Participants) != 3 || !(j.RhoSpent > 0) || len(j.Cells) != 9 || j.Employment == nil {
		t.Errorf("joined object missing or incomplete: %+v", res.Joined)
	} else {
		released := 0
		for _, c := range j.Cells {
			if c.Suppressed {
				if c.Count != nil || c.Rate != nil {
					t.Errorf("joined cell %q suppressed with figures", c.Key)
				}
				continue
			}
			released++
			if len(c.Key) != 2 || c.Count == nil || c.Rate == nil || c.Accuracy == nil || !(c.Accuracy.HalfWidth > 0) ||
				c.Accuracy.Lower > *c.Rate || c.Accuracy.Upper < *c.Rate {
				t.Errorf("joined cell %q: count %v rate %v accuracy %+v", c.Key, c.Count, c.Rate, c.Accuracy)
			}
		}
		if released < 4 {
			t.Errorf("joined: %d cells released, want the four (hukou_type × gender) at least", released)
		}
	}
	// Records reach the center only under its agreements that allow
	// microdata (the demo space's rulebook permits them); under an
	// aggregates-only agreement every record is denied.
	microdata, aggregatesOnly := 0, 0
	for _, sh := range res.Shares {
		if sh.To != "edu-center" {
			continue
		}
		switch sh.Agreement {
		case "xijiang-center-statistics", "beihu-center-health-study":
			if sh.Permitted == 0 || sh.Denied["center_aggregates_only"] != 0 {
				t.Errorf("share %s to the center under an agreement that allows microdata: %+v", sh.Agreement, sh)
			}
			microdata++
		default:
			if sh.Permitted != 0 || sh.Denied["center_aggregates_only"] == 0 || len(sh.Denied) != 1 {
				t.Errorf("share %s to the center under an aggregates-only agreement: %+v, want every record denied center_aggregates_only", sh.Agreement, sh)
			}
			aggregatesOnly++
		}
	}
	if microdata != 2 || aggregatesOnly != 1 {
		t.Errorf("shares to the center: %d under microdata agreements, %d under aggregates-only ones; want 2 and 1", microdata, aggregatesOnly)
	}
	for _, reason := range []string{"agreement_not_valid", "level_above_agreement", "minor_needs_guardian", "consent_missing", "center_aggregates_only"} {
		if res.Denied[reason] == 0 {
			t.Errorf("denied lacks %s: %v", reason, res.Denied)
		}
	}
}

func TestDemoDirKeepsFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "space")
	code, out, stderr := run(t, context.Background(), "demo", "--students", "20", "--dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if !strings.Contains(out, "every node's evidence chain verified") {
		t.Errorf("summary lacks the evidence verdict:\n%s", out)
	}
	// The consented study fits one envelope, and says so in the singular.
	if !strings.Contains(out, "permitted in 1 envelope,") || strings.Contains(out, " 1 envelopes") {
		t.Errorf("summary counts one envelope wrongly:\n%s", out)
	}
	for _, f := range []string{
		"authority/authority.pub.pem", "authority/authority.key.pem",
		"nodes/uni-beihu/credential.jwt", "nodes/uni-beihu/node.db", "nodes/uni-beihu/keys/kem.pem",
		"nodes/edu-center/credential.jwt", "nodes/edu-center/node.db",
	} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("kept files lack %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "nodes/uni-beihu/keys/signing.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("signing key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	// A second run into the same directory is refused rather than mixed in.
	if code, _, _ := run(t, context.Background(), "demo", "--dir", dir); code != exitFailure {
		t.Errorf("demo into a non-empty dir: exit %d, want %d", code, exitFailure)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"demo", "--bogus"},
		{"demo", "extra"},
		{"node", "run"},
		{"node", "explode"},
		{"authority", "issue", "--dir", "x"},
		{"share", "--token-file", "x"},
	} {
		if code, _, _ := run(t, context.Background(), args...); code != exitUsage {
			t.Errorf("eduspace %v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := run(t, context.Background(), "version"); code != exitOK || !strings.HasPrefix(out, "eduspace ") {
		t.Errorf("version: exit %d, output %q", code, out)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDaemon walks the operator's path from the README: authority init,
// node init, authority issue, node run; then ingest through the admin API
// with the CLI, and a clean stop when the context ends (as on SIGTERM).
func TestDaemon(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	admin := freePort(t)
	cfg := fmt.Sprintf("node_id: uni-test\nspace: test\ndata_dir: data\nauthority_public_key: authority/authority.pub.pem\nadmin:\n  listen: %s\n", admin)
	cfgPath := filepath.Join(dir, "node.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	for _, args := range [][]string{
		{"authority", "init", "--dir", filepath.Join(dir, "authority")},
		{"node", "init", "--config", cfgPath},
		{"authority", "issue", "--dir", filepath.Join(dir, "authority"), "--request", filepath.Join(dir, "data", "node-request.json"),
			"--space", "test", "--institution", "Test University", "--out", filepath.Join(dir, "data", "credential.jwt")},
	} {
		if code, _, stderr := run(t, ctx, args...); code != exitOK {
			t.Fatalf("eduspace %v: exit %d: %s", args, code, stderr)
		}
	}
	stop := startDaemon(t, ctx, cfgPath, admin)
	recs := filepath.Join(dir, "records.ndjson")
	os.WriteFile(recs, []byte(`{"student_id":"S1","course_code":"CS101","score":90}`+"\n"+`{"student_id":"S2","score":-1,"bogus":1}`+"\n"), 0o644)
	// One record stored, one refused: the command says so and exits 1.
	code, out, stderr := run(t, ctx, "ingest", "--node", "http://"+admin, "--token-file", filepath.Join(dir, "data", "admin.token"), "--type", "course_grade", recs)
	if code != exitFailure || !strings.Contains(stderr, "1 records refused (unknown_field 1)") {
		t.Fatalf("ingest with a refused record: exit %d: %s", code, stderr)
	}
	var ir struct{ Stored, Invalid int }
	if err := json.Unmarshal([]byte(out), &ir); err != nil || ir.Stored != 1 || ir.Invalid != 1 {
		t.Errorf("ingest result %q (%v): want 1 stored, 1 invalid", out, err)
	}
	if code, _, _ := run(t, ctx, "ingest", "--node", "http://"+admin, "--token-file", cfgPath, recs); code != exitFailure {
		t.Errorf("ingest with a wrong token: exit %d, want %d", code, exitFailure)
	}
	// The node's config names the admin API and the token: --config, or
	// EDUSPACE_CONFIG.
	if code, out, stderr := run(t, ctx, "ingest", "--config", cfgPath, "--type", "course_grade", recs); code != exitFailure || !strings.Contains(out, `"records": 2`) {
		t.Errorf("ingest --config: exit %d: %s%s", code, out, stderr)
	}
	// xAPI statements, named by --format: an LRS statement result of two,
	// one refused whole for an Agent object.
	stmts := filepath.Join(dir, "statements.json")
	os.WriteFile(stmts, []byte(`{"statements":[`+
		`{"actor":{"mbox":"mailto:s1@example.edu.cn"},"verb":{"id":"http://adlnet.gov/expapi/verbs/completed"},"object":{"id":"http://example.edu.cn/unit/1"},"result":{"completion":true}},`+
		`{"actor":{"mbox":"mailto:s2@example.edu.cn"},"verb":{"id":"http://adlnet.gov/expapi/verbs/attempted"},"object":{"objectType":"Agent","mbox":"mailto:s3@example.edu.cn"}}]}`), 0o644)
	code, out, stderr = run(t, ctx, "ingest", "--config", cfgPath, "--format", "xapi", stmts)
	ir = struct{ Stored, Invalid int }{}
	if err := json.Unmarshal([]byte(out), &ir); code != exitFailure || err != nil || ir.Stored != 1 || ir.Invalid != 1 ||
		!strings.Contains(stderr, "1 records refused (enum 1)") || strings.Contains(out+stderr, "example.edu.cn") {
		t.Errorf("ingest --format xapi: exit %d, %v: %s%s", code, err, out, stderr)
	}
	// Without --format, the node detects them as classify does.
	code, out, stderr = run(t, ctx, "ingest", "--config", cfgPath, stmts)
	ir = struct{ Stored, Invalid int }{}
	if err := json.Unmarshal([]byte(out), &ir); code != exitFailure || err != nil || ir.Invalid != 1 || !strings.Contains(out, `"format": "xapi"`) {
		t.Errorf("ingest of xAPI statements, format detected: exit %d, %v: %s%s", code, err, out, stderr)
	}
	t.Setenv("EDUSPACE_CONFIG", cfgPath)
	if code, out, stderr := run(t, ctx, "agreement", "list"); code != exitOK {
		t.Errorf("agreement list with EDUSPACE_CONFIG: exit %d: %s%s", code, out, stderr)
	}
	// The node's state on one screen, and as JSON.
	if code, out, stderr := run(t, ctx, "status"); code != exitOK || !strings.Contains(out, "uni-test (Test University, university)") ||
		!strings.Contains(out, "ready") || !strings.Contains(out, "key") ||
		!strings.Contains(out, "checkpoints unanchored (no checkpoint.tsa_url)") {
		t.Errorf("status: exit %d: %s%s", code, out, stderr)
	}
	code, out, stderr = run(t, ctx, "status", "--json")
	var ov struct {
		Node   string   `json:"node"`
		Ready  bool     `json:"ready"`
		Health []string `json:"health"`
		Keys   []struct{ Kind, ID string }
	}
	if err := json.Unmarshal([]byte(out), &ov); code != exitOK || err != nil || ov.Node != "uni-test" || !ov.Ready || len(ov.Keys) != 3 {
		t.Errorf("status --json: exit %d, %v: %+v %s", code, err, ov, stderr)
	}
	// An online backup while the node runs; never over an existing file.
	backup := filepath.Join(dir, "backup.db")
	if code, out, stderr := run(t, ctx, "node", "backup", "--config", cfgPath, "--out", backup); code != exitOK || !strings.Contains(out, "chain verified") {
		t.Errorf("node backup: exit %d: %s%s", code, out, stderr)
	}
	if code, _, stderr := run(t, ctx, "node", "backup", "--config", cfgPath, "--out", backup); code != exitFailure || !strings.Contains(stderr, "exists") {
		t.Errorf("node backup over an existing file: exit %d: %s", code, stderr)
	}
	if code, _, _ := run(t, ctx, "node", "backup", "--config", cfgPath); code != exitUsage {
		t.Errorf("node backup without --out: exit %d, want %d", code, exitUsage)
	}
	// A node that is not restored from an older copy has nothing to recover.
	if code, _, stderr := run(t, ctx, "node", "recover", "--config", cfgPath, "--timeout", "5s"); code != exitFailure || !strings.Contains(stderr, "Nothing to recover") {
		t.Errorf("node recover on a node not restored: exit %d: %s", code, stderr)
	}
	// The data key rotated while the node runs: the old key is kept at
	// least a minute, and a second rotation meanwhile is refused.
	var dk struct {
		Current  string   `json:"current"`
		Retiring []string `json:"retiring"`
		State    string   `json:"state"`
	}
	code, out, stderr = run(t, ctx, "node", "rotate-data-key", "--config", cfgPath, "--status")
	if err := json.Unmarshal([]byte(out), &dk); code != exitOK || err != nil || dk.Current == "" || len(dk.Retiring) != 0 {
		t.Fatalf("node rotate-data-key --status: exit %d, %v: %s%s", code, err, out, stderr)
	}
	old := dk.Current
	code, out, stderr = run(t, ctx, "node", "rotate-data-key", "--config", cfgPath)
	if err := json.Unmarshal([]byte(out), &dk); code != exitOK || err != nil || dk.Current == old || len(dk.Retiring) != 1 || dk.Retiring[0] != old {
		t.Errorf("node rotate-data-key: exit %d, %v: %s%s; want a new key current and %s retiring", code, err, out, stderr, old)
	}
	if code, _, stderr := run(t, ctx, "node", "rotate-data-key", "--config", cfgPath); code != exitFailure || !strings.Contains(stderr, "under way") {
		t.Errorf("a second node rotate-data-key at once: exit %d: %s; want %d and why", code, stderr, exitFailure)
	}
	stop()
}

func TestNATSConfigCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "nats-server.conf")
	code, _, stderr := run(t, context.Background(), "authority", "nats-config", "--dir", dir, "--space", "demo",
		"--members", "uni-a,uni-b", "--listen", "127.0.0.1:4222", "--store", filepath.Join(dir, "js"), "--out", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	conf, _ := os.ReadFile(out)
	for _, want := range []string{`"eds.demo.deliver.uni-b.uni-a"`, `"eds.demo.deliver.uni-a.uni-b"`, `"$JS.API.CONSUMER.DELETE.KV_eds_demo_registry.watch_uni-a"`, `"_INBOX_uni-a.>"`, "jetstream: enabled"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("configuration lacks %s", want)
		}
	}
	// Members publish to members only: nothing to addressees by wildcard.
	if strings.Contains(string(conf), `"eds.demo.deliver.*.`) {
		t.Error("configuration lets members publish deliveries to any addressee")
	}
	for _, f := range []string{"operator.nk", "uni-a.nk", "uni-b.nk"} {
		fi, err := os.Stat(filepath.Join(dir, "nats", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("seed %s: %v (want mode 0600)", f, err)
		}
	}
	if code, _, _ := run(t, context.Background(), "authority", "nats-config", "--dir", dir, "--space", "demo", "--members", "Bad Id"); code != exitFailure {
		t.Errorf("invalid member id: exit %d, want %d", code, exitFailure)
	}
}

// TestHelpEverywhere walks the command tree: `-h` and `--help` on every
// command and subcommand exit 0 with the usage and an example whose flags
// the command has; `eduspace help` lists every command and subcommand;
// `eduspace help CMD` is `eduspace CMD -h`.
func TestHelpEverywhere(t *testing.T) {
	ctx := context.Background()
	_, _, list := run(t, ctx, "help")
	var paths [][]string
	for _, c := range commands() {
		if !strings.Contains(list, "  "+c.name+" ") {
			t.Errorf("eduspace help does not list %s", c.name)
		}
		paths = append(paths, []string{c.name})
		for _, sc := range c.subs {
			if !strings.Contains(list, "    "+sc.name+" ") {
				t.Errorf("eduspace help does not list %s %s", c.name, sc.name)
			}
			paths = append(paths, []string{c.name, sc.name})
		}
	}
	flagRE := regexp.MustCompile(`(?:^|\s)--([a-z][a-z-]*)`)
	for _, p := range paths {
		name := strings.Join(p, " ")
		for _, h := range []string{"-h", "--help"} {
			code, stdout, stderr := run(t, ctx, append(append([]string{}, p...), h)...)
			out := stdout + stderr
			if code != exitOK || !strings.Contains(out, "usage: eduspace "+name) || !strings.Contains(out, "example:") {
				t.Errorf("eduspace %s %s: exit %d, output:\n%s", name, h, code, out)
				continue
			}
			ex := examples[name]
			if len(p) == 1 {
				for _, c := range commands() {
					if c.name == name && len(c.subs) > 0 {
						ex = "" // a group's example is its first subcommand's
					}
				}
			}
			for _, m := range flagRE.FindAllStringSubmatch(ex, -1) {
				if !strings.Contains(out, "  -"+m[1]+" ") && !strings.Contains(out, "  -"+m[1]+"\n") {
					t.Errorf("eduspace %s: the example uses --%s, which the command does not have", name, m[1])
				}
			}
		}
	}
	code, _, stderr := run(t, ctx, "help", "node")
	if code != exitOK || !strings.Contains(stderr, "usage: eduspace node <subcommand>") {
		t.Errorf("eduspace help node: exit %d: %s", code, stderr)
	}
}

// TestHelpShowsWhatTheCommandTakes: -h names the operands a command takes
// and lists only the flags it has: a FILE for consent grant and inspect,
// --id only where an agreement is named, --id and --csv only for
// releases, the actions of aggregate query whichever is asked; no empty
// flags section.
func TestHelpShowsWhatTheCommandTakes(t *testing.T) {
	for _, c := range []struct {
		args         []string
		want, reject []string
	}{
		{[]string{"consent", "grant"}, []string{"usage: eduspace consent grant [flags] FILE.json"}, nil},
		{[]string{"inspect"}, []string{"usage: eduspace inspect [flags] FILE"}, []string{"flags:"}},
		{[]string{"version"}, []string{"usage: eduspace version [flags]"}, []string{"flags:"}},
		{[]string{"agreement", "list"}, []string{"-token-file"}, []string{"-id"}},
		{[]string{"agreement", "propose"}, []string{"FILE.json"}, []string{"-id"}},
		{[]string{"agreement", "accept"}, []string{"-id string"}, nil},
		{[]string{"aggregate", "rounds"}, []string{"-config"}, []string{"-id", "-csv"}},
		{[]string{"aggregate", "budgets"}, []string{"-config"}, []string{"-id", "-csv"}},
		{[]string{"aggregate", "releases"}, []string{"-id string", "-csv"}, nil},
		{[]string{"aggregate", "query", "submit"}, []string{"actions: submit FILE.json", "cancel --id ID"}, nil},
	} {
		code, stdout, stderr := run(t, context.Background(), append(c.args, "-h")...)
		out := stdout + stderr
		if code != exitOK {
			t.Errorf("%v -h: exit %d", c.args, code)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v -h lacks %q:\n%s", c.args, w, out)
			}
		}
		for _, r := range c.reject {
			if strings.Contains(out, r) {
				t.Errorf("%v -h shows %q, which the command does not take:\n%s", c.args, r, out)
			}
		}
	}
}

// TestClientHonoursRetryAfter: a 409 with Retry-After (an agreement whose
// acceptance is on its way) is asked again, the body sent again whole; a
// 409 without it is an error at once.
func TestClientHonoursRetryAfter(t *testing.T) {
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		calls = append(calls, string(body))
		if len(calls) < 3 {
			w.Header().Set("Retry-After", "0")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"title":"Agreement not in force yet","detail":"try again"}`)
			return
		}
		io.WriteString(w, `{"agreement":"a1","permitted":3}`)
	}))
	defer srv.Close()
	_, tok := tokenFile(t)
	code, out, stderr := run(t, context.Background(), "share", "--node", srv.URL, "--token-file", tok, "--agreement", "a1")
	if code != exitOK || !strings.Contains(out, `"permitted": 3`) {
		t.Fatalf("share: exit %d: %s%s", code, out, stderr)
	}
	if len(calls) != 3 || calls[0] != calls[2] || !strings.Contains(calls[0], "a1") {
		t.Errorf("requests %q: want three, the same body each time", calls)
	}

	// A file streamed under the agreement is sent again whole, from its
	// start, and its refused records make the exit non-zero.
	calls = nil
	var paths []string
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		calls, paths = append(calls, string(body)), append(paths, r.URL.Path+"?"+r.URL.RawQuery)
		if len(calls) < 2 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"title":"Agreement not in force yet","detail":"try again"}`)
			return
		}
		io.WriteString(w, `{"agreement":"a1","permitted":2,"invalid":1,"by_reason":{"required":1}}`)
	})
	file := filepath.Join(t.TempDir(), "grades.csv")
	os.WriteFile(file, []byte("student_id,course_code,score\nS1,CS101,90\nS2,CS101,80\n,CS101,70\n"), 0o600)
	code, out, stderr = run(t, context.Background(), "share", "--node", srv.URL, "--token-file", tok, "--agreement", "a1", "--type", "course_grade", file)
	if code != exitFailure || !strings.Contains(stderr, "1 records refused (required 1)") {
		t.Errorf("share FILE with a refused record: exit %d: %s%s", code, out, stderr)
	}
	if len(calls) != 2 || calls[0] != calls[1] || !strings.HasPrefix(calls[0], "student_id,") ||
		!strings.HasPrefix(paths[0], "/v1/agreements/a1/stream?") || !strings.Contains(paths[0], "type=course_grade") {
		t.Errorf("requests %q to %q: want the whole file twice, streamed under a1", calls, paths)
	}
}

// TestReceivedExportFile: an export goes to its file only when it is
// whole: its digest matches the one the node announced and no error came
// in the trailer. Otherwise no file, not even a partial one, and a
// non-zero exit.
func TestReceivedExportFile(t *testing.T) {
	body := "{\"type\":\"course_grade\",\"score\":90}\n"
	sum := sha256.Sum256([]byte(body))
	var digest, trailerErr string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/received" || r.URL.Query().Get("agreement") != "a1" || r.URL.Query().Get("format") != "ndjson" {
			t.Errorf("request %s", r.URL)
		}
		w.Header().Set("Eduspace-Export-Records", "1")
		w.Header().Set("Eduspace-Export-Digest", digest)
		w.Header().Set("Trailer", "Eduspace-Export-Error")
		io.WriteString(w, body)
		if trailerErr != "" {
			w.Header().Set("Eduspace-Export-Error", trailerErr)
		}
	}))
	defer srv.Close()
	dir, tok := tokenFile(t)
	out := filepath.Join(dir, "export.ndjson")
	export := func() (int, string) {
		code, _, stderr := run(t, context.Background(), "received", "export", "--node", srv.URL, "--token-file", tok, "--agreement", "a1", "--out", out)
		return code, stderr
	}
	for _, c := range []struct {
		name, digest, trailer string
		ok                    bool
	}{
		{"whole", hex.EncodeToString(sum[:]), "", true},
		{"digest differs", strings.Repeat("0", 64), "", false},
		{"cut short", hex.EncodeToString(sum[:]), "envelope e1 as stored does not decode", false},
	} {
		os.Remove(out)
		digest, trailerErr = c.digest, c.trailer
		code, stderr := export()
		data, err := os.ReadFile(out)
		if c.ok && (code != exitOK || string(data) != body) {
			t.Errorf("%s: exit %d, file %q, %v: %s", c.name, code, data, err, stderr)
		}
		if !c.ok && (code == exitOK || err == nil || !strings.Contains(stderr, "was not written")) {
			t.Errorf("%s: exit %d, file %q: %s; want a failure and no file", c.name, code, data, stderr)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".export.ndjson.partial-*")); len(left) > 0 {
			t.Errorf("%s: partial files left: %v", c.name, left)
		}
	}
	// A CSV export is of one record type: without --type the command
	// says so, before asking the node.
	code, _, stderr := run(t, context.Background(), "received", "export", "--node", srv.URL, "--token-file", tok, "--agreement", "a1", "--format", "csv")
	if code != exitUsage || !strings.Contains(stderr, "--format csv needs --type") {
		t.Errorf("CSV export without --type: exit %d: %s", code, stderr)
	}
}

// TestUploadProgress: a file sent to a terminal shows the lines sent, the
// bytes of the whole and the time left; rewound for a retry, it counts
// again from the start.
func TestUploadProgress(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "records-*.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(strings.Repeat("{\"type\":\"course_grade\"}\n", 1000))
	f.Seek(0, io.SeekStart)
	var out bytes.Buffer
	u := &upload{r: f, size: 24000, out: &out, start: time.Now().Add(-2 * time.Second), last: time.Now().Add(-2 * time.Second)}
	buf := make([]byte, 12000)
	if _, err := u.Read(buf); err != nil {
		t.Fatal(err)
	}
	if line := out.String(); !strings.Contains(line, "500 lines sent") || !strings.Contains(line, "0.0 of 0.0 MiB (50%)") || !strings.Contains(line, "left") {
		t.Errorf("progress line %q: want 500 lines, half of the file and the time left", line)
	}
	if _, err := u.Seek(0, io.SeekStart); err != nil || u.lines != 0 || u.sent != 0 {
		t.Errorf("after a rewind: %d lines, %d bytes, %v", u.lines, u.sent, err)
	}
	u.stop()
	if !strings.HasSuffix(out.String(), "\n") {
		t.Error("the progress line is not ended")
	}
}

// TestAuditFetch: the export a node streams is kept only when it reads as
// an evidence export and no error came in its trailer.
func TestAuditFetch(t *testing.T) {
	var body, trailerErr string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/evidence/export" {
			t.Errorf("request %s", r.URL)
		}
		w.Header().Set("Trailer", "Eduspace-Export-Error")
		io.WriteString(w, body)
		if trailerErr != "" {
			w.Header().Set("Eduspace-Export-Error", trailerErr)
		}
	}))
	defer srv.Close()
	dir, tok := tokenFile(t)
	out := filepath.Join(dir, "uni-a.evidence.jsonl")
	header := `{"type":"header","format":"eduspace-evidence-export","version":1,"node":"uni-a","exported":"2026-12-04T09:00:00Z","entries":0,"checkpoints":0}` + "\n"
	for _, c := range []struct {
		name, body, trailer string
		ok                  bool
	}{
		{"an export", header, "", true},
		{"cut short", header, "database is locked", false},
		{"not an export", "<html>proxy error</html>\n", "", false},
	} {
		os.Remove(out)
		body, trailerErr = c.body, c.trailer
		code, stdout, stderr := run(t, context.Background(), "audit", "fetch", "--node", srv.URL, "--token-file", tok, "--out", out)
		_, err := os.Stat(out)
		if c.ok && (code != exitOK || err != nil || !strings.Contains(stdout, "evidence log of uni-a")) {
			t.Errorf("%s: exit %d, %v: %s%s", c.name, code, err, stdout, stderr)
		}
		if !c.ok && (code == exitOK || err == nil) {
			t.Errorf("%s: exit %d, file kept: %v", c.name, code, err)
		}
	}
}

// tokenFile is a temporary directory with an admin token file in it, for
// client commands talking to a test server.
func tokenFile(t *testing.T) (dir, tok string) {
	t.Helper()
	dir = t.TempDir()
	tok = filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tok, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, tok
}

// startDaemon starts `eduspace node run --config cfgPath` and waits until the
// admin listener admin answers /readyz 200. stop ends the node and checks
// it exits 0 within 20 s; it is also called when the test ends.
func startDaemon(t *testing.T, ctx context.Context, cfgPath, admin string) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		code, _, _ := run(t, runCtx, "node", "run", "--config", cfgPath)
		done <- code
	}()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("node run ended with exit %d, want 0", code)
			}
		case <-time.After(20 * time.Second):
			t.Error("node run did not stop within 20s of its context ending")
		}
	}
	t.Cleanup(stop)
	wait.UntilErr(t, 20*time.Second, "the node to be ready", func() error {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	return stop
}

// TestDemoGMT runs the demo on the GM/T suite: the space's policy selects
// it, every node holds SM2 keys, the shares go through, and each kept log
// verifies with audit verify against the authority's key.
func TestDemoGMT(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "space")
	code, out, stderr := run(t, context.Background(), "demo", "--suite", "sm2-sm3-sm4gcm", "--students", "20", "--dir", dir)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"suite sm2-sm3-sm4gcm", "every node's evidence chain verified", "authority: space policy selecting suite sm2-sm3-sm4gcm"} {
		if !strings.Contains(out+stderr, want) {
			t.Errorf("output lacks %q:\n%s\n%s", want, out, stderr)
		}
	}
	for file, block := range map[string]string{"keys/kem.pem": "EDUSPACE SM2 KEY", "keys/signing.pem": "EDUSPACE SM2 SIGNING KEY"} {
		data, err := os.ReadFile(filepath.Join(dir, "nodes/uni-beihu", file))
		if err != nil || !strings.Contains(string(data), "-----BEGIN "+block+"-----") {
			t.Errorf("%s: %v; want a PEM block %s", file, err, block)
		}
	}
	// The credentials are signed by the root's SM2 key (alg SM2).
	tok, err := os.ReadFile(filepath.Join(dir, "nodes/uni-beihu/credential.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	header, _, _ := strings.Cut(string(tok), ".")
	if h, err := base64.RawURLEncoding.DecodeString(header); err != nil || !strings.Contains(string(h), `"alg":"SM2"`) {
		t.Errorf("credential header %s, %v; want alg SM2", h, err)
	}
	for _, id := range []string{"uni-beihu", "uni-nanshan", "edu-center"} {
		code, out, stderr := run(t, context.Background(), "audit", "verify", "--db", filepath.Join(dir, "nodes", id, "node.db"),
			"--authority", filepath.Join(dir, "authority/authority.pub.pem"))
		if code != exitOK || !strings.Contains(out, "hash         SM3") || !strings.Contains(out, "authenticated with authority") {
			t.Errorf("audit verify %s: exit %d, want 0, an SM3 chain and SM2 checkpoints authenticated\n%s\n%s", id, code, out, stderr)
		}
	}
	if code, _, stderr := run(t, context.Background(), "demo", "--suite", "sm2-sm3-sm4", "--students", "1"); code != exitUsage || !strings.Contains(stderr, "sm2-sm3-sm4gcm") {
		t.Errorf("an unknown suite: exit %d, stderr %q; want a usage error naming the known suites", code, stderr)
	}
}
