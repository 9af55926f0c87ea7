package node

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/keys"
)

// openStatusNode opens a node on its own embedded NATS server, with a
// credential issued here (package authority imports node, so an internal
// test issues it itself).
func openStatusNode(t *testing.T) *Node {
	t.Helper()
	dir := t.TempDir()
	ak, err := crypto.GenerateAuthorityKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "authority.pub.pem")
	if err := crypto.WriteAuthorityPublicKey(pubPath, ak.Public()); err != nil {
		t.Fatal(err)
	}
	nd := filepath.Join(dir, "uni-status")
	if _, err := keys.InitKeys(nd, "uni-status", crypto.DefaultSuite); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(nd, keys.RequestFile))
	if err != nil {
		t.Fatal(err)
	}
	var req keys.Request
	if err := json.Unmarshal(data, &req); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := ak.Issue(crypto.Credential{Space: "statusspace", NodeID: req.NodeID, Institution: "Status University",
		Role: crypto.RoleUniversity, KEMKeys: req.KEMKeys, SigningKeys: req.SigningKeys, CheckpointKeys: req.CheckpointKeys,
		IssuedAt: now, Expires: now.Add(10 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir, cfg.AuthorityKey = "uni-status", "statusspace", nd, pubPath
	cfg.Admin.Listen = "127.0.0.1:0"
	n, err := Open(context.Background(), cfg, Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n
}

// TestStatusPage renders the page of a running node over its admin
// listener: identity, evidence, members, and nothing of the records.
func TestStatusPage(t *testing.T) {
	n := openStatusNode(t)
	ctx := context.Background()
	var b strings.Builder
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S9%03d","course_code":"CS201","course_name":"Data structures","credits":4,"term":"2025-2026-1","score":%d}`+"\n", i, 70+i)
	}
	if _, err := n.Ingest(ctx, strings.NewReader(b.String()), ""); err != nil {
		t.Fatal(err)
	}
	if err := n.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get("http://" + n.AdminAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /status: %s\n%s", resp.Status, page)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	count, head, err := n.ev.Head(ctx)
	if err != nil || count == 0 {
		t.Fatalf("evidence head: %d, %v", count, err)
	}
	for _, want := range []string{
		`<span id="node-id">uni-status</span>`,
		`<td id="space">statusspace</td>`,
		`<td id="role">university</td>`,
		`<td id="institution">Status University</td>`,
		fmt.Sprintf(`<td class="n" id="evidence-count">%d</td>`, count),
		fmt.Sprintf(`<code id="evidence-head">%x…</code>`, head[:8]),
		`id="peer-uni-status"`,
		`<span class="ok">ready</span>`,
		`(in 9d)`, // credential expiry, under 30 days: flagged
		`<td class="n" id="consents">0</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, never := range []string{"S9000", "CS201", "Data structures", n.AdminToken(), "<script", "http://", "https://"} {
		if strings.Contains(page, never) {
			t.Errorf("page shows %q", never)
		}
	}
	if strings.Contains(page, `id="problems"`) {
		t.Errorf("page reports problems:\n%s", page)
	}
}

// TestStatusLoopbackOnly: the page answers loopback peers that no proxy
// relayed, and nobody else.
func TestStatusLoopbackOnly(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") })
	h := loopbackOnly(ok)
	for _, c := range []struct {
		remote string
		header string
		want   int
	}{
		{"127.0.0.1:5000", "", http.StatusOK},
		{"[::1]:5000", "", http.StatusOK},
		{"127.0.0.2:5000", "", http.StatusOK},
		{"192.0.2.7:5000", "", http.StatusForbidden},
		{"[2001:db8::1]:5000", "", http.StatusForbidden},
		{"127.0.0.1:5000", "X-Forwarded-For", http.StatusForbidden},
		{"127.0.0.1:5000", "Forwarded", http.StatusForbidden},
		{"garbage", "", http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodGet, "/status", nil)
		r.RemoteAddr = c.remote
		if c.header != "" {
			r.Header.Set(c.header, "192.0.2.9")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("remote %s, header %q: got %d, want %d", c.remote, c.header, w.Code, c.want)
		}
	}
}

func TestStatusDurations(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		t    time.Time
		want string
		warn bool
	}{
		{now.Add(400 * 24 * time.Hour), "in 400d", false},
		{now.Add(29 * 24 * time.Hour), "in 29d", true},
		{now.Add(90 * time.Minute), "in 1h30m0s", true},
		{now.Add(-3 * 24 * time.Hour), "expired 3d ago", true},
	} {
		got, warn := expiresIn(c.t, now)
		if got != c.want || warn != c.warn {
			t.Errorf("expiresIn(%v) = %q, %v; want %q, %v", c.t.Sub(now), got, warn, c.want, c.warn)
		}
	}
}
