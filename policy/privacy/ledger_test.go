package privacy

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestLedgerRefusesOverspend(t *testing.T) {
	var l Ledger
	if err := l.Spend("center", "student_id", "2026", 0.1); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("spend without budget: err = %v, want ErrNoBudget", err)
	}
	if err := l.SetBudget("center", "student_id", 0.3); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := l.Spend("center", "student_id", "2026", 0.1); err != nil {
			t.Fatalf("spend %d of 0.1 within 0.3: %v", i+1, err)
		}
	}
	if err := l.Spend("center", "student_id", "2026", 1e-9); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("spend past the budget: err = %v, want ErrBudgetExceeded", err)
	}
	// other populations are separate
	if err := l.Spend("center", "guardian_id", "2026", 0.1); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("other population: err = %v, want ErrNoBudget", err)
	}
	if got := l.Remaining("center", "student_id", "2026"); got != 0 {
		t.Errorf("remaining = %v, want 0", got)
	}
	// a refused spend debits nothing
	l.SetBudget("center", "student_id", 0.35)
	if err := l.Spend("center", "student_id", "2026", 0.06); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("0.06 of 0.05 left: err = %v", err)
	}
	if err := l.Spend("center", "student_id", "2026", 0.05); err != nil {
		t.Fatalf("0.05 of 0.05 left: %v", err)
	}
	if err := l.SetBudget("center", "student_id", 0.2); err == nil {
		t.Error("budget lowered below what the newest window spent")
	}
	for _, rho := range []float64{0, -1} {
		if err := l.Spend("center", "student_id", "2026", rho); err == nil || errors.Is(err, ErrBudgetExceeded) {
			t.Errorf("spend %v: err = %v, want an invalid-argument error", rho, err)
		}
	}
}

// TestLedgerWindows: each window starts with nothing spent, under the
// same budget; a budget may be lowered below what a closed window spent,
// not below the newest window's spend.
func TestLedgerWindows(t *testing.T) {
	var l Ledger
	if err := l.SetBudget("center", "student_id", 0.1); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"2025", "2026"} {
		for i := range 2 {
			if err := l.Spend("center", "student_id", w, 0.05); err != nil {
				t.Fatalf("%s spend %d: %v", w, i+1, err)
			}
		}
		if err := l.Spend("center", "student_id", w, 0.05); !errors.Is(err, ErrBudgetExceeded) {
			t.Fatalf("%s: third spend: %v, want ErrBudgetExceeded", w, err)
		}
	}
	if err := l.Refund("center", "student_id", "2026", 0.05); err != nil {
		t.Fatal(err)
	}
	if err := l.SetBudget("center", "student_id", 0.05); err != nil {
		t.Errorf("lowering to the newest window's spend, below a closed window's: %v", err)
	}
	if got := l.Remaining("center", "student_id", "2025"); got != 0 {
		t.Errorf("closed window overspent by the lowered budget: remaining %v, want 0", got)
	}
	if got := l.Remaining("center", "student_id", "2027"); got != 0.05 {
		t.Errorf("a new window: remaining %v, want the budget 0.05", got)
	}
	want := []Account{
		{Recipient: "center", Population: "student_id", Window: "2025", Budget: 0.05, Spent: 0.1, Releases: 2},
		{Recipient: "center", Population: "student_id", Window: "2026", Budget: 0.05, Spent: 0.05, Releases: 1},
	}
	if got := l.Accounts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("accounts %+v, want %+v", got, want)
	}
}

// TestLedgerRefund: a refund gives back exactly what the spend of the same
// ρ debited, in the same window, and never more than was spent.
func TestLedgerRefund(t *testing.T) {
	var l Ledger
	if err := l.Refund("center", "student_id", "2026", 0.05); !errors.Is(err, ErrNoBudget) {
		t.Fatalf("refund without an account: err = %v, want ErrNoBudget", err)
	}
	if err := l.SetBudget("center", "student_id", 0.5); err != nil {
		t.Fatal(err)
	}
	if err := l.Refund("center", "student_id", "2026", 0.05); err == nil {
		t.Fatal("refund of a spend that never happened accepted")
	}
	rho := 0.049993172 + 1e-12 // not a whole nano-ρ: Spend rounds it up
	for range 2 {
		if err := l.Spend("center", "student_id", "2026", rho); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Refund("center", "student_id", "2025", rho); err == nil {
		t.Error("refund in a window without the spend accepted")
	}
	if err := l.Refund("center", "student_id", "2026", rho); err != nil {
		t.Fatal(err)
	}
	a := l.Accounts()[0]
	if a.Spent != 0.049993173 || a.Releases != 1 || a.Window != "2026" {
		t.Errorf("after one refund of two spends: %+v, want 0.049993173 in 1 release in 2026", a)
	}
	if err := l.Refund("center", "student_id", "2026", 2*rho); err == nil {
		t.Error("refund of more than was spent accepted")
	}
	if err := l.Refund("center", "student_id", "2026", rho); err != nil {
		t.Fatal(err)
	}
	if a := l.Accounts()[0]; a.Spent != 0 || a.Releases != 0 || l.Remaining("center", "student_id", "2026") != 0.5 {
		t.Errorf("after both refunds: %+v, remaining %v; want nothing spent, 0.5 left", a, l.Remaining("center", "student_id", "2026"))
	}
	if err := l.Refund("center", "student_id", "2026", rho); err == nil {
		t.Error("a third refund of two spends accepted")
	}
	for _, bad := range []float64{0, -1} {
		if err := l.Refund("center", "student_id", "2026", bad); err == nil {
			t.Errorf("refund %v accepted", bad)
		}
	}
}

func TestLedgerRoundsAgainstTheRecipient(t *testing.T) {
	var l Ledger
	l.SetBudget("c", "d", 1e-9)
	if err := l.Spend("c", "d", "w", 0.4e-9); err != nil {
		t.Fatal(err)
	}
	// 0.4e-9 was debited as a whole nano-ρ: nothing is left
	if err := l.Spend("c", "d", "w", 0.4e-9); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("second sub-nano spend: err = %v, want ErrBudgetExceeded", err)
	}
}

