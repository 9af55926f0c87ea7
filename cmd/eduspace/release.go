package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/release"
)

func init() {
	datasetCommands["release"] = runDatasetRelease
	datasetHelp["release"] = "a de-identified (k-anonymous) or DP synthetic release for an agreement's recipient and purpose, with its risk report and data card"
}

// runDatasetRelease asks a running node for a release under an agreement
// (POST /v1/releases, node/release/RELEASES.md), printing its progress
// on stderr and the release (risk report, data card) on stdout or --out;
// with --list or --id, the releases the node made.
func runDatasetRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset release", stderr)
	cf := adminFlags(fs)
	ag := fs.String("agreement", "", "the agreement whose one recipient and purpose the release is for (required)")
	types := fs.String("types", "", "record types to release, comma-separated (default: every type of the agreement)")
	k := fs.Int("k", 0, "k of k-anonymity, at least 2 (default: the node's release.k)")
	dp := fs.Bool("dp", false, "a differentially private synthetic dataset instead of de-identified rows")
	eps := fs.Float64("epsilon", 0, "ε of a --dp release, in (0, 10] (required with --dp); its ρ is debited from the recipient's yearly privacy budget (ρ 0.5 by default, about ε 5.2: `eduspace aggregate budgets`), and a release past it is refused")
	delta := fs.Float64("delta", 0, "δ of a --dp release (default 1e-6)")
	out := fs.String("out", "", "write the release (id, digest, risk report, data card) as JSON to this file rather than stdout")
	list := fs.Bool("list", false, "list the releases this node made")
	id := fs.String("id", "", "show one release this node made")
	recv := fs.Bool("received", false, "list the releases this node received (their manifests: ids, digests, data cards)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	switch {
	case *recv:
		return c.do(ctx, http.MethodGet, "/v1/releases/received", nil, stdout)
	case *list:
		return c.do(ctx, http.MethodGet, "/v1/releases", nil, stdout)
	case *id != "":
		return c.do(ctx, http.MethodGet, "/v1/releases/"+url.PathEscape(*id), nil, stdout)
	case *ag == "":
		return fmt.Errorf("%w: --agreement is required (or --list, --id)", errUsage)
	case *dp && *eps <= 0:
		return fmt.Errorf("%w: --dp needs --epsilon E, E in (0, 10]", errUsage)
	case !*dp && (*eps != 0 || *delta != 0):
		return fmt.Errorf("%w: --epsilon and --delta belong to --dp", errUsage)
	case *k == 1 || *k < 0:
		return fmt.Errorf("%w: --k %d: want at least 2", errUsage, *k)
	}
	req := release.Request{Agreement: *ag, K: *k, DP: *dp, Epsilon: *eps, Delta: *delta}
	if *types != "" {
		req.Types = strings.Split(*types, ",")
	}
	return streamLines(ctx, c, "/v1/releases", req, "release", "an answer", func(l *admin.ReleaseLine) (bool, error) {
		switch {
		case l.Progress != "":
			fmt.Fprintln(stderr, l.Progress)
		case l.Refusal != nil:
			r := l.Refusal
			return true, exitCodeError{code: exitFailure, msg: fmt.Sprintf("refused: %s (rule %s, %s): %s; see node/release/RELEASES.md §3 for what to do",
				r.Reason, r.Rule, r.Clause, r.Detail)}
		case l.Error != "":
			return true, fmt.Errorf("release: %s", l.Error)
		case l.Release != nil:
			if *out != "" {
				if err := writeRelease(*out, l.Release); err != nil {
					return true, fmt.Errorf("--out: %w; the node made release %s: fetch it again with `eduspace dataset release --id %s`",
						err, l.Release.ID, l.Release.ID)
				}
			} else {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(l.Release); err != nil {
					return true, err
				}
			}
			fmt.Fprintf(stderr, "release %s: %d rows to %s (%s), digest %s\n", l.Release.ID, l.Release.Records,
				l.Release.Recipient, l.Release.Method, l.Release.Digest)
			return true, nil
		}
		return false, nil
	})
}

// writeRelease writes rel as indented JSON to the file path, synced and
// closed with both errors checked (a full disk or a failed flush is an
// error, not a silent short file); a file that could not be written
// whole is removed.
func writeRelease(path string, rel *release.Release) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	err = enc.Encode(rel)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if info, serr := os.Stat(path); serr == nil && info.Mode().IsRegular() {
			os.Remove(path)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
