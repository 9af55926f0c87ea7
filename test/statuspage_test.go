package test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// chromiumDOM loads url in headless Chromium (Debian's package) and
// returns the DOM as rendered.
func chromiumDOM(t *testing.T, url string) string {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium not on PATH (apt-get install chromium; .ci/run does): skipping the status page in a browser")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom %s: %v\n%s", url, err, stderr.String())
	}
	return string(out)
}

// text is the DOM with tags removed and white space folded, the way a
// person reads the page.
func text(dom string) string {
	s := regexp.MustCompile(`(?s)<style.*?</style>|<[^>]+>`).ReplaceAllString(dom, " ")
	return strings.Join(strings.Fields(s), " ")
}

// TestStatusPageInBrowser opens the status pages of two nodes that have
// exchanged records in headless Chromium and checks what a person sees:
// who the node is, the exchange from both sides, the members and their
// credentials, the evidence head; and nothing of the records.
func TestStatusPageInBrowser(t *testing.T) {
	s := newSpace(t)
	ctx := context.Background()
	a := s.member("uni-a", crypto.DefaultSuite)
	b := s.member("uni-b", crypto.DefaultSuite)
	data, _ := records(time.Now())
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "status", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code"}},
		MaxLevel: schema.L2, RetentionDays: 1, ValidFrom: time.Now().Add(-time.Hour), ValidUntil: time.Now().Add(time.Hour)}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != 27 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b and their receipts at uni-a", func() bool {
		sb, _ := b.Status(ctx)
		return sb.Received == 27 && scrapeValue(t, a, "eduspace_envelopes_awaiting_receipt") == "0"
	})
	for _, n := range []*node.Node{a, b} {
		if err := n.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	head, err := b.VerifyEvidence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "each node to hold the other's checkpoint", func() bool {
		ca, _ := a.CheckpointHeld(ctx, "uni-b")
		cb, _ := b.CheckpointHeld(ctx, "uni-a")
		return ca > 0 && cb > 0
	})

	domB := chromiumDOM(t, "http://"+b.AdminAddr()+"/status")
	os.WriteFile(filepath.Join(t.TempDir(), "status-uni-b.html"), []byte(domB), 0o644)
	pageB := text(domB)
	envelopes := (27 + 9) / 10 // batch.max_records is 10 in newSpace
	for _, want := range []string{
		"eduspace node uni-b",
		"Space e2e",
		"Role university",
		"Institution Institution uni-b",
		"State ready · NATS connected",
		fmt.Sprintf("Envelopes received and stored %d %d", envelopes, envelopes),
		"… records in them 27 27",
		"Envelopes refused 0",
		"uni-a Institution uni-a university valid (registry)",
		"uni-b (this node) Institution uni-b university valid (this node)",
		"Consent records 0",
	} {
		if !strings.Contains(pageB, want) {
			t.Errorf("uni-b's page lacks %q", want)
		}
	}
	if !regexp.MustCompile(`Entries in the hash chain \d+ Head hash \(prefix\) [0-9a-f]{16}…`).MatchString(pageB) {
		t.Errorf("uni-b's page shows no evidence head")
	}
	if head.Count == 0 {
		t.Error("uni-b's evidence log is empty")
	}

	pageA := text(chromiumDOM(t, "http://"+a.AdminAddr()+"/status"))
	for _, want := range []string{
		"eduspace node uni-a",
		fmt.Sprintf("Envelopes of records sealed %d %d", envelopes, envelopes),
		fmt.Sprintf("… confirmed by a signed receipt %d %d", envelopes, envelopes),
		"Policy decisions: permit 27",
		"Outbox depth (not yet accepted by JetStream) 0",
		"Envelopes awaiting a receipt 0",
		"uni-b Institution uni-b university valid (registry)",
	} {
		if !strings.Contains(pageA, want) {
			t.Errorf("uni-a's page lacks %q", want)
		}
	}
	for _, page := range []string{pageA, pageB} {
		for _, never := range []string{"S0001", "CS201", "张", a.AdminToken(), b.AdminToken()} {
			if strings.Contains(page, never) {
				t.Errorf("a status page shows %q", never)
			}
		}
	}
	if t.Failed() {
		t.Logf("uni-a's page as read:\n%s\n\nuni-b's page as read:\n%s", pageA, pageB)
	}
}

// scrapeValue is the value of an unlabelled metric in n's /metrics.
func scrapeValue(t *testing.T, n *node.Node, name string) string {
	t.Helper()
	for _, line := range strings.Split(nodetest.Scrape(t, n), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestHostHeaderRefused plays a web page that rebinds a name of its own to
// the node's loopback address (DNS rebinding): the admin listener answers
// requests naming it by loopback, and refuses the status page, the metrics
// and the API to any other Host with 421.
func TestHostHeaderRefused(t *testing.T) {
	s := newSpace(t)
	n := s.member("uni-a", crypto.SuiteX25519)
	get := func(path, host string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+n.AdminAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		req.Header.Set("Authorization", "Bearer "+n.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	_, port, err := net.SplitHostPort(n.AdminAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/status", "/metrics", "/v1/status", "/healthz"} {
		for _, host := range []string{"", "localhost:" + port, "[::1]:" + port} {
			if got := get(path, host); got != http.StatusOK {
				t.Errorf("GET %s with Host %q: %d, want 200", path, host, got)
			}
		}
		for _, host := range []string{"attacker.example:" + port, "attacker.example", "127.0.0.1.attacker.example"} {
			if got := get(path, host); got != http.StatusMisdirectedRequest {
				t.Errorf("GET %s with Host %q: %d, want 421", path, host, got)
			}
		}
	}
}
