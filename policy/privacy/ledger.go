package privacy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
// the (recipient, population) account past its budget in the window;
// nothing is debited.
var ErrBudgetExceeded = errors.New("privacy budget exceeded")

// ErrNoBudget is returned by [Ledger.Spend] when no budget was set for the
// (recipient, population) pair: without a budget nothing may be released.
var ErrNoBudget = errors.New("no privacy budget for recipient and population")

// ErrLedgerV1 is returned (wrapped) by [Ledger.UnmarshalJSON] for a ledger
// of version 1, whose accounts were per (recipient, dataset) and had no
// window: [MigrateV1] reads it.
var ErrLedgerV1 = errors.New("privacy ledger of version 1: migrate it")

// Ledger is the privacy budget a node grants each recipient about each
// population of persons, in ρ (zCDP) per window of time, and what it has
// spent in each window (PRIVACY.md §6). A population is the set of persons
// one subject key identifies (the node names it by that key, "student_id"):
// every release about those persons, whatever record type or query it
// counts, is debited from the one account, so that the spent total of a
// window is the zCDP guarantee the recipient has received about any one of
// them from this node's releases in that window. A window is a name whose
// order is the order of time (the node uses calendar years, "2026"); the
// budget is per window: each window starts with nothing spent.
//
// The zero Ledger is empty and ready to use. A Ledger is a value the node
// stores: it marshals to and from JSON; it is not safe for concurrent use.
type Ledger struct {
	budgets map[popKey]uint64 // nano-ρ per window
	spends  map[windowKey]*account
}

type popKey struct{ recipient, population string }

type windowKey struct {
	popKey
	window string
}

type account struct {
	spent    uint64 // nano-ρ
	releases uint64
}

// Account is one line of a ledger: what a (recipient, population) account
// spent in one window, or, with Window empty, an account with nothing spent
// in any window yet.
type Account struct {
	Recipient  string  `json:"recipient"`
	Population string  `json:"population"`
	Window     string  `json:"window,omitempty"`
	Budget     float64 `json:"budget_rho"` // per window
	Spent      float64 `json:"spent_rho"`
	Releases   uint64  `json:"releases"` // successful spends not refunded
}

// ledgerJSON is the stored form: version 2, budgets sorted by recipient then
// population, spends by recipient, population and window, amounts in
// integer nano-ρ so that reloading is exact.
type ledgerJSON struct {
	Version int          `json:"version"`
	Budgets []budgetJSON `json:"budgets"`
	Spends  []spendJSON  `json:"spends"`
}

type budgetJSON struct {
	Recipient  string `json:"recipient"`
	Population string `json:"population"`
	BudgetNano uint64 `json:"budget_nano_rho"`
}

type spendJSON struct {
	Recipient  string `json:"recipient"`
	Population string `json:"population"`
	Window     string `json:"window"`
	SpentNano  uint64 `json:"spent_nano_rho"`
	Releases   uint64 `json:"releases"`
}

const ledgerVersion = 2

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

// newestSpent is what the newest window of the account spent.
func (l *Ledger) newestSpent(k popKey) uint64 {
	var newest string
	var spent uint64
	for wk, a := range l.spends {
		if wk.popKey == k && wk.window >= newest {
			newest, spent = wk.window, a.spent
		}
	}
	return spent
}

// spentIn is what the account spent in window (0 when nothing).
func (l *Ledger) spentIn(k popKey, window string) uint64 {
	if a := l.spends[windowKey{k, window}]; a != nil {
		return a.spent
	}
	return 0
}

// HasBudget reports whether a budget was set for the recipient about the
// population.
func (l *Ledger) HasBudget(recipient, population string) bool {
	_, ok := l.budgets[popKey{recipient, population}]
	return ok
}

// SetBudget sets the ρ the recipient may receive about the population in
// each window, rounded down to 10⁻⁹. A budget may be raised, or lowered
// down to what the newest window has spent, never below it (an older
// window may have spent more: it is closed).
func (l *Ledger) SetBudget(recipient, population string, rho float64) error {
	if !validLedgerName(recipient) || !validLedgerName(population) {
		return fmt.Errorf("set budget: invalid recipient or population name")
	}
	n, err := toNano(rho, false)
	if err != nil {
		return fmt.Errorf("set budget: %w", err)
	}
	k := popKey{recipient, population}
	if s := l.newestSpent(k); n < s {
		return fmt.Errorf("set budget: %v below the %v already spent", rho, float64(s)/nanoPerRho)
	}
	if l.budgets == nil {
		l.budgets = make(map[popKey]uint64)
	}
	l.budgets[k] = n
	return nil
}

