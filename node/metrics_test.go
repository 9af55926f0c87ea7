package node

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eduspace/eduspace/schema"
)

// TestMetricsLint: client_golang's linter finds nothing in the node's
// registry, and every eduspace metric follows the naming convention.
func TestMetricsLint(t *testing.T) {
	m := newMetrics(schema.Default(), zeroGauges{})
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "eduspace_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
	mfs, err := m.reg.Gather()
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
				case "type", "level", "reason", "outcome":
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

type zeroGauges struct{}

func (zeroGauges) outboxDepth(context.Context) float64     { return 0 }
func (zeroGauges) evidenceLength(context.Context) float64  { return 0 }
func (zeroGauges) awaitingReceipt(context.Context) float64 { return 0 }
func (zeroGauges) sequenceMissing(context.Context) float64 { return 0 }