func TestLedgerJSON(t *testing.T) {
	var l Ledger
	l.SetBudget("center", "staff_id", 1)
	l.SetBudget("center", "student_id", 0.5)
	l.SetBudget("agency", "student_id", 0.25)
	l.Spend("center", "student_id", "2026", 0.05)
	l.Spend("center", "student_id", "2026", 0.0125)
	l.Spend("center", "student_id", "2025", 0.5)
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":2,"budgets":[` +
		`{"recipient":"agency","population":"student_id","budget_nano_rho":250000000},` +
		`{"recipient":"center","population":"staff_id","budget_nano_rho":1000000000},` +
		`{"recipient":"center","population":"student_id","budget_nano_rho":500000000}],"spends":[` +
		`{"recipient":"center","population":"student_id","window":"2025","spent_nano_rho":500000000,"releases":1},` +
		`{"recipient":"center","population":"student_id","window":"2026","spent_nano_rho":62500000,"releases":2}]}`
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
	if got := back.Remaining("center", "student_id", "2026"); got != 0.4375 {
		t.Errorf("remaining after reload = %v, want 0.4375", got)
	}
	if err := json.Unmarshal([]byte(`{"version":1,"accounts":[]}`), &back); !errors.Is(err, ErrLedgerV1) {
		t.Errorf("version 1: %v, want ErrLedgerV1", err)
	}
	for _, bad := range []string{
		`{"version":3,"budgets":[],"spends":[]}`,
		`{"version":2,"budgets":[],"spends":[],"extra":1}`,
		`{"version":2,"budgets":[],"spends":[{"recipient":"c","population":"p","window":"w","spent_nano_rho":1,"releases":1}]}`,
		`{"version":2,"budgets":[{"recipient":"c","population":"p","budget_nano_rho":1},{"recipient":"c","population":"p","budget_nano_rho":1}],"spends":[]}`,
		`{"version":2,"budgets":[{"recipient":"c","population":"p","budget_nano_rho":1}],"spends":[{"recipient":"c","population":"p","window":"","spent_nano_rho":1,"releases":1}]}`,
		`{"version":2,"budgets":[{"recipient":"","population":"p","budget_nano_rho":1}],"spends":[]}`,
		`{"version":2,"budgets":[],"spends":[]} {}`,
	} {
		var l Ledger
		if err := json.Unmarshal([]byte(bad), &l); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// TestLedgerMigrateV1: a ledger of version 1 (per recipient and dataset)
// becomes one account per recipient and population: the smallest budget,
// the spends summed into the window given; a merged account spent past
// its budget has nothing left, and survives a store and reload.
func TestLedgerMigrateV1(t *testing.T) {
	v1 := `{"version":1,"accounts":[` +
		`{"recipient":"center","dataset":"enrollment","budget_nano_rho":500000000,"spent_nano_rho":300000000,"releases":6},` +
		`{"recipient":"center","dataset":"grade","budget_nano_rho":1000000000,"spent_nano_rho":400000000,"releases":8},` +
		`{"recipient":"center","dataset":"guardian","budget_nano_rho":500000000,"spent_nano_rho":50000000,"releases":1},` +
		`{"recipient":"center","dataset":"student","budget_nano_rho":500000000,"spent_nano_rho":0,"releases":0}]}`
	pop := func(dataset string) (string, error) {
		switch dataset {
		case "enrollment", "grade", "student":
			return "student_id", nil
		case "guardian":
			return "guardian_id", nil
		}
		return "", fmt.Errorf("%q is not a record type", dataset)
	}
	l, err := MigrateV1([]byte(v1), pop, "2026")
	if err != nil {
		t.Fatal(err)
	}
	want := []Account{
		{Recipient: "center", Population: "guardian_id", Window: "2026", Budget: 0.5, Spent: 0.05, Releases: 1},
		{Recipient: "center", Population: "student_id", Window: "2026", Budget: 0.5, Spent: 0.7, Releases: 14},
	}
	if got := l.Accounts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("migrated: %+v, want %+v", got, want)
	}
	if err := l.Spend("center", "student_id", "2026", 1e-9); !errors.Is(err, ErrBudgetExceeded) {
		t.Errorf("spend on an account migrated past its budget: %v, want ErrBudgetExceeded", err)
	}
	if err := l.Spend("center", "student_id", "2027", 0.5); err != nil {
		t.Errorf("the next window: %v", err)
	}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Ledger
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("reload a migrated ledger: %v", err)
	}
	if _, err := MigrateV1([]byte(`{"version":1,"accounts":[{"recipient":"c","dataset":"course","budget_nano_rho":1,"spent_nano_rho":0,"releases":0}]}`), pop, "2026"); err == nil {
		t.Error("migrated a dataset with no population")
	}
	if _, err := MigrateV1(b, pop, "2026"); err == nil {
		t.Error("migrated a ledger of version 2 as version 1")
	}
}
