package policy

import (
	"os"
	"regexp"
	"testing"
)

// TestReasonsDocumented: REASONS.md has a row for every reason code and
// every rule id, and names none that the code does not have.
func TestReasonsDocumented(t *testing.T) {
	b, err := os.ReadFile("REASONS.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9._-]+)` \\| `([a-z0-9_]+)` \\|")
	docRules, docReasons := map[string]bool{}, map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		docRules[m[1]] = true
		docReasons[m[2]] = true
	}
	codeReasons, codeRules := map[string]bool{}, map[string]bool{}
	for _, r := range Reasons() {
		if codeReasons[string(r)] {
			t.Errorf("Reasons() lists %q twice", r)
		}
		codeReasons[string(r)] = true
	}
	for _, r := range Rules() {
		if codeRules[r] {
			t.Errorf("Rules() lists %q twice", r)
		}
		codeRules[r] = true
	}
	for r := range codeReasons {
		if !docReasons[r] {
			t.Errorf("reason %q is not in REASONS.md", r)
		}
	}
	for r := range docReasons {
		if !codeReasons[r] {
			t.Errorf("REASONS.md names reason %q, which Reasons() does not have", r)
		}
	}
	for r := range codeRules {
		if !docRules[r] {
			t.Errorf("rule %q is not in REASONS.md", r)
		}
	}
	for r := range docRules {
		if !codeRules[r] {
			t.Errorf("REASONS.md names rule %q, which Rules() does not have", r)
		}
	}
}
