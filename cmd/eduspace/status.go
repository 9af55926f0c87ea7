package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/eduspace/eduspace/node/admin"
)

// runStatus prints a running node's state on one screen (GET
// /v1/overview): identity and credential, health, fail-closed state and
// checkpoints, outbox and inbox, keys, peers, agreements, budgets, the
// catalogue, releases and linkage.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	cf := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the whole state as one JSON object")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	data, err := c.fetch(ctx, http.MethodGet, "/v1/overview", nil)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(data)
		return err
	}
	var o admin.Overview
	if err := json.Unmarshal(data, &o); err != nil {
		return fmt.Errorf("read the node's overview: %w", err)
	}
	printOverview(stdout, &o)
	return nil
}

func printOverview(out io.Writer, o *admin.Overview) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	yes := func(b bool, t, f string) string {
		if b {
			return t
		}
		return f
	}
	fmt.Fprintf(w, "node\t%s (%s, %s) in space %s, suite %s\n", o.Node, o.Institution, o.Role, o.Space, o.Suite)
	fmt.Fprintf(w, "credential\tvalid until %s (%s)%s\n", o.CredExpires.UTC().Format(time.DateOnly), o.CredLeft, yes(o.CredWarn, "  << renew", ""))
	state := yes(o.Ready, "ready", "NOT READY")
	if len(o.Health) > 0 {
		state += ": " + strings.Join(o.Health, "; ")
	}
	fmt.Fprintf(w, "state\t%s; NATS %s\n", state, yes(o.Connected, "connected", "DISCONNECTED"))
	fmt.Fprintf(w, "sending\t%s; evidence %d entries, own checkpoint covers %d (%s), uncovered for %s of %s allowed\n",
		yes(o.Blocked, "FAILS CLOSED", "open"), o.EvidenceCount, o.OwnCheckpoint, ago(o.OwnCheckpointT, o.Generated),
		o.CheckpointAge.Round(time.Second), o.CheckpointMax)
	switch {
	case !o.Anchoring:
		fmt.Fprintf(w, "trusted time	checkpoints unanchored (no checkpoint.tsa_url)\n")
	case o.LastAnchoredT.IsZero():
		fmt.Fprintf(w, "trusted time	TSA configured, no checkpoint anchored yet\n")
	default:
		fmt.Fprintf(w, "trusted time	last checkpoint anchored at %s (%s)\n", o.LastAnchoredT.UTC().Format(time.RFC3339), ago(o.LastAnchoredT, o.Generated))
	}
	fmt.Fprintf(w, "outbox\t%d envelopes to send, %d awaiting a receipt; sent %d envelopes (%d records), %d in 24 h\n",
		o.OutboxDepth, o.AwaitingReceipt, o.SentAll.Envelopes, o.SentAll.Records, o.Sent24.Envelopes)
	fmt.Fprintf(w, "inbox\treceived %d envelopes (%d records), %d in 24 h; %d missing from sequences; %d refused since start\n",
		o.ReceivedAll.Envelopes, o.ReceivedAll.Records, o.Received24.Envelopes, o.SequenceMissing, o.RefusedTotal)
	fmt.Fprintf(w, "consents\t%d; erasures %d, %d open\n", o.Consents, o.ErasuresAll, o.ErasuresOpen)
	for _, k := range o.Keys {
		fmt.Fprintf(w, "key\t%s %s%s\n", k.Kind, k.ID, yes(k.Current, " (current)", " (listed)"))
	}
	for _, p := range o.Peers {
		if p.Self {
			continue
		}
		fmt.Fprintf(w, "peer\t%s (%s): %s, credential %s; sent %d, received %d envelopes\n",
			p.Node, p.Role, p.State, p.ExpiresIn, p.SentTo, p.RecvFrom)
	}
	for _, a := range o.Agreements {
		fmt.Fprintf(w, "agreement\t%s: %s → %s, %s, %s until %s\n", a.ID, a.Provider, a.Recipient, a.Purpose, a.State,
			a.ValidUntil.UTC().Format(time.DateOnly))
	}
	for _, b := range o.Budgets {
		window := b.Window
		if window == "" {
			window = "no year yet"
		}
		fmt.Fprintf(w, "budget\t%s / %s, %s: %.4g of %.4g ρ spent, %d releases\n", b.Recipient, b.Population, window, b.Spent, b.Budget, b.Releases)
	}
	fmt.Fprintf(w, "catalogue\t%d datasets offered here, %d from members\n", o.Datasets.Offered, o.Datasets.Members)
	if o.Releases.Count > 0 {
		fmt.Fprintf(w, "releases\t%d made (%d records), the last %s\n", o.Releases.Count, o.Releases.Records, ago(o.Releases.Last, o.Generated))
	}
	switch l := o.Linkage; {
	case l == nil:
	case l.Evaluator == "":
		fmt.Fprintf(w, "linkage\tno evaluator named in the space policy\n")
	case l.IsEvaluator:
		fmt.Fprintf(w, "linkage\tthis node evaluates, key %s%s\n", l.KeyID, yes(l.KeyHeld, "", " NOT HELD: "+l.Problem))
	default:
		fmt.Fprintf(w, "linkage\tevaluator %s, key %s%s\n", l.Evaluator, l.KeyID, yes(l.Problem == "", "", ": "+l.Problem))
	}
	for _, p := range o.Problems {
		fmt.Fprintf(w, "unread\t%s\n", p)
	}
}

// ago says how long before now t was, "never" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
