package privacy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode"
	"unicode/utf8"
)

// Budgets are kept in whole nano-ρ (10⁻⁹ ρ): a budget is rounded down and a
// spend rounded up to that grain, so sums are exact integers and the ledger
// never grants more than the ρ it was given.
const nanoPerRho = 1e9

// maxNanoRho bounds one budget or spend: 10⁶ ρ, far above any useful value.
const maxNanoRho = 1_000_000 * nanoPerRho

// ErrBudgetExceeded is returned by [Ledger.Spend] when the spend would take
// the (recipient, dataset) account past its budget; nothing is debited.
var ErrBudgetExceeded = errors.New("privacy budget exceeded")

// ErrNoBudget is returned by [Ledger.Spend] when no budget was set for the
// (recipient, dataset) pair: without a budget nothing may be released.
var ErrNoBudget = errors.New("no privacy budget for recipient and dataset")

// Ledger is the privacy budget a node grants each recipient per dataset, in
// ρ (zCDP), and what it has spent. Because ρ adds up under composition, the
// spent total is the zCDP guarantee the recipient has received about the
// dataset from this node's releases. A node debits its ledger before taking
// part in a round (PRIVACY.md §6).
//
// The zero Ledger is empty and ready to use. A Ledger is a value the node
// stores: it marshals to and from JSON; it is not safe for concurrent use.
type Ledger struct {
	accounts map[accountKey]*account
}

type accountKey struct{ recipient, dataset string }

type account struct {
	budget, spent uint64 // nano-ρ
	releases      uint64
}

// Account is one (recipient, dataset) line of a ledger.
type Account struct {
	Recipient string  `json:"recipient"`
	Dataset   string  `json:"dataset"`
	Budget    float64 `json:"budget_rho"`
	Spent     float64 `json:"spent_rho"`
	Releases  uint64  `json:"releases"` // successful spends not refunded
}

// ledgerJSON is the stored form: version 1, accounts sorted by recipient
// then dataset, amounts in integer nano-ρ so that reloading is exact.
type ledgerJSON struct {
	Version  int           `json:"version"`
	Accounts []accountJSON `json:"accounts"`
}

type accountJSON struct {
	Recipient  string `json:"recipient"`
	Dataset    string `json:"dataset"`
	BudgetNano uint64 `json:"budget_nano_rho"`
	SpentNano  uint64 `json:"spent_nano_rho"`
	Releases   uint64 `json:"releases"`
}

const ledgerVersion = 1