// Spend debits rho (rounded up to 10⁻⁹) from the recipient's budget about
// the population in window. It refuses, debiting nothing, with an error
// wrapping [ErrNoBudget] when no budget was set and [ErrBudgetExceeded] when
// the spend would take the window past the budget. rho must be positive.
func (l *Ledger) Spend(recipient, population, window string, rho float64) error {
	if !(rho > 0) {
		return fmt.Errorf("spend: ρ = %v, want > 0", rho)
	}
	if !validLedgerName(window) {
		return errors.New("spend: invalid window name")
	}
	n, err := toNano(rho, true)
	if err != nil {
		return fmt.Errorf("spend: %w", err)
	}
	k := popKey{recipient, population}
	budget, ok := l.budgets[k]
	if !ok {
		return fmt.Errorf("spend %v on %s for %s: %w", rho, population, recipient, ErrNoBudget)
	}
	spent := l.spentIn(k, window)
	if spent > budget || n > budget-spent {
		return fmt.Errorf("spend %v on %s for %s in %s, %v of %v left: %w", rho, population, recipient, window,
			float64(budget-min(spent, budget))/nanoPerRho, float64(budget)/nanoPerRho, ErrBudgetExceeded)
	}
	a := l.spends[windowKey{k, window}]
	if a == nil {
		if l.spends == nil {
			l.spends = make(map[windowKey]*account)
		}
		a = &account{}
		l.spends[windowKey{k, window}] = a
	}
	a.spent += n
	a.releases++
	return nil
}

// Refund gives back rho (rounded up to 10⁻⁹, as Spend debited it) to the
// recipient's account about the population in window, for a spend whose
// release did not happen (PRIVACY.md §6), and counts one release fewer. It
// refuses, changing nothing, when the window has no such spend to give
// back: no account, no release counted, or less spent than rho. rho must be
// positive.
func (l *Ledger) Refund(recipient, population, window string, rho float64) error {
	if !(rho > 0) {
		return fmt.Errorf("refund: ρ = %v, want > 0", rho)
	}
	n, err := toNano(rho, true)
	if err != nil {
		return fmt.Errorf("refund: %w", err)
	}
	k := popKey{recipient, population}
	if _, ok := l.budgets[k]; !ok {
		return fmt.Errorf("refund %v on %s for %s: %w", rho, population, recipient, ErrNoBudget)
	}
	a := l.spends[windowKey{k, window}]
	if a == nil || a.releases == 0 || n > a.spent {
		return fmt.Errorf("refund %v on %s for %s in %s: more than was spent", rho, population, recipient, window)
	}
	a.spent -= n
	a.releases--
	return nil
}

// Remaining returns the ρ the recipient may still receive about the
// population in window, 0 when no budget is set.
func (l *Ledger) Remaining(recipient, population, window string) float64 {
	k := popKey{recipient, population}
	budget, ok := l.budgets[k]
	if !ok {
		return 0
	}
	return float64(budget-min(l.spentIn(k, window), budget)) / nanoPerRho
}

// Accounts lists the ledger's lines sorted by recipient, population and
// window: one per window with spends, or one without a window for an
// account that has none.
func (l *Ledger) Accounts() []Account {
	out := make([]Account, 0, len(l.spends)+len(l.budgets))
	used := map[popKey]bool{}
	for k, a := range l.spends {
		used[k.popKey] = true
		out = append(out, Account{Recipient: k.recipient, Population: k.population, Window: k.window,
			Budget: float64(l.budgets[k.popKey]) / nanoPerRho, Spent: float64(a.spent) / nanoPerRho, Releases: a.releases})
	}
	for k, b := range l.budgets {
		if !used[k] {
			out = append(out, Account{Recipient: k.recipient, Population: k.population, Budget: float64(b) / nanoPerRho})
		}
	}
	slices.SortFunc(out, func(a, b Account) int {
		return cmp.Or(cmp.Compare(a.Recipient, b.Recipient), cmp.Compare(a.Population, b.Population), cmp.Compare(a.Window, b.Window))
	})
	return out
}

// MarshalJSON encodes the ledger as version 2, sorted, amounts in integer
// nano-ρ, so that the same ledger always gives the same bytes.
func (l Ledger) MarshalJSON() ([]byte, error) {
	v := ledgerJSON{Version: ledgerVersion, Budgets: []budgetJSON{}, Spends: []spendJSON{}}
	for _, k := range slices.SortedFunc(maps.Keys(l.budgets), func(a, b popKey) int {
		return cmp.Or(cmp.Compare(a.recipient, b.recipient), cmp.Compare(a.population, b.population))
	}) {
		v.Budgets = append(v.Budgets, budgetJSON{Recipient: k.recipient, Population: k.population, BudgetNano: l.budgets[k]})
	}
	for _, k := range slices.SortedFunc(maps.Keys(l.spends), func(a, b windowKey) int {
		return cmp.Or(cmp.Compare(a.recipient, b.recipient), cmp.Compare(a.population, b.population), cmp.Compare(a.window, b.window))
	}) {
		a := l.spends[k]
		v.Spends = append(v.Spends, spendJSON{Recipient: k.recipient, Population: k.population, Window: k.window,
			SpentNano: a.spent, Releases: a.releases})
	}
	return json.Marshal(v)
}

