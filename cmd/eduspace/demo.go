package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object (version 1) instead of the summary")
	dir := fs.String("dir", "", "keep the authority's and every node's files in this (empty or new) directory")
	students := fs.Int("students", 300, "synthetic students per university")
	verbose := fs.Bool("v", false, "log what the nodes do to standard error")
	suite := fs.String("suite", crypto.DefaultSuite.String(), "the space's suite, selected in its signed policy: "+suiteNames())
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *students < 1 || *students > 100000 {
		return fmt.Errorf("%w: --students must be 1 to 100000", errUsage)
	}
	s, err := crypto.ParseSuite(*suite)
	if err != nil {
		return fmt.Errorf("%w: --suite: %v", errUsage, err)
	}
	o := demo.Options{Dir: *dir, Students: *students, Suite: s}
	if *verbose {
		o.Logger = newLogger(stderr, "info")
	}
	if !*asJSON {
		o.Progress = func(s string) { fmt.Fprintf(stderr, "· %s\n", s) }
	}
	res, err := demo.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printDemo(stdout, res)
	}
	if !res.EvidenceVerified {
		return exitCodeError{code: exitFailure, msg: "an evidence chain did not verify"}
	}
	return nil
}

func printDemo(w io.Writer, r demo.Result) {
	fmt.Fprintf(w, "\neduspace demo: space %q, suite %s, %.1fs\n\n", demo.Space, r.Suite, r.Seconds)
	fmt.Fprintf(w, "%-12s %-38s %-10s %8s %9s %9s\n", "node", "institution", "role", "records", "received", "evidence")
	for _, n := range r.Nodes {
		ev := fmt.Sprintf("%d ok", n.EvidenceEntries)
		if !n.EvidenceOK {
			ev = "BROKEN"
		}
		fmt.Fprintf(w, "%-12s %-38s %-10s %8d %9d %9s\n", n.ID, n.Institution, n.Role, n.Records, n.Received, ev)
	}
	fmt.Fprintf(w, "\ningested %d records, refused %d invalid ones at ingest\n\nshares:\n", r.Ingested, r.Invalid)
	for _, s := range r.Shares {
		envelopes := "envelopes"
		if s.Envelopes == 1 {
			envelopes = "envelope"
		}
		fmt.Fprintf(w, "  %s → %s (%s): %d permitted in %d %s, %d denied%s\n",
			s.From, s.To, s.Purpose, s.Permitted, s.Envelopes, envelopes, sum(s.Denied), reasons(s.Denied))
	}
	fmt.Fprintf(w, "\nconsents: %d granted, %d withdrawn; erasures: %d requested, %d confirmed by the recipients\n",
		r.ConsentsGranted, r.ConsentsWithdrawn, r.ErasuresRequested, r.ErasuresConfirmed)
	fmt.Fprintf(w, "export: uni-nanshan exported the %d records it received under %s (sha256 %.16s…, in its evidence log)\n",
		r.Exported.Records, r.Exported.Agreement, r.Exported.Digest)
	ag := r.Aggregate
	fmt.Fprintf(w, "\naggregate %s: %d of %d universities, %d cells released, %d suppressed under k; ρ = %.3f (ε = %.2f at δ = %g); %.2fs\n",
		ag.Round, ag.Survivors, ag.Participants, ag.CellsReleased, ag.CellsSuppressed, ag.RhoSpent, ag.EpsilonSpent, ag.Delta, ag.Seconds)
	for _, c := range ag.Cells {
		v := "suppressed"
		if c.Count != nil {
			v = fmt.Sprintf("%d (noisy)", *c.Count)
		}
		key := strings.Join(c.Key, ", ")
		if key == "" {
			key = "other"
		}
		fmt.Fprintf(w, "  %s: %s\n", key, v)
	}
	if j := r.Joined; j != nil {
		printJoined(w, "progression rates", j)
		if j.Employment != nil {
			printJoined(w, "employment rates and mean starting salary (CNY)", j.Employment)
		}
	}
	verdict := "every node's evidence chain verified"
	if !r.EvidenceVerified {
		verdict = "EVIDENCE CHAIN BROKEN"
	}
	fmt.Fprintf(w, "\ndelivered %d records; denied %d%s; %s\n", r.Delivered, sum(r.Denied), reasons(r.Denied), verdict)
	if r.Dir != "" {
		fmt.Fprintf(w, "files kept in %s\n", r.Dir)
	}
}

func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}

func reasons(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// suiteNames lists the suites --suite accepts.
func suiteNames() string {
	var names []string
	for _, s := range crypto.Suites() {
		names = append(names, s.String())
	}
	return strings.Join(names, ", ")
}

// printJoined prints one joined aggregate of the demo: per (hukou_type,
// gender) the noised counts and the rate with its interval, and the mean
// with its interval when there is one.
func printJoined(w io.Writer, what string, j *demo.JoinedResult) {
	fmt.Fprintf(w, "\njoined %s, %s (%s linked to %s): %d of %d participants; ρ = %.3f per participant (ε = %.2f at δ = %g); %.2fs\n",
		what, j.Round, j.Query.Join.Population[0], strings.Join(j.Query.Join.Outcome.Participants, ", "), j.Survivors, len(j.Participants),
		j.RhoSpent, j.EpsilonSpent, j.Delta, j.Seconds)
	for _, c := range j.Cells {
		key := make([]string, len(c.Key))
		for i, k := range c.Key {
			key[i] = k
			if k == "" {
				key[i] = "other"
			}
		}
		if c.Suppressed || c.Rate == nil {
			fmt.Fprintf(w, "  %-12s suppressed\n", strings.Join(key, ", "))
			continue
		}
		a := c.Accuracy
		if c.Mean != nil {
			a = c.RateAccuracy
		}
		fmt.Fprintf(w, "  %-12s %4d of %4d: rate %.3f, %.1f%% interval [%.3f, %.3f] (counts ±%.0f)",
			strings.Join(key, ", "), *c.Count, *c.Population, *c.Rate, 100*a.Level, a.Lower, a.Upper, a.Count)
		if c.Mean != nil {
			fmt.Fprintf(w, "; mean %.0f [%.0f, %.0f]", *c.Mean, c.Accuracy.Lower, c.Accuracy.Upper)
		}
		fmt.Fprintln(w)
	}
}
