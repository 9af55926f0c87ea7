package metrics_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/schema"
)

// TestMetricsLint: client_golang's linter finds nothing in the node's
// registry, and every eduspace metric follows the naming convention.
func TestMetricsLint(t *testing.T) {
	m := newTestMetrics()
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "eduspace_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "eduspace_") {
			continue
		}
		seen++
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				switch l.GetName() {
				case "type", "level", "reason", "outcome", "action", "event", "consumer":
				default:
					t.Errorf("%s has label %q outside the closed set", name, l.GetName())
				}
			}
		}
	}
	if seen < 10 {
		t.Errorf("only %d eduspace metrics gathered", seen)
	}
}

var update = flag.Bool("update", false, "rewrite golden files")

// TestMetricsGolden pins the names, types and label names of every
// eduspace metric: auditors' dashboards and alerts depend on them. A change
// here is a change of contract: update node/metrics/METRICS.md with it and run the
// test with -update.
func TestMetricsGolden(t *testing.T) {
	m := newTestMetrics()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "eduspace_") {
			continue
		}
		labels := map[string]bool{}
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, l)
		}
		sort.Strings(names)
		lines = append(lines, fmt.Sprintf("%s %s %s", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(names, ",")))
	}
	sort.Strings(lines)
	got := strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "metrics.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("metrics changed:\ngot:\n%s\nwant:\n%s", got, want)
	}
	doc, err := os.ReadFile("METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		name := strings.Fields(l)[0]
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("%s is not documented in node/metrics/METRICS.md", name)
		}
	}
}

// newTestMetrics are a node's instruments, with the closed label sets its
// parts own declared as node.Open declares them, every gauge reading 0.
func newTestMetrics() *metrics.Metrics {
	m := metrics.New(schema.Default(), metrics.Labels{Refused: envelope.RefuseReasons, Invalid: share.InvalidReasons,
		AggregateRefused: aggregate.RefuseReasons, LinkageRefused: linkage.Reasons})
	m.RegisterGauges(metrics.Gauges{})
	return m
}
