package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/policy"
)

func init() {
	examples["linkage pseudonymize"] = "eduspace linkage pseudonymize --config /etc/eduspace/node.yaml --purpose statistics --epoch 2026"
	examples["linkage status"] = "eduspace linkage status --config /etc/eduspace/node.yaml"
	examples["linkage keygen"] = "eduspace linkage keygen --config /etc/eduspace/node.yaml --out linkage-key.json   (on the evaluator; hand the file to the authority)"
	examples["authority linkage-evaluator"] = "eduspace authority linkage-evaluator --dir /srv/authority --space beijing-edu --key linkage-key.json --url nats://hub-1:4222 --credentials /srv/authority/nats/operator.nk"
}

// linkageSubs are the subcommands of `eduspace linkage`.
var linkageSubs = []subcommand{
	{"pseudonymize", "link the students this node holds: their resident ids, blinded, through the space's evaluator; prints the report"},
	{"status", "the space's linkage evaluator and key; on the evaluator, each member's evaluations"},
	{"keygen", "make a linkage key on the evaluator (offline) and write its public part for the authority"},
}

// runLinkage is pseudonymous linkage (node/linkage/LINKAGE.md).
func runLinkage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "pseudonymize":
		return runLinkagePseudonymize(ctx, args[1:], stdout, stderr)
	case "status":
		fs := newFlags("linkage status", stderr)
		cf := adminFlags(fs)
		asJSON := fs.Bool("json", false, "print the status as JSON")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		data, err := c.fetch(ctx, http.MethodGet, "/v1/linkage/status", nil)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, data)
		}
		var st linkage.Status
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("read linkage status: %w", err)
		}
		printLinkageStatus(stdout, st)
		return nil
	case "keygen":
		fs := newFlags("linkage keygen", stderr)
		cfgPath := fs.String("config", "", "the evaluator's YAML config file (required)")
		out := fs.String("out", "linkage-key.json", "where to write the public key for the authority")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		cfg, err := loadRequiredConfig(*cfgPath)
		if err != nil {
			return err
		}
		ev, err := linkage.GenerateKey(cfg.DataDir, cfg.NodeID)
		if err != nil {
			return err
		}
		if err := linkage.WritePublic(*out, ev); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "linkage key %s (%s) kept in %s\nhand %s to the space authority:\n  eduspace authority linkage-evaluator --dir AUTHORITY_DIR --space %s --key %s --url NATS_URL\n"+
			"the node answers under it once the space policy names it\n",
			linkage.KeyID(ev.Suite, ev.Key), ev.Suite, filepath.Join(cfg.DataDir, "linkage"), *out, cfg.Space, *out)
		return nil
	}
	return fmt.Errorf("%w: linkage pseudonymize --purpose P [--epoch E] | linkage status | linkage keygen --config FILE", errUsage)
}