func validLedgerName(s string) bool {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// toNano converts ρ ≥ 0 to nano-ρ, rounding up when up is true and down
// otherwise.
func toNano(rho float64, up bool) (uint64, error) {
	if !(rho >= 0) || rho*nanoPerRho > maxNanoRho {
		return 0, fmt.Errorf("ρ = %v outside [0, %v]", rho, maxNanoRho/nanoPerRho)
	}
	x := rho * nanoPerRho
	if up {
		return uint64(math.Ceil(x)), nil
	}
	return uint64(math.Floor(x)), nil
}

func (l *Ledger) get(recipient, dataset string) *account {
	return l.accounts[accountKey{recipient, dataset}]
}

// SetBudget sets the total ρ the recipient may receive about dataset,
// rounded down to 10⁻⁹. A budget may be raised, or lowered down to what is
// already spent, never below it.
func (l *Ledger) SetBudget(recipient, dataset string, rho float64) error {
	if !validLedgerName(recipient) || !validLedgerName(dataset) {
		return fmt.Errorf("set budget: invalid recipient or dataset name")
	}
	n, err := toNano(rho, false)
	if err != nil {
		return fmt.Errorf("set budget: %w", err)
	}
	a := l.get(recipient, dataset)
	if a == nil {
		if l.accounts == nil {
			l.accounts = make(map[accountKey]*account)
		}
		a = &account{}
		l.accounts[accountKey{recipient, dataset}] = a
	}
	if n < a.spent {
		return fmt.Errorf("set budget: %v below the %v already spent", rho, float64(a.spent)/nanoPerRho)
	}
	a.budget = n
	return nil
}

// Spend debits rho (rounded up to 10⁻⁹) from the recipient's budget for
// dataset. It refuses, debiting nothing, with an error wrapping
// [ErrNoBudget] when no budget was set and [ErrBudgetExceeded] when the spend
// would exceed the budget. rho must be positive.
func (l *Ledger) Spend(recipient, dataset string, rho float64) error {
	if !(rho > 0) {
		return fmt.Errorf("spend: ρ = %v, want > 0", rho)
	}
	n, err := toNano(rho, true)
	if err != nil {
		return fmt.Errorf("spend: %w", err)
	}
	a := l.get(recipient, dataset)
	if a == nil {
		return fmt.Errorf("spend %v on %s for %s: %w", rho, dataset, recipient, ErrNoBudget)
	}
	if n > a.budget-a.spent {
		return fmt.Errorf("spend %v on %s for %s, %v of %v left: %w", rho, dataset, recipient,
			float64(a.budget-a.spent)/nanoPerRho, float64(a.budget)/nanoPerRho, ErrBudgetExceeded)
	}
	a.spent += n
	a.releases++
	return nil
}

// Refund gives back rho (rounded up to 10⁻⁹, as Spend debited it) to the
// recipient's account for dataset, for a spend whose release did not happen
// (PRIVACY.md §6), and counts one release fewer. It refuses, changing
// nothing, when the account has no such spend to give back: no account, no
// release counted, or less spent than rho. rho must be positive.
func (l *Ledger) Refund(recipient, dataset string, rho float64) error {
	if !(rho > 0) {
		return fmt.Errorf("refund: ρ = %v, want > 0", rho)
	}
	n, err := toNano(rho, true)
	if err != nil {
		return fmt.Errorf("refund: %w", err)
	}
	a := l.get(recipient, dataset)
	switch {
	case a == nil:
		return fmt.Errorf("refund %v on %s for %s: %w", rho, dataset, recipient, ErrNoBudget)
	case a.releases == 0 || n > a.spent:
		return fmt.Errorf("refund %v on %s for %s: more than was spent (%v in %d releases)", rho, dataset, recipient,
			float64(a.spent)/nanoPerRho, a.releases)
	}
	a.spent -= n
	a.releases--
	return nil
}

// Remaining returns the ρ the recipient may still receive about dataset,
// 0 when no budget is set.
func (l *Ledger) Remaining(recipient, dataset string) float64 {
	a := l.get(recipient, dataset)
	if a == nil {
		return 0
	}
	return float64(a.budget-a.spent) / nanoPerRho
}

// Accounts lists the ledger's accounts sorted by recipient, then dataset.
func (l *Ledger) Accounts() []Account {
	out := make([]Account, 0, len(l.accounts))
	for k, a := range l.accounts {
		out = append(out, Account{
			Recipient: k.recipient, Dataset: k.dataset,
			Budget: float64(a.budget) / nanoPerRho, Spent: float64(a.spent) / nanoPerRho,
			Releases: a.releases,
		})
	}
	slices.SortFunc(out, func(a, b Account) int {
		return cmp.Or(cmp.Compare(a.Recipient, b.Recipient), cmp.Compare(a.Dataset, b.Dataset))
	})
	return out
}

// MarshalJSON encodes the ledger as version 1, accounts sorted, amounts in
// integer nano-ρ, so that the same ledger always gives the same bytes.
func (l Ledger) MarshalJSON() ([]byte, error) {
	v := ledgerJSON{Version: ledgerVersion, Accounts: []accountJSON{}}
	for _, a := range l.Accounts() {
		s := l.get(a.Recipient, a.Dataset)
		v.Accounts = append(v.Accounts, accountJSON{
			Recipient: a.Recipient, Dataset: a.Dataset,
			BudgetNano: s.budget, SpentNano: s.spent, Releases: s.releases,
		})
	}
	return json.Marshal(v)
}

// UnmarshalJSON decodes what MarshalJSON wrote, refusing unknown versions,
// unknown fields, duplicate accounts and accounts spent past their budget.
func (l *Ledger) UnmarshalJSON(b []byte) error {
	var v ledgerJSON
	if err := strictUnmarshal(b, &v); err != nil {
		return fmt.Errorf("decode ledger: %w", err)
	}
	if v.Version != ledgerVersion {
		return fmt.Errorf("decode ledger: version %d, want %d", v.Version, ledgerVersion)
	}
	m := make(map[accountKey]*account, len(v.Accounts))
	for i, a := range v.Accounts {
		k := accountKey{a.Recipient, a.Dataset}
		switch {
		case !validLedgerName(a.Recipient) || !validLedgerName(a.Dataset):
			return fmt.Errorf("decode ledger: account %d: invalid recipient or dataset name", i)
		case m[k] != nil:
			return fmt.Errorf("decode ledger: account %d: duplicate (%s, %s)", i, a.Recipient, a.Dataset)
		case a.BudgetNano > maxNanoRho || a.SpentNano > a.BudgetNano:
			return fmt.Errorf("decode ledger: account %d: spent %d of budget %d nano-ρ", i, a.SpentNano, a.BudgetNano)
		}
		m[k] = &account{budget: a.BudgetNano, spent: a.SpentNano, releases: a.Releases}
	}
	l.accounts = m
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}
