package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestPromConfig: promtool accepts deploy/prometheus (configuration and
// rules) and the rules' unit tests pass. promtool comes with Debian's
// prometheus package, which .ci/run installs.
func TestPromConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not on PATH (apt-get install prometheus; .ci/run does): skipping the Prometheus configuration check")
	}
	dir := filepath.Join(moduleRoot(t), "deploy", "prometheus")
	for _, args := range [][]string{
		{"check", "config", "prometheus.yml"},
		{"check", "rules", "eduspace-rules.yml"},
		{"test", "rules", "eduspace-rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var metricNameRE = regexp.MustCompile(`\beduspace_[a-z_]+`)

// nodeMetricNames are the metric names a node registers, as
// node/metrics/testdata/metrics.golden pins them, with the series names a
// histogram adds.
func nodeMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	golden, err := os.ReadFile(filepath.Join(moduleRoot(t), "node", "metrics", "testdata", "metrics.golden"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(golden)), "\n") {
		name := strings.Fields(line)[0]
		names[name] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[name+s] = true
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in node/metrics/testdata/metrics.golden", len(names))
	}
	return names
}

// TestPromGrafanaDashboard: the dashboard is valid JSON with panels, and
// the dashboard and the alert rules name only metrics the node registers.
func TestPromGrafanaDashboard(t *testing.T) {
	root := moduleRoot(t)
	known := nodeMetricNames(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "eduspace-audit.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			for _, name := range metricNameRE.FindAllString(tg.Expr, -1) {
				if !known[name] {
					t.Errorf("dashboard panel %q uses %s, which node/metrics/testdata/metrics.golden does not list", p.Title, name)
				}
			}
		}
	}
	if dash.UID == "" || exprs < 15 {
		t.Errorf("dashboard uid %q with %d queries", dash.UID, exprs)
	}
	rules, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "eduspace-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var unknown []string
	for _, name := range metricNameRE.FindAllString(string(rules), -1) {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("alert rules use metrics node/metrics/testdata/metrics.golden does not list: %v", unknown)
	}
}
