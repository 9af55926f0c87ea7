package test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
)

// readyz is a node's /readyz status code and the problem's detail.
func readyz(t *testing.T, n *node.Node) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct{ Detail string }
	json.NewDecoder(resp.Body).Decode(&p)
	return resp.StatusCode, p.Detail
}

// TestReadyzHonest: /readyz answers 503, saying why, for a disk below
// storage.min_free_mib and for an expired own credential; the status says
// the same; a healthy node answers 200.
func TestReadyzHonest(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	var ahead atomic.Int64 // how far uni-b's clock runs ahead
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.memberEnv("uni-b", crypto.SuiteX25519, node.Env{Now: clock})
	full := s.member("uni-full", crypto.SuiteX25519, func(c *node.Config) { c.Storage.MinFreeMiB = 1 << 40 })

	for _, n := range []*node.Node{a, b} {
		if code, detail := readyz(t, n); code != http.StatusOK {
			t.Errorf("a healthy node: /readyz %d (%s), want 200", code, detail)
		}
	}
	code, detail := readyz(t, full)
	if code != http.StatusServiceUnavailable || !strings.Contains(detail, "disk nearly full") {
		t.Errorf("a disk below storage.min_free_mib: /readyz %d (%s), want 503 saying the disk is nearly full", code, detail)
	}
	if st, err := full.Status(ctx); err != nil || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "min_free_mib") {
		t.Errorf("status of a node short of disk: problems %q, %v", st.Problems, err)
	}

	// uni-b's credential, valid for an hour, has expired by its clock.
	ahead.Store(int64(2 * time.Hour))
	code, detail = readyz(t, b)
	if code != http.StatusServiceUnavailable || !strings.Contains(detail, "credential expired") {
		t.Errorf("an expired credential: /readyz %d (%s), want 503 saying it expired", code, detail)
	}
	if b.Ready() {
		t.Error("a node with an expired credential reports ready")
	}
}
