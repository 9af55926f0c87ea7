package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/nodetest"
)

// TestStatusPage renders the page of a running node over its admin
// listener: identity, evidence, members, and nothing of the records.
func TestStatusPage(t *testing.T) {
	s := nodetest.NewSpace(t)
	s.Valid = 10 * 24 * time.Hour
	n := s.Open(s.Config("uni-status"))
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
	h, err := n.VerifyEvidence(ctx)
	if err != nil || h.Count == 0 {
		t.Fatalf("evidence head: %d, %v", h.Count, err)
	}
	count, head := h.Count, h.Hash
	for _, want := range []string{
		`<span id="node-id">uni-status</span>`,
		`<td id="space">` + nodetest.SpaceID + `</td>`,
		`<td id="role">university</td>`,
		`<td id="institution">Institution uni-status</td>`,
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
