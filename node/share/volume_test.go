package share_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// TestSendVolume: Send counts each subject once per recipient and year
// (rule V1 with a threshold of 10 L3 subjects and no bulk approval), a
// subject already sent to goes again, and a restarted node counts what it
// sent before from its deliveries.
func TestSendVolume(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	rulebook := filepath.Join(s.Dir, "rulebook.json")
	if err := os.WriteFile(rulebook, []byte(`{"volume":{"bulk_l3":10}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := s.Config("uni-a")
	ca.Rulebook = rulebook
	s.Configs["uni-a"] = ca
	a := s.Open(ca)
	s.Open(s.Config("uni-b"))
	ag := share.BenchAgreement(s.Now)
	ag.ID, ag.Provider, ag.Recipient = "volume", "uni-a", "uni-b"
	if err := a.AddAgreement(ctx, ag); err != nil {
		t.Fatal(err)
	}
	data, _ := synth.Students(20, 5)
	lines := bytes.SplitAfter(bytes.TrimSpace(data), []byte("\n"))
	send := func(a *node.Node, lines ...[]byte) share.SendResult {
		t.Helper()
		r, err := a.Send(ctx, ag.ID, schema.NewNDJSONReader(bytes.NewReader(bytes.Join(lines, []byte("\n"))), ""))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// 15 subjects, then the first two again: 9 go (the 10th reaches the
	// threshold), the 6 after them do not, the two again do.
	r := send(a, append(append([][]byte{}, lines[:15]...), lines[0], lines[1])...)
	if r.Permitted != 11 || r.Denied[string(policy.ReasonVolumeBulk)] != 6 {
		t.Fatalf("first send: %d permitted, denied %v; want 11 and 6 volume_bulk", r.Permitted, r.Denied)
	}
	cfg := s.Configs["uni-a"]
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = s.Open(cfg)
	if r := send(a, lines[16]); r.Permitted != 0 || r.Denied[string(policy.ReasonVolumeBulk)] != 1 {
		t.Fatalf("a new subject after the restart: %d permitted, denied %v", r.Permitted, r.Denied)
	}
	if r := send(a, lines[2]); r.Permitted != 1 {
		t.Fatalf("a subject sent before, after the restart: %d permitted, denied %v", r.Permitted, r.Denied)
	}
}
