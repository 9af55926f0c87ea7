package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
)

// TestDeployNodeConfigs: the node configurations in deploy/ load and
// validate as they are shipped.
func TestDeployNodeConfigs(t *testing.T) {
	root := moduleRoot(t)
	for _, f := range []string{"node.example.yaml", "systemd/node.yaml"} {
		cfg, err := node.LoadConfig(filepath.Join(root, "deploy", f))
		if err != nil {
			t.Errorf("deploy/%s: %v", f, err)
			continue
		}
		if cfg.DataDir != "/var/lib/eduspace" {
			t.Errorf("deploy/%s: data_dir %q, want the unit's StateDirectory /var/lib/eduspace", f, cfg.DataDir)
		}
	}
}

// TestDeploySystemdUnit: systemd-analyze verify accepts the unit, with
// ExecStart pointing at a built eduspace binary.
func TestDeploySystemdUnit(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not on PATH: skipping the unit check")
	}
	if testing.Short() {
		t.Skip("builds the eduspace binary: skipped with -short")
	}
	bin, _ := binaries(t)
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy", "systemd", "eduspace.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{"User=eduspace", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=eduspace", "Restart=on-failure"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("unit lacks %s", want)
		}
	}
	path := filepath.Join(t.TempDir(), "eduspace.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/eduspace", bin)), 0o644)
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeployNATSMaxPayload: the shipped hub and leaf configurations agree
// on max_payload, and on the embedded server's: nodes size envelopes by the
// server they connect to, and a server refuses larger messages on its links.
func TestDeployNATSMaxPayload(t *testing.T) {
	dir := filepath.Join(moduleRoot(t), "deploy", "nats")
	for _, f := range []string{"hub-1.conf", "hub-2.conf", "hub-3.conf", "leaf-university.conf"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "max_payload:"); ok {
				got = append(got, strings.TrimSpace(v))
			}
		}
		if len(got) != 1 || got[0] != "8MB" || bus.EmbeddedMaxPayload != 8<<20 {
			t.Errorf("deploy/nats/%s: max_payload %q, want one, 8MB as the embedded server's %d bytes", f, got, bus.EmbeddedMaxPayload)
		}
	}
}
