package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
)

// TestAuthorityIssueAIService: `authority issue --role ai_service` issues a
// credential with that role, which a node runs with (it starts, verifies
// its own credential and says it is an ai_service); an unknown role is a
// usage error.
func TestAuthorityIssueAIService(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	admin := freePort(t)
	cfg := fmt.Sprintf("node_id: ai-test\nspace: test\ndata_dir: data\nauthority_public_key: authority/authority.pub.pem\nadmin:\n  listen: %s\n", admin)
	cfgPath := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	adir, cred := filepath.Join(dir, "authority"), filepath.Join(dir, "data", "credential.jwt")
	issue := func(role string) []string {
		return []string{"authority", "issue", "--dir", adir, "--request", filepath.Join(dir, "data", "node-request.json"),
			"--space", "test", "--institution", "Test AI", "--role", role, "--out", cred}
	}
	for _, args := range [][]string{
		{"authority", "init", "--dir", adir},
		{"node", "init", "--config", cfgPath},
	} {
		if code, _, stderr := run(t, ctx, args...); code != exitOK {
			t.Fatalf("eduspace %v: exit %d: %s", args, code, stderr)
		}
	}
	if code, _, stderr := run(t, ctx, issue("robot")...); code != exitUsage || !strings.Contains(stderr, "ai_service") {
		t.Errorf("authority issue --role robot: exit %d, want %d and the roles named: %s", code, exitUsage, stderr)
	}
	if code, _, stderr := run(t, ctx, issue("ai_service")...); code != exitOK {
		t.Fatalf("authority issue --role ai_service: exit %d: %s", code, stderr)
	}
	tok, err := os.ReadFile(cred)
	if err != nil {
		t.Fatal(err)
	}
	k, err := authority.Load(adir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := crypto.ParseCredential(strings.TrimSpace(string(tok)), k.Public(), "test", time.Now())
	if err != nil || c.Role != crypto.RoleAIService || c.NodeID != "ai-test" {
		t.Fatalf("issued credential: %+v, %v; want role ai_service for ai-test", c, err)
	}

	stop := startDaemon(t, ctx, cfgPath, admin)
	if code, out, stderr := run(t, ctx, "status", "--config", cfgPath); code != exitOK || !strings.Contains(out, "ai-test (Test AI, ai_service)") {
		t.Errorf("status: exit %d: %s%s", code, out, stderr)
	}
	stop()
}