// UnmarshalJSON decodes what MarshalJSON wrote, refusing unknown versions
// (version 1 with an error wrapping [ErrLedgerV1]), unknown fields,
// duplicates and spends of an account without a budget. A window may have
// spent more than the budget (a migrated ledger, [MigrateV1]): nothing is
// left in it.
func (l *Ledger) UnmarshalJSON(b []byte) error {
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("decode ledger: %w", err)
	}
	if head.Version == 1 {
		return fmt.Errorf("decode ledger: %w", ErrLedgerV1)
	}
	var v ledgerJSON
	if err := strictUnmarshal(b, &v); err != nil {
		return fmt.Errorf("decode ledger: %w", err)
	}
	if v.Version != ledgerVersion {
		return fmt.Errorf("decode ledger: version %d, want %d", v.Version, ledgerVersion)
	}
	var d Ledger
	d.budgets = make(map[popKey]uint64, len(v.Budgets))
	d.spends = make(map[windowKey]*account, len(v.Spends))
	for i, a := range v.Budgets {
		k := popKey{a.Recipient, a.Population}
		_, dup := d.budgets[k]
		switch {
		case !validLedgerName(a.Recipient) || !validLedgerName(a.Population):
			return fmt.Errorf("decode ledger: budget %d: invalid recipient or population name", i)
		case dup:
			return fmt.Errorf("decode ledger: budget %d: duplicate (%s, %s)", i, a.Recipient, a.Population)
		case a.BudgetNano > maxNanoRho:
			return fmt.Errorf("decode ledger: budget %d: %d nano-ρ", i, a.BudgetNano)
		}
		d.budgets[k] = a.BudgetNano
	}
	for i, s := range v.Spends {
		k := windowKey{popKey{s.Recipient, s.Population}, s.Window}
		_, budgeted := d.budgets[k.popKey]
		switch {
		case !validLedgerName(s.Window):
			return fmt.Errorf("decode ledger: spend %d: invalid window name", i)
		case !budgeted:
			return fmt.Errorf("decode ledger: spend %d: no budget for (%s, %s)", i, s.Recipient, s.Population)
		case d.spends[k] != nil:
			return fmt.Errorf("decode ledger: spend %d: duplicate (%s, %s, %s)", i, s.Recipient, s.Population, s.Window)
		case s.SpentNano > maxNanoRho:
			return fmt.Errorf("decode ledger: spend %d: %d nano-ρ", i, s.SpentNano)
		}
		d.spends[k] = &account{spent: s.SpentNano, releases: s.Releases}
	}
	*l = d
	return nil
}

// MigrateV1 reads a ledger of version 1, whose accounts were per
// (recipient, dataset) with no window, into a ledger of this version: the
// accounts of a recipient whose datasets population maps to the same
// population are merged into one, with the smallest of their budgets (the
// ledger never grants more than any of them did) and the sum of their
// spends and releases (which is what composition charged the persons
// they are about), debited in window, the window of the ledger's last
// change. A merged account spent past its budget has nothing left in that
// window. population fails for a dataset it cannot place, and so does the
// migration.
func MigrateV1(b []byte, population func(dataset string) (string, error), window string) (*Ledger, error) {
	var v struct {
		Version  int `json:"version"`
		Accounts []struct {
			Recipient  string `json:"recipient"`
			Dataset    string `json:"dataset"`
			BudgetNano uint64 `json:"budget_nano_rho"`
			SpentNano  uint64 `json:"spent_nano_rho"`
			Releases   uint64 `json:"releases"`
		} `json:"accounts"`
	}
	if err := strictUnmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("migrate ledger: %w", err)
	}
	if v.Version != 1 {
		return nil, fmt.Errorf("migrate ledger: version %d, want 1", v.Version)
	}
	if !validLedgerName(window) {
		return nil, errors.New("migrate ledger: invalid window name")
	}
	l := &Ledger{budgets: map[popKey]uint64{}, spends: map[windowKey]*account{}}
	for i, a := range v.Accounts {
		if !validLedgerName(a.Recipient) || !validLedgerName(a.Dataset) || a.BudgetNano > maxNanoRho || a.SpentNano > a.BudgetNano {
			return nil, fmt.Errorf("migrate ledger: account %d: invalid", i)
		}
		p, err := population(a.Dataset)
		if err != nil {
			return nil, fmt.Errorf("migrate ledger: account %d: %w", i, err)
		}
		if !validLedgerName(p) {
			return nil, fmt.Errorf("migrate ledger: account %d: invalid population name", i)
		}
		k := popKey{a.Recipient, p}
		if b, ok := l.budgets[k]; !ok || a.BudgetNano < b {
			l.budgets[k] = a.BudgetNano
		}
		if a.SpentNano == 0 && a.Releases == 0 {
			continue
		}
		wk := windowKey{k, window}
		s := l.spends[wk]
		if s == nil {
			s = &account{}
			l.spends[wk] = s
		}
		s.spent = min(s.spent+a.SpentNano, maxNanoRho)
		s.releases += a.Releases
	}
	return l, nil
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
