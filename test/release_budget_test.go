package test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/release"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/policy/privacy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestDPReleaseBudget: differentially private releases draw on the
// recipient's person-level privacy budget, the ledger aggregate rounds
// use (RELEASES.md §4, policy/PRIVACY.md §6). uni-a makes DP releases of
// its students to ai-1 until the default yearly budget (ρ = 0.5) is spent:
// each is debited its ρ from (ai-1, student_id), the next one is refused
// (budget_exceeded, with its clause) before anything is produced, counted
// and in the evidence log, and nothing more reaches ai-1. The budgets, as
// the admin API lists them, show the releases' spend. A k-anonymous
// release to ai-1 still goes (it debits nothing), and ai-2 has a budget of
// its own; of concurrent releases with room for one, one is made.
func TestDPReleaseBudget(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	uni := s.member("uni-a", crypto.SuiteX25519)
	ai1 := s.memberAs("ai-1", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	ai2 := s.memberAs("ai-2", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	const n = 60
	if _, err := uni.Ingest(ctx, strings.NewReader(releaseStudents(s.now, n)), ""); err != nil {
		t.Fatal(err)
	}
	agree := func(id, recipient string, peer *node.Node) {
		t.Helper()
		ag := &policy.Agreement{ID: id, Provider: "uni-a", Recipient: recipient, Purpose: policy.PurposeLearningAnalytics,
			LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"student": {"student_id", "gender", "birth_date", "address"}},
			MaxLevel: schema.L3, Transforms: map[string]policy.Transform{"student_id": policy.TransformTokenise},
			RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
		for _, nd := range []*node.Node{uni, peer} {
			if err := nd.AddAgreement(ctx, ag); err != nil {
				t.Fatalf("add agreement %s: %v", id, err)
			}
		}
	}
	agree("la-1", "ai-1", ai1)
	agree("la-2", "ai-2", ai2)

	// ε = 2.5 at δ = 10⁻⁶ costs some 0.1 of ρ: the default 0.5 a year
	// pays for a few, known from the first's ρ (the ledger counts nano-ρ,
	// spends rounded up).
	const eps = 2.5
	var made []*release.Release
	var rho float64
	var ref *release.Refusal
	for range 20 {
		rel, err := uni.Release(ctx, release.Request{Agreement: "la-1", DP: true, Epsilon: eps})
		if errors.As(err, &ref) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rho = rel.Report.DP["student"].Rho
		made = append(made, rel)
	}
	if len(made) == 0 || ref == nil {
		t.Fatalf("%d DP releases made, refusal %v: want some, then a refusal", len(made), ref)
	}
	nano := math.Ceil(rho * 1e9)
	want := int(0.5e9 / nano)
	t.Logf("ε = %v: ρ = %.6g per release, %d releases fit ρ = 0.5; refused: %v", eps, rho, len(made), ref)
	if len(made) != want || ref.Reason != release.ReasonBudget || ref.Rule != release.RuleBudget || ref.Clause == "" {
		t.Fatalf("%d DP releases then %+v; want %d, then refused %s with its clause", len(made), ref, want, release.ReasonBudget)
	}
	records := 0
	for _, r := range made {
		records += r.Records
	}
	wait.Until(t, 30*time.Second, "the DP releases at ai-1", func() bool {
		st, err := ai1.Status(ctx)
		return err == nil && st.Received == int64(records)
	})
	list, err := uni.Releases().List(ctx)
	if err != nil || len(list) != len(made) {
		t.Fatalf("uni-a lists %d releases (%v), want the %d made: a refused one is not recorded", len(list), err, len(made))
	}

	// The budgets, through the admin API: ai-1's student_id account spent
	// what the releases cost, this year.
	account := func(recipient string) privacy.Account {
		t.Helper()
		var accounts []privacy.Account
		adminCall(t, uni, s.conf["uni-a"].DataDir, "GET", "/v1/budgets", "", &accounts)
		for _, a := range accounts {
			if a.Recipient == recipient && a.Population == "student_id" {
				return a
			}
		}
		t.Fatalf("budgets %+v: no account of %s for student_id", accounts, recipient)
		return privacy.Account{}
	}
	a1 := account("ai-1")
	if a1.Spent < float64(want)*rho-1e-9 || a1.Spent > float64(want)*nano/1e9+1e-9 || a1.Budget != 0.5 ||
		a1.Releases != uint64(want) || a1.Window != s.now.UTC().Format("2006") {
		t.Errorf("ai-1's account %+v: want %d releases of ρ %.6g spent in %d", a1, want, rho, s.now.UTC().Year())
	}

	// Asked again: refused again, each refusal counted and in the log.
	if _, err := uni.Release(ctx, release.Request{Agreement: "la-1", DP: true, Epsilon: eps}); !errors.As(err, &ref) || ref.Reason != release.ReasonBudget {
		t.Fatalf("DP release over the budget: %v; want refused %s", err, release.ReasonBudget)
	}
	if m := nodetest.Scrape(t, uni); !strings.Contains(m, `eduspace_release_refusals_total{reason="budget_exceeded"} 2`) {
		t.Errorf("uni-a's metrics count not 2 budget_exceeded release refusals")
	}
	refusals, spent := 0, 0
	for _, e := range nodetest.Evidence(t, s.conf["uni-a"].DataDir) {
		if e["kind"] != "release" || e["peer"] != "ai-1" {
			continue
		}
		if e["reason"] == release.ReasonBudget && e["rule"] == release.RuleBudget {
			refusals++
		}
		if d, _ := e["detail"].(map[string]any); e["reason"] == "released" && d["rho_nano:student_id"] == nano {
			spent++
		}
	}
	if refusals != 2 || spent != want {
		t.Errorf("uni-a's evidence: %d budget refusals, %d releases with their ρ; want 2 and %d", refusals, spent, want)
	}

	// A k-anonymous release is no DP release: it debits nothing and goes.
	krel, err := uni.Release(ctx, release.Request{Agreement: "la-1", K: 5})
	if err != nil {
		t.Fatalf("k-anonymous release after the DP budget is spent: %v", err)
	}
	if a := account("ai-1"); a.Spent != a1.Spent || a.Releases != a1.Releases {
		t.Errorf("ai-1's account after a k-anonymous release %+v, want unchanged %+v", a, a1)
	}
	wait.Until(t, 30*time.Second, "the k-anonymous release at ai-1", func() bool {
		st, err := ai1.Status(ctx)
		return err == nil && st.Received == int64(records+krel.Records)
	})

	// ai-2's budget is its own.
	rel2, err := uni.Release(ctx, release.Request{Agreement: "la-2", DP: true, Epsilon: eps})
	if err != nil {
		t.Fatalf("a DP release to ai-2 after ai-1's budget is spent: %v", err)
	}
	if a2 := account("ai-2"); a2.Releases != 1 || a2.Spent < rho-1e-9 || a2.Spent > nano/1e9+1e-9 {
		t.Errorf("ai-2's account %+v: want one release of ρ %.6g", a2, rho)
	}

	// Three DP releases to ai-2 at once, with room for one more: one is
	// made and charged, two are refused, whichever check stops them (the
	// one before the data is read, or the debit in the transaction that
	// would record the release).
	if err := uni.Aggregator().SetBudget(ctx, "ai-2", "student_id", 2.5*nano/1e9); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	rels := make([]*release.Release, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rels[i], errs[i] = uni.Release(ctx, release.Request{Agreement: "la-2", DP: true, Epsilon: eps})
		}()
	}
	wg.Wait()
	ok, refused, received := 0, 0, rel2.Records
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			received += rels[i].Records
		case errors.As(err, &ref) && ref.Reason == release.ReasonBudget:
			refused++
			t.Logf("concurrent: %s", ref.Detail)
		default:
			t.Errorf("concurrent DP release: %v", err)
		}
	}
	if a2 := account("ai-2"); ok != 1 || refused != 2 || a2.Releases != 2 || a2.Spent > 2*nano/1e9+1e-9 {
		t.Errorf("3 concurrent DP releases with room for one: %d made, %d refused, account %+v; want 1, 2 and 2 releases", ok, refused, a2)
	}
	wait.Until(t, 30*time.Second, "the DP releases at ai-2", func() bool {
		st, err := ai2.Status(ctx)
		return err == nil && st.Received == int64(received)
	})
	if st, err := ai1.Status(ctx); err != nil || st.Received != int64(records+krel.Records) {
		t.Errorf("ai-1 holds %v records (%v), want %d: a refused release sends nothing", st.Received, err, records+krel.Records)
	}
	for name, nd := range map[string]*node.Node{"uni-a": uni, "ai-1": ai1, "ai-2": ai2} {
		if _, err := nd.VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", name, err)
		}
	}
}
