package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/release"
)

// TestDatasetReleaseCommand: `eduspace dataset release` posts the request,
// shows the node's progress on stderr and writes the release to --out; a
// refusal exits 1 naming the reason, rule and clause; flags that do not
// fit together are usage errors, before the node is asked.
func TestDatasetReleaseCommand(t *testing.T) {
	var answer []admin.ReleaseLine
	var got release.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/releases" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &got); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, l := range answer {
			enc.Encode(l)
		}
	}))
	defer srv.Close()
	dir, tok := tokenFile(t)
	out := filepath.Join(dir, "release.json")
	ctx := context.Background()

	answer = []admin.ReleaseLine{{Progress: "deciding the held records under agreement la"},
		{Release: &release.Release{ID: "rel-01", Agreement: "la", Recipient: "ai-1", Method: release.MethodK, Records: 57, Digest: strings.Repeat("a", 64)}}}
	code, stdout, stderr := run(t, ctx, "dataset", "release", "--node", srv.URL, "--token-file", tok, "--agreement", "la", "--k", "7", "--types", "student", "--out", out)
	data, err := os.ReadFile(out)
	var rel release.Release
	if code != exitOK || err != nil || json.Unmarshal(data, &rel) != nil || rel.ID != "rel-01" || stdout != "" ||
		!strings.Contains(stderr, "deciding the held records") || !strings.Contains(stderr, "release rel-01: 57 rows to ai-1") {
		t.Errorf("release: exit %d, file %s (%v), stdout %q, stderr %q", code, data, err, stdout, stderr)
	}
	if got.Agreement != "la" || got.K != 7 || got.DP || len(got.Types) != 1 || got.Types[0] != "student" {
		t.Errorf("request %+v", got)
	}

	answer = []admin.ReleaseLine{{Refusal: &release.Refusal{Rule: "rulebook.training.minor", Reason: "training_minor_needs_guardian",
		Clause: "PIPL art. 28, 31", Records: 2, Detail: "2 source records would break rule rulebook.training.minor"}, Error: "refused"}}
	code, _, stderr = run(t, ctx, "dataset", "release", "--node", srv.URL, "--token-file", tok, "--agreement", "train", "--dp", "--epsilon", "0.5")
	if code != exitFailure || !strings.Contains(stderr, "training_minor_needs_guardian") || !strings.Contains(stderr, "PIPL art. 28, 31") {
		t.Errorf("refusal: exit %d: %s", code, stderr)
	}
	if !got.DP || got.Epsilon != 0.5 {
		t.Errorf("dp request %+v", got)
	}

	for _, args := range [][]string{
		{"--dp"},           // no ε
		{"--epsilon", "1"}, // ε without --dp
		{"--k", "1"},       // k below 2
		{},                 // no agreement
	} {
		a := append([]string{"dataset", "release", "--node", srv.URL, "--token-file", tok}, args...)
		if len(args) > 0 {
			a = append(a, "--agreement", "la")
		}
		if code, _, stderr := run(t, ctx, a...); code != exitUsage {
			t.Errorf("dataset release %v: exit %d, want %d: %s", args, code, exitUsage, stderr)
		}
	}
}

// TestDatasetReleaseIDAndOut: --id is escaped into one path segment (an id
// with a slash cannot reach another admin route), and a --out file that
// cannot be written whole (a full device) exits non-zero naming the
// release to fetch again, never reporting success.
func TestDatasetReleaseIDAndOut(t *testing.T) {
	var uris []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uris = append(uris, r.RequestURI)
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"x"}`)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		json.NewEncoder(w).Encode(admin.ReleaseLine{Release: &release.Release{ID: "rel-02", Agreement: "la", Recipient: "ai-1",
			Method: release.MethodK, Records: 3, Digest: strings.Repeat("b", 64)}})
	}))
	defer srv.Close()
	_, tok := tokenFile(t)
	ctx := context.Background()

	if code, _, stderr := run(t, ctx, "dataset", "release", "--node", srv.URL, "--token-file", tok, "--id", "../agreements/x y"); code != exitOK {
		t.Fatalf("--id: exit %d: %s", code, stderr)
	}
	if want := "/v1/releases/..%2Fagreements%2Fx%20y"; len(uris) != 1 || uris[0] != want {
		t.Errorf("--id requested %q, want [%q]", uris, want)
	}

	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to stand for a full disk")
	}
	code, stdout, stderr := run(t, ctx, "dataset", "release", "--node", srv.URL, "--token-file", tok, "--agreement", "la", "--out", "/dev/full")
	if code == exitOK || !strings.Contains(stderr, "--out") || !strings.Contains(stderr, "--id rel-02") || strings.Contains(stderr, "3 rows to ai-1") {
		t.Errorf("--out on a full device: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
