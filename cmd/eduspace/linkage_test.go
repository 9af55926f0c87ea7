package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
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
	// The node's one screen names the evaluator and its key too.
	keyID := linkage.KeyID(ev.Suite, ev.Key)
	code, out, _ = run(t, ctx, append([]string{"status"}, flags(ce.DataDir, e.AdminAddr())...)...)
	if code != exitOK || !strings.Contains(out, "this node evaluates, key "+keyID+"\n") || !strings.Contains(out, "0 datasets offered here, 0 from members") {
		t.Errorf("status on the evaluator: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, ctx, append([]string{"status"}, flags(ca.DataDir, a.AdminAddr())...)...)
	if code != exitOK || !strings.Contains(out, "evaluator uni-e, key "+keyID+"\n") {
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

// TestAuthorityLinkageEvaluator: the authority names the evaluator from
// the file `linkage keygen` writes, and running nodes link through it at
// once; it refuses to name the center.
func TestAuthorityLinkageEvaluator(t *testing.T) {
	s := nodetest.NewSpace(t)
	authDir := filepath.Join(s.Dir, "authority-cli")
	if _, err := authority.Init(authDir); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(authDir)
	if err != nil {
		t.Fatal(err)
	}
	// The space's members trust the authority of authDir.
	s.AK, s.Pub = ak, filepath.Join(authDir, authority.PublicKeyFile)
	ca, ce, cc := s.Config("uni-a"), s.Config("uni-e"), s.Member("center", crypto.RoleCenter)
	a := s.Open(ca)
	s.Open(cc)
	var b strings.Builder
	for i := range 5 {
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%02d","name":"N","birth_date":"2004-01-01","id_type":"resident_id","id_number":%q}`+"\n",
			i, nodetest.ResidentID(fmt.Sprintf("11010120040101%03d", i)))
	}
	if _, err := a.Ingest(context.Background(), strings.NewReader(b.String()), ""); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// keygen writes the key in the evaluator's data directory and the
	// public part for the authority.
	cfgPath := filepath.Join(s.Dir, "uni-e.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, "node_id: uni-e\nspace: %s\ndata_dir: %s\nauthority_public_key: %s\n", nodetest.SpaceID, ce.DataDir, s.Pub), 0o600); err != nil {
		t.Fatal(err)
	}
	pubE := filepath.Join(s.Dir, "uni-e.linkage.json")
	if code, out, stderr := run(t, ctx, "linkage", "keygen", "--config", cfgPath, "--out", pubE); code != exitOK || !strings.Contains(out, "linkage key l-") {
		t.Fatalf("keygen: exit %d\n%s%s", code, out, stderr)
	}
	s.Open(ce)
	centerKey, err := linkage.GenerateKey(cc.DataDir, "center")
	if err != nil {
		t.Fatal(err)
	}
	pubC := filepath.Join(s.Dir, "center.linkage.json")
	if err := linkage.WritePublic(pubC, centerKey); err != nil {
		t.Fatal(err)
	}
	url := s.Emb.ClientURL()
	code, _, stderr := run(t, ctx, "authority", "linkage-evaluator", "--dir", authDir, "--space", nodetest.SpaceID, "--key", pubC, "--url", url)
	if code != exitFailure || !strings.Contains(stderr, "role center") {
		t.Fatalf("naming the center: exit %d, %s", code, stderr)
	}
	code, out, stderr := run(t, ctx, "authority", "linkage-evaluator", "--dir", authDir, "--space", nodetest.SpaceID, "--key", pubE, "--url", url, "--min-suite", crypto.SuiteX25519.String())
	if code != exitOK || !strings.Contains(out, "linkage evaluator uni-e") {
		t.Fatalf("naming uni-e: exit %d\n%s%s", code, out, stderr)
	}
	// The running member takes the policy from the space.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, rep, err := a.LinkagePseudonyms(ctx, "statistics", "2026")
		if err == nil && rep.Evaluated == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("linkage after the policy was published: %+v, %v", rep, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _, stderr := run(t, ctx, "authority", "linkage-evaluator", "--dir", authDir, "--space", nodetest.SpaceID, "--key", pubE); code != exitUsage {
		t.Errorf("without --out or --url: exit %d, %s", code, stderr)
	}
}
