package privacy

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestLedgerRefusesOverspend(t *testing.T) {
	var l Ledger
	if err := l.Spend("center", "enrolments", 0.1); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("spend without budget: err = %v, want ErrNoBudget", err)
	}
	if err := l.SetBudget("center", "enrolments", 0.3); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := l.Spend("center", "enrolments", 0.1); err != nil {
			t.Fatalf("spend %d of 0.1 within 0.3: %v", i+1, err)
		}
	}
	if err := l.Spend("center", "enrolments", 1e-9); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("spend past the budget: err = %v, want ErrBudgetExceeded", err)
	}
	// other accounts are separate
	if err := l.Spend("center", "grades", 0.1); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("other dataset: err = %v, want ErrNoBudget", err)
	}
	if got := l.Remaining("center", "enrolments"); got != 0 {
		t.Errorf("remaining = %v, want 0", got)
	}
	// a refused spend debits nothing
	l.SetBudget("center", "enrolments", 0.35)
	if err := l.Spend("center", "enrolments", 0.06); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("0.06 of 0.05 left: err = %v", err)
	}
	if err := l.Spend("center", "enrolments", 0.05); err != nil {
		t.Fatalf("0.05 of 0.05 left: %v", err)
	}
	if err := l.SetBudget("center", "enrolments", 0.2); err == nil {
		t.Error("budget lowered below what is spent")
	}
	for _, rho := range []float64{0, -1} {
		if err := l.Spend("center", "enrolments", rho); err == nil || errors.Is(err, ErrBudgetExceeded) {
			t.Errorf("spend %v: err = %v, want an invalid-argument error", rho, err)
		}
	}
}

// TestLedgerRefund: a refund gives back exactly what the spend of the same
// ρ debited, and never more than was spent.
func TestLedgerRefund(t *testing.T) {
	var l Ledger
	if err := l.Refund("center", "student", 0.05); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("refund without an account: err = %v, want ErrNoBudget", err)
	}
	if err := l.SetBudget("center", "student", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := l.Refund("center", "student", 0.05); err == nil {
		t.Fatal("refund of a spend that never happened accepted")
	}
	rho := 0.049993172 + 1e-12 // not a whole nano-ρ: Spend rounds it up
	for range 2 {
		if err := l.Spend("center", "student", rho); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Refund("center", "student", rho); err != nil {
		t.Fatal(err)
	}
	a := l.Accounts()[0]
	if a.Spent != 0.049993173 || a.Releases != 1 {
		t.Errorf("after one refund of two spends: spent %v in %d releases, want 0.049993173 in 1", a.Spent, a.Releases)
	}
	if err := l.Refund("center", "student", 2*rho); err == nil {
		t.Error("refund of more than was spent accepted")
	}
	if err := l.Refund("center", "student", rho); err != nil {
		t.Fatal(err)
	}
	if a := l.Accounts()[0]; a.Spent != 0 || a.Releases != 0 || l.Remaining("center", "student") != 0.5 {
		t.Errorf("after both refunds: %+v, remaining %v; want nothing spent, 0.5 left", a, l.Remaining("center", "student"))
	}
	if err := l.Refund("center", "student", rho); err == nil {
		t.Error("a third refund of two spends accepted")
	}
	for _, bad := range []float64{0, -1} {
		if err := l.Refund("center", "student", bad); err == nil {
			t.Errorf("refund %v accepted", bad)
		}
	}
}

func TestLedgerRoundsAgainstTheRecipient(t *testing.T) {
	var l Ledger
	l.SetBudget("c", "d", 1e-9)
	if err := l.Spend("c", "d", 0.4e-9); err != nil {
		t.Fatal(err)
	}
	// 0.4e-9 was debited as a whole nano-ρ: nothing is left
	if err := l.Spend("c", "d", 0.4e-9); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("second sub-nano spend: err = %v, want ErrBudgetExceeded", err)
	}
}

func TestLedgerJSON(t *testing.T) {
	var l Ledger
	l.SetBudget("center", "grades", 1)
	l.SetBudget("center", "enrolments", 0.5)
	l.SetBudget("agency", "enrolments", 0.25)
	l.Spend("center", "enrolments", 0.05)
	l.Spend("center", "enrolments", 0.0125)
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"accounts":[` +
		`{"recipient":"agency","dataset":"enrolments","budget_nano_rho":250000000,"spent_nano_rho":0,"releases":0},` +
		`{"recipient":"center","dataset":"enrolments","budget_nano_rho":500000000,"spent_nano_rho":62500000,"releases":2},` +
		`{"recipient":"center","dataset":"grades","budget_nano_rho":1000000000,"spent_nano_rho":0,"releases":0}]}`
	if string(b) != want {
		t.Fatalf("json:\n got %s\nwant %s", b, want)
	}
	var back Ledger
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&back)
	if string(b2) != want {
		t.Fatalf("round trip:\n got %s\nwant %s", b2, want)
	}
	if got := back.Remaining("center", "enrolments"); got != 0.4375 {
		t.Errorf("remaining after reload = %v, want 0.4375", got)
	}
	for _, bad := range []string{
		`{"version":2,"accounts":[]}`,
		`{"version":1,"accounts":[],"extra":1}`,
		`{"version":1,"accounts":[{"recipient":"c","dataset":"d","budget_nano_rho":1,"spent_nano_rho":2,"releases":0}]}`,
		`{"version":1,"accounts":[{"recipient":"c","dataset":"d","budget_nano_rho":1,"spent_nano_rho":0,"releases":0},{"recipient":"c","dataset":"d","budget_nano_rho":1,"spent_nano_rho":0,"releases":0}]}`,
		`{"version":1,"accounts":[{"recipient":"","dataset":"d","budget_nano_rho":1,"spent_nano_rho":0,"releases":0}]}`,
		`{"version":1,"accounts":[]} {}`,
	} {
		var l Ledger
		if err := json.Unmarshal([]byte(bad), &l); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
