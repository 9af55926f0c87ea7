package test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/aggregate"
	"github.com/eduspace/eduspace/node/catalogue"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// TestExamples: every file in deploy/examples loads with the parser the
// node uses for it (agreements, consents, aggregate queries, node
// configs), and none is left unchecked.
func TestExamples(t *testing.T) {
	dir := filepath.Join(moduleRoot(t), "deploy", "examples")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		name := e.Name()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case name == "README.md":
			continue
		case strings.HasPrefix(name, "agreement-"):
			a, err := policy.ParseAgreement(data, schema.Default())
			if err == nil {
				err = a.Validate(schema.Default())
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case strings.HasPrefix(name, "consent"):
			if _, err := policy.ParseConsent(data); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case strings.HasPrefix(name, "query-"):
			var q aggregate.Query
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&q); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			q.SetDefaults("center", time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))
			if err := q.Validate(schema.Default()); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case strings.HasPrefix(name, "dataset-"):
			if _, err := catalogue.ParseOffer(data, schema.Default()); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case strings.HasPrefix(name, "node-"):
			if _, err := node.LoadConfig(filepath.Join(dir, name)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		default:
			t.Errorf("%s: no parser checks this example: name it agreement-*, consent*, dataset-*, query-* or node-*", name)
			continue
		}
		checked++
	}
	if checked < 12 {
		t.Errorf("checked %d examples, want every one of the 12", checked)
	}
}
