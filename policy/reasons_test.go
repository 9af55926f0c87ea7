package policy

import (
	"os"
	"regexp"
	"strings"
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

// TestReasonClauses: every reason code cites the clause it rests on, and
// REASONS.md's rows give each reason exactly that clause; every legal basis
// names its ground of PIPL art. 13.
func TestReasonClauses(t *testing.T) {
	b, err := os.ReadFile("REASONS.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9._-]+)` \\| `([a-z0-9_]+)` \\| ([^|]*) \\|")
	rows := row.FindAllStringSubmatch(string(b), -1)
	if len(rows) < len(Reasons()) {
		t.Fatalf("REASONS.md has %d rule rows, fewer than %d reasons", len(rows), len(Reasons()))
	}
	for _, r := range Reasons() {
		if r.Clause() == "" {
			t.Errorf("reason %q cites no clause", r)
		}
	}
	for _, m := range rows {
		if got, want := m[3], Reason(m[2]).Clause(); got != want {
			t.Errorf("REASONS.md: rule %s, reason %s cites %q; Clause() says %q", m[1], m[2], got, want)
		}
	}
	if got := Reason("no_such_reason").Clause(); got != "" {
		t.Errorf("an unknown reason cites %q", got)
	}
	for _, lb := range []LegalBasis{BasisConsent, BasisStatutoryDuty, BasisContract, BasisPublicInterest} {
		if !bases[lb] {
			t.Errorf("basis %q is not one an agreement may name", lb)
		}
		if c := lb.Clause(); !strings.HasPrefix(c, "PIPL art. 13(") {
			t.Errorf("basis %q: clause %q, want a ground of PIPL art. 13", lb, c)
		}
		if !strings.Contains(string(b), "| `"+string(lb)+"` | "+lb.Clause()+" |") {
			t.Errorf("REASONS.md's legal bases do not give %q with %q", lb, lb.Clause())
		}
	}
	if len(bases) != 4 || len(basisClauses) != len(bases) {
		t.Errorf("%d bases, %d with a clause: every basis needs one", len(bases), len(basisClauses))
	}
}
