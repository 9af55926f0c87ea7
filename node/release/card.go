package release

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/eduspace/eduspace/policy"
)

// uses are the intended and prohibited uses a data card states per
// purpose (RELEASES.md §5).
var uses = map[policy.Purpose][2][]string{
	policy.PurposeModelTraining: {
		{"training the recipient's models named in a provenance declaration (eduspace provenance declare)"},
		{"re-identifying anyone in the data, or linking it with other data to do so",
			"training a generative model on minors' data", "any purpose other than model training",
			"passing the data on to anyone else", "keeping it beyond the agreement's retention"},
	},
	policy.PurposeModelEvaluation: {
		{"evaluating the recipient's models (accuracy, fairness, robustness)"},
		{"re-identifying anyone in the data, or linking it with other data to do so",
			"training on the data", "passing the data on to anyone else", "keeping it beyond the agreement's retention"},
	},
	policy.PurposeLearningAnalytics: {
		{"analysing learning at the level of groups and courses for the provider's teaching"},
		{"re-identifying anyone in the data, or linking it with other data to do so",
			"decisions about one student", "training models", "passing the data on to anyone else",
			"keeping it beyond the agreement's retention"},
	},
}

func (r *Releaser) card(a *policy.Agreement, rel *Release, req Request, types []string, byType map[string]*source,
	report RiskReport, excludedN, withdrawn int, span TimeSpan) DataCard {
	c := DataCard{Source: r.c.NodeID, Recipient: a.Recipient, Agreement: a.ID, Purpose: string(a.Purpose),
		LegalBasis: string(a.LegalBasis), Standard: r.c.Std.Ref(), TimeSpan: span, RecordTypes: types,
		Retention: fmt.Sprintf("%d days from receipt (agreement %s)", a.RetentionDays, a.ID)}
	u, ok := uses[a.Purpose]
	if !ok {
		u = [2][]string{{"the agreement's purpose, " + string(a.Purpose)},
			{"re-identifying anyone in the data", "any other purpose", "passing the data on"}}
	}
	c.IntendedUses, c.ProhibitedUses = u[0], u[1]
	risk := map[string]TypeRisk{}
	for _, t := range report.Types {
		risk[t.Type] = t
	}
	for _, t := range types {
		rt, ok := r.c.Std.Type(t)
		if !ok {
			continue
		}
		present := map[string]bool{}
		for _, row := range byType[t].rows {
			for f := range row {
				present[f] = true
			}
		}
		var dp *DP
		if d, ok := report.DP[t]; ok {
			dp = &d
		}
		tr := risk[t]
		for _, f := range a.RecordTypes[t] {
			spec, ok := rt.Field(f)
			if !ok {
				continue
			}
			cf := CardField{Type: t, Name: f, Category: string(spec.Category), Level: spec.Level.String()}
			switch {
			case spec.Level >= r.c.Rules.SensitiveLevel:
				cf.Treatment = "removed: special category (sensitive level)"
			case dp != nil && slices.Contains(dp.Marginals, f):
				cf.Treatment = "synthetic: drawn from its noised one-way marginal"
			case dp != nil:
				cf.Treatment = "removed: identifier or no public domain for a synthetic value"
			case !present[f] && (spec.Direct || f == rt.SubjectKey()):
				cf.Treatment = "removed: direct identifier"
			case !present[f] && (identifying[f] || spec.Text):
				cf.Treatment = "removed: identifying alone, or free text"
			case !present[f]:
				cf.Treatment = "removed by the agreement's transformations"
			case slices.Contains(tr.Tokens, f):
				cf.Treatment = "tokenised: a pseudonym of this release only (another release gives the person another)"
			case tr.Generalised[f] != "":
				cf.Treatment = "generalised to " + tr.Generalised[f] + " (quasi-identifier)"
			case isQuasi(f):
				cf.Treatment = "kept (quasi-identifier; k reached without generalising it)"
			default:
				cf.Treatment = "kept"
			}
			c.Fields = append(c.Fields, cf)
		}
	}
	slices.SortFunc(c.Fields, func(x, y CardField) int {
		return cmp.Or(strings.Compare(x.Type, y.Type), strings.Compare(x.Name, y.Name))
	})
	if rel.Method == MethodK {
		c.Transformations = append(c.Transformations,
			"direct identifiers removed, or replaced by a token of this release where the agreement asks for one",
			"fields at the sensitive level (special categories) removed",
			fmt.Sprintf("quasi-identifiers generalised by hierarchy (birth date → year → 5-year band; address → district → city) until every class of records sharing them has at least k = %d", report.K),
			fmt.Sprintf("records still in classes below k suppressed (at most %.0f%%)", 100*report.MaxSuppress))
		for _, t := range report.Types {
			if t.Suppressed > 0 {
				c.KnownGaps = append(c.KnownGaps, fmt.Sprintf("%s: %d records suppressed to reach k; small groups are under-represented", t.Type, t.Suppressed))
			}
		}
	} else {
		c.Transformations = append(c.Transformations,
			"every row is synthetic: no row is a person's record",
			"one-way marginals of the fields with a public domain, and the record count, noised with the discrete Gaussian; rows drawn independently from them",
			fmt.Sprintf("(ε, δ) = (%g, %g) for the whole release, split evenly over its record types", req.Epsilon, report.dpDelta()))
		c.KnownGaps = append(c.KnownGaps, "correlations between fields are not preserved (fields drawn independently)")
		for t, d := range report.DP {
			if len(d.Dropped) > 0 {
				c.KnownGaps = append(c.KnownGaps, fmt.Sprintf("%s: no public domain, left out: %s", t, strings.Join(d.Dropped, ", ")))
			}
		}
	}
	if excludedN > 0 {
		c.KnownGaps = append(c.KnownGaps, fmt.Sprintf("%d records left out: their subjects never gave the consent the purpose needs", excludedN))
	}
	if withdrawn > 0 {
		c.KnownGaps = append(c.KnownGaps, fmt.Sprintf("%d records left out: their subjects withdrew the consent the purpose needs", withdrawn))
	}
	sort.Strings(c.KnownGaps)
	return c
}

func (r RiskReport) dpDelta() float64 {
	for _, d := range r.DP {
		return d.Delta
	}
	return 0
}
