package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
)

// TestRevokeCLI: authority revoke signs lists with growing serials kept in
// the authority directory, each carrying the earlier entries.
func TestRevokeCLI(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "authority")
	if code, _, stderr := run(t, ctx, "authority", "init", "--dir", dir); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	out := filepath.Join(t.TempDir(), "revocations.edrl")
	if code, _, _ := run(t, ctx, "authority", "revoke", "--dir", dir, "--space", "s1", "--node", "uni-a"); code != exitUsage {
		t.Errorf("revoke without --out or --url: exit %d, want %d", code, exitUsage)
	}
	for i, args := range [][]string{
		{"--node", "uni-a", "--reason", "left the space"},
		{"--node", "uni-b", "--key", "s-0123456789abcdef", "--at", "2026-01-02T03:04:05Z"},
	} {
		code, stdout, stderr := run(t, ctx, append([]string{"authority", "revoke", "--dir", dir, "--space", "s1", "--out", out}, args...)...)
		if code != exitOK {
			t.Fatalf("revoke %d: exit %d: %s", i, code, stderr)
		}
		if !strings.Contains(stdout, fmt.Sprintf("revocation list %d signed (%d entries)", i+1, i+1)) {
			t.Errorf("revoke %d: %s", i, stdout)
		}
	}
	if code, _, stderr := run(t, ctx, "authority", "revoke", "--dir", dir, "--space", "s1", "--node", "uni-a", "--out", out); code != exitFailure || !strings.Contains(stderr, "already revoked") {
		t.Errorf("revoking uni-a again: exit %d, %s", code, stderr)
	}
	pub, err := crypto.ReadAuthorityPublicKey(filepath.Join(dir, authority.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := crypto.ParseRevocationList(data, pub, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if rl.Serial != 2 || len(rl.Entries) != 2 || rl.Entries[1].KeyID != "s-0123456789abcdef" || rl.Entries[0].Reason != "left the space" {
		t.Errorf("list: %+v", rl)
	}
	// Another space has its own list.
	if code, stdout, _ := run(t, ctx, "authority", "revoke", "--dir", dir, "--space", "s2", "--node", "uni-a", "--out", out); code != exitOK || !strings.Contains(stdout, "revocation list 1 signed") {
		t.Errorf("first list of space s2: exit %d, %s", code, stdout)
	}
	// A kept list that does not verify stops the authority.
	kept := authority.RevocationListPath(dir, "s1")
	data[len(data)-1] ^= 1
	os.WriteFile(kept, data, 0o644)
	if code, _, stderr := run(t, ctx, "authority", "revoke", "--dir", dir, "--space", "s1", "--node", "uni-c", "--out", out); code != exitFailure || !strings.Contains(stderr, "signature") {
		t.Errorf("revoke over a tampered kept list: exit %d, %s", code, stderr)
	}
}

// TestNodeRotateCLI walks the three rotation steps through the command
// line, issuing a credential after each.
func TestNodeRotateCLI(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	adir := filepath.Join(root, "authority")
	if code, _, stderr := run(t, ctx, "authority", "init", "--dir", adir); code != exitOK {
		t.Fatalf("init: %s", stderr)
	}
	nd := filepath.Join(root, "uni-a")
	cfgPath := filepath.Join(root, "node.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("node_id: uni-a\nspace: s1\ndata_dir: %s\nauthority_public_key: %s\n",
		nd, filepath.Join(adir, authority.PublicKeyFile))), 0o644)
	if code, _, stderr := run(t, ctx, "node", "init", "--config", cfgPath); code != exitOK {
		t.Fatalf("node init: %s", stderr)
	}
	issue := func() {
		t.Helper()
		if code, _, stderr := run(t, ctx, "authority", "issue", "--dir", adir, "--request", filepath.Join(nd, "node-request.json"),
			"--space", "s1", "--institution", "A", "--out", filepath.Join(nd, "credential.jwt")); code != exitOK {
			t.Fatalf("issue: %s", stderr)
		}
	}
	issue()
	type result struct {
		Version  int    `json:"version"`
		Step     string `json:"step"`
		Created  int    `json:"created"`
		Listed   []int  `json:"listed"`
		Unlisted []int  `json:"unlisted"`
	}
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{nil, `{"version":1,"step":"announce","created":2,"listed":[1,2]}`},
		{[]string{"--switch"}, `{"version":1,"step":"switch","listed":[2,1]}`},
		{[]string{"--retire", "--force"}, `{"version":1,"step":"retire","listed":[2],"unlisted":[1]}`},
	} {
		if c.flags != nil && c.flags[0] == "--retire" {
			// Right after the switch, envelopes sealed to generation 1 may
			// still arrive: refused with the time left, unless forced.
			code, _, stderr := run(t, ctx, "node", "rotate", "--config", cfgPath, "--retire")
			if code != exitFailure || !strings.Contains(stderr, "retire refused") || !strings.Contains(stderr, "from now") {
				t.Errorf("retire right after the switch: exit %d: %s", code, stderr)
			}
		}
		code, stdout, stderr := run(t, ctx, append([]string{"node", "rotate", "--config", cfgPath, "--json"}, c.flags...)...)
		if code != exitOK {
			t.Fatalf("rotate %v: exit %d: %s", c.flags, code, stderr)
		}
		var got, want result
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("rotate %v: %v: %s", c.flags, err, stdout)
		}
		json.Unmarshal([]byte(c.want), &want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("rotate %v: got %+v, want %+v", c.flags, got, want)
		}
		issue()
	}
	// Generation 2 is current now: switching again has nothing to switch to.
	if code, _, stderr := run(t, ctx, "node", "rotate", "--config", cfgPath, "--switch"); code != exitFailure || !strings.Contains(stderr, "already current") {
		t.Errorf("second switch: exit %d, %s", code, stderr)
	}
	if code, _, _ := run(t, ctx, "node", "rotate", "--config", cfgPath, "--switch", "--retire"); code != exitUsage {
		t.Errorf("--switch --retire: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := run(t, ctx, "node", "rotate", "--config", cfgPath, "--force"); code != exitUsage {
		t.Errorf("--force without --retire: exit %d, want %d", code, exitUsage)
	}
}