// runLinkagePseudonymize asks the node to link the students it holds
// (POST /v1/linkage/pseudonymize), printing progress on a terminal and the
// report. The pseudonyms stay in the node.
func runLinkagePseudonymize(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("linkage pseudonymize", stderr)
	cf := adminFlags(fs)
	purpose := fs.String("purpose", "", "the purpose the pseudonyms are for, one of the space's (statistics, research, …) (required)")
	epoch := fs.String("epoch", "", "the epoch: a year such as 2026, or a named epoch such as spring-2026; default the current year")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *purpose == "" {
		return fmt.Errorf("%w: --purpose is required (statistics, research, employment_statistics, …)", errUsage)
	}
	if *epoch != "" && !policy.ValidEpoch(*epoch) {
		return fmt.Errorf("%w: --epoch %q: want a year such as 2026, or a name of at most 32 of a-z, 0-9, '.', '_', '-' starting with a letter", errUsage, *epoch)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	term := progressTo(stderr)
	start := time.Now()
	shown := false
	req := admin.PseudonymizeRequest{Purpose: *purpose, Epoch: *epoch}
	return streamLines(ctx, c, "/v1/linkage/pseudonymize", req, "linkage", "a report", func(l *admin.PseudonymizeLine) (bool, error) {
		if p := l.Progress; p != nil && term != nil {
			el := time.Since(start).Seconds()
			fmt.Fprintf(term, "\r%-8s %d of %d (%.0f%%) in %.1f s   ", p.Stage, p.Done, p.Total, 100*float64(p.Done)/float64(max(p.Total, 1)), el)
			shown = true
		}
		if l.Report == nil && l.Error == "" {
			return false, nil
		}
		if shown {
			fmt.Fprintln(term)
		}
		if l.Error != "" {
			return true, fmt.Errorf("linkage: %s", l.Error)
		}
		if *asJSON {
			return true, json.NewEncoder(stdout).Encode(l.Report)
		}
		printLinkageReport(stdout, l.Report)
		return true, nil
	})
}

// printLinkageReport prints a linkage's report for an operator.
func printLinkageReport(w io.Writer, r *linkage.Report) {
	fmt.Fprintf(w, "linkage for purpose %s, epoch %s, through %s (key %s): %d chunks in %.1f s\n", r.Purpose, r.Epoch, r.Evaluator, r.KeyID, r.Chunks, r.Seconds)
	fmt.Fprintf(w, "student records read: %d\n", r.Records)
	fmt.Fprintf(w, "  pseudonyms:         %d (%d of them obtained before, kept in memory; the pseudonyms stay in the node)\n", r.Evaluated, r.Cached)
	fmt.Fprintf(w, "  excluded:           %d\n", r.Excluded)
	fmt.Fprintf(w, "    malformed id:     %d (format, date or check character wrong)\n", r.Malformed)
	fmt.Fprintf(w, "    duplicate:        %d (an id held for two students, two ids for one student, or a repeated record)\n", r.Duplicate)
	fmt.Fprintf(w, "    no resident id:   %d\n", r.Missing)
}

// printLinkageStatus prints what a node knows of the space's linkage.
func printLinkageStatus(w io.Writer, st linkage.Status) {
	if st.Evaluator == "" {
		fmt.Fprintf(w, "linkage: %s\n", st.Problem)
		return
	}
	role := "requester"
	if st.IsEvaluator {
		role = "evaluator (this node)"
	}
	fmt.Fprintf(w, "evaluator: %s\nkey:       %s (%s)\nthis node: %s\n", st.Evaluator, st.KeyID, st.Suite, role)
	if st.Problem != "" {
		fmt.Fprintf(w, "problem:   %s\n", st.Problem)
	}
	if !st.IsEvaluator {
		return
	}
	if st.Limits != nil {
		fmt.Fprintf(w, "limits:    %d evaluations per member, purpose and epoch; %d per request\n", st.Limits.PerEpoch, st.Limits.PerRequest)
	}
	if len(st.Usage) == 0 {
		fmt.Fprintln(w, "usage:     none yet")
		return
	}
	fmt.Fprintf(w, "\n%-20s %-26s %-14s %12s %8s  %s\n", "MEMBER", "PURPOSE", "EPOCH", "EVALUATIONS", "REFUSED", "LAST")
	for _, u := range st.Usage {
		fmt.Fprintf(w, "%-20s %-26s %-14s %12d %8d  %s\n", u.Member, u.Purpose, u.Epoch, u.Evaluations, u.Refused, u.Last.Format(time.RFC3339))
	}
}

// runAuthorityLinkage signs the space policy naming the linkage evaluator
// and its key (the file `eduspace linkage keygen` wrote), or none, keeps
// it in the authority directory, and writes or publishes it. With --url it
// first checks, in the space's registry, that the evaluator is a
// university-role member: never the center.
func runAuthorityLinkage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority linkage-evaluator", stderr)
	dir := fs.String("dir", "", "the authority directory (required)")
	space := fs.String("space", "", "the space name (required)")
	keyFile := fs.String("key", "", "the evaluator's public key file, from `eduspace linkage keygen` (required unless --none)")
	none := fs.Bool("none", false, "name no evaluator: linkage stops")
	minSuite := fs.String("min-suite", crypto.DefaultSuite.String(), "the weakest envelope suite, for a space's first policy (a later one keeps its own)")
	out := fs.String("out", "", "write the signed policy to this file")
	url := fs.String("url", "", "publish the signed policy on the space through this NATS server")
	creds := fs.String("credentials", "", "the operator's nkey seed file (DIR/nats/operator.nk), with --url")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || *space == "" || (*keyFile == "") == !*none || (*out == "" && *url == "") {
		return fmt.Errorf("%w: --dir, --space, one of --key and --none, and --out or --url, are required", errUsage)
	}
	suite, err := crypto.ParseSuite(*minSuite)
	if err != nil {
		return fmt.Errorf("%w: --min-suite: %v", errUsage, err)
	}
	var ev *crypto.LinkageEvaluator
	if !*none {
		if ev, err = linkage.ReadPublic(*keyFile); err != nil {
			return err
		}
	}
	k, err := authority.Load(*dir)
	if err != nil {
		return err
	}
	if *url != "" && ev != nil {
		jsc, closeNATS, err := operatorJetStream(*url, *creds)
		if err != nil {
			return err
		}
		defer closeNATS()
		kv, err := jsc.KeyValue(ctx, bus.Layout{Space: *space}.RegistryBucket())
		if err != nil {
			return fmt.Errorf("read the space's registry: %w", err)
		}
		e, err := kv.Get(ctx, ev.Node)
		if err != nil {
			return fmt.Errorf("%s is not in the space's registry (%v): start the evaluator first, so its role can be checked", ev.Node, err)
		}
		cred, err := crypto.ParseCredential(string(e.Value()), k.Public(), *space, time.Now())
		if err != nil {
			return fmt.Errorf("%s's credential in the registry: %w", ev.Node, err)
		}
		if cred.Role != crypto.RoleUniversity {
			return fmt.Errorf("%s has role %s: the linkage evaluator must be a university-role member, never the center (which asks the joined queries), an auditor or an AI service", ev.Node, cred.Role)
		}
	}
	p, data, err := authority.SetLinkageEvaluator(k, *dir, *space, ev, suite, time.Now())
	if err != nil {
		return err
	}
	if ev != nil {
		fmt.Fprintf(stdout, "space policy %d signed: linkage evaluator %s, key %s; kept in %s\n", p.Serial, ev.Node, linkage.KeyID(ev.Suite, ev.Key), authority.SpacePolicyPath(*dir, *space))
	} else {
		fmt.Fprintf(stdout, "space policy %d signed: no linkage evaluator; kept in %s\n", p.Serial, authority.SpacePolicyPath(*dir, *space))
	}
	return deliverSpacePolicy(ctx, stdout, p, data, *space, *out, *url, *creds,
		fmt.Sprintf("space policy %d published; running nodes take it at once", p.Serial))
}
