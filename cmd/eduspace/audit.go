package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "audit verify (--db FILE | --export FILE) [--authority FILE [--revocations FILE]] [--tsa-cert FILE] [--checkpoints-from FILE ...] | audit export --db FILE --out FILE | audit fetch [--config FILE] --out FILE"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr)
	case "fetch":
		return runAuditFetch(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown audit subcommand %q", errUsage, args[0])
}

// fileList is a repeatable flag of file names.
type fileList []string

func (l *fileList) String() string { return strings.Join(*l, ",") }
func (l *fileList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// mustExist turns a missing input file into a usage error.
func mustExist(flag, path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: %s %s: %v", errUsage, flag, path, errors.Unwrap(err))
	}
	return nil
}

// auditReport is what audit verify found; with --json it is printed as one
// object (version 1).
type auditReport struct {
	Version       int    `json:"version"`
	Node          string `json:"node"`
	Source        string `json:"source"`
	Intact        bool   `json:"intact"`
	Entries       int64  `json:"entries,omitempty"`
	Head          string `json:"head,omitempty"`
	HashAlgorithm string `json:"hash_algorithm,omitempty"` // the chain's: SHA-256, or SM3 in a space on the GM/T suite
	FirstBadEntry int64  `json:"first_bad_entry,omitempty"`
	Reason        string `json:"reason,omitempty"`
	// Gaps are the runs of entries lost in restores from older copies,
	// each declared by a recovery entry (node/evidence/EXPORT.md).
	Gaps        []evidence.Gap    `json:"gaps,omitempty"`
	Checkpoints auditCheckpoints  `json:"checkpoints"`
	Failed      []checkpointFault `json:"failed_checkpoints,omitempty"`
	Anchors     auditAnchors      `json:"anchors"`
}

// auditAnchors is what the checkpoints' RFC 3161 time-stamp tokens show.
type auditAnchors struct {
	// Tokens counts the checked checkpoints that carry a token.
	Tokens int `json:"tokens"`
	// Verified says the tokens were verified under --tsa-cert; without
	// it they are counted only.
	Verified bool `json:"verified"`
	// Anchored lists the checkpoints whose token verified, with the
	// TSA's time, in the order checked.
	Anchored []anchoredCheckpoint `json:"anchored,omitempty"`
}

type anchoredCheckpoint struct {
	Source string    `json:"source"`
	Count  int64     `json:"count"`
	Time   time.Time `json:"time"` // the TSA's genTime
}

type auditCheckpoints struct {
	Checked       int    `json:"checked"`
	Authenticated bool   `json:"authenticated"`
	Authority     string `json:"authority,omitempty"` // the root key id
	Space         string `json:"space,omitempty"`
	// Latest is the largest entry count a checked checkpoint covers.
	Latest int64             `json:"latest"`
	From   []checkpointsFrom `json:"from"`
}

type checkpointsFrom struct {
	Source string `json:"source"`
	Count  int    `json:"count"`
}

type checkpointFault struct {
	Source string `json:"source"`
	Count  int64  `json:"count"`
	Error  string `json:"error"`
}

// runAuditVerify checks an evidence log, from a node database or an export,
// against every checkpoint of its node that it and the --checkpoints-from
// files hold.
func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", stderr)
	dbPath := fs.String("db", "", "the node database (node.db) whose log to verify")
	exportPath := fs.String("export", "", "an export (audit export) to verify instead of a database")
	authPath := fs.String("authority", "", "the space authority's public key (authority.pub.pem): authenticate every checkpoint")
	space := fs.String("space", "", "the space the checkpoints must be signed in (default: the export's, or the one the credentials name)")
	nodeID := fs.String("node", "", "the log's node id (default: from the export header or the entries)")
	revPath := fs.String("revocations", "", "the space's signed revocation list (a node's data_dir/revocations.edrl): refuse checkpoints signed with a key revoked by then (needs --authority)")
	tsaPath := fs.String("tsa-cert", "", "PEM certificate of the TSA, or of its CA: verify the checkpoints' RFC 3161 time-stamp tokens and report their times")
	asJSON := fs.Bool("json", false, "print one JSON object (version 1) instead of the report")
	var from fileList
	fs.Var(&from, "checkpoints-from", "another node's database, or an export, holding checkpoints of this log's node (repeatable)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if (*dbPath == "") == (*exportPath == "") {
		return fmt.Errorf("%w: give exactly one of --db and --export", errUsage)
	}
	if *revPath != "" && *authPath == "" {
		return fmt.Errorf("%w: --revocations needs --authority, which the list is verified against", errUsage)
	}
	for _, f := range []struct{ flag, path string }{{"--db", *dbPath}, {"--export", *exportPath}, {"--authority", *authPath}, {"--revocations", *revPath}, {"--tsa-cert", *tsaPath}} {
		if f.path != "" {
			if err := mustExist(f.flag, f.path); err != nil {
				return err
			}
		}
	}
	for _, p := range from {
		if err := mustExist("--checkpoints-from", p); err != nil {
			return err
		}
	}
	var root crypto.AuthorityPublicKey
	if *authPath != "" {
		var err error
		if root, err = crypto.ReadAuthorityPublicKey(*authPath); err != nil {
			return err
		}
	}

	var tsaCerts []*x509.Certificate
	if *tsaPath != "" {
		data, err := os.ReadFile(*tsaPath)
		if err == nil {
			tsaCerts, err = timestamp.ParseCertificates(data)
		}
		if err != nil {
			return fmt.Errorf("--tsa-cert: %w", err)
		}
	}

	// The log and its own checkpoints.
	var (
		rows    func() (evidence.Rows, func() error)
		own     []evidence.Signed
		header  *evidence.ExportHeader
		rep     = auditReport{Version: 1, Node: *nodeID}
		sources []checkpointSource
	)
	if *dbPath != "" {
		rep.Source = *dbPath
		db, err := store.OpenReadOnly(*dbPath)
		if err != nil {
			return err
		}
		defer db.Close()
		rows = func() (evidence.Rows, func() error) { return evidence.DBRows(ctx, db), func() error { return nil } }
		if rep.Node == "" {
			if rep.Node, err = evidence.FirstNode(evidence.DBRows(ctx, db)); err != nil {
				return err
			}
		}
		if rep.Node != "" {
			if own, err = checkpoint.ReadSigned(ctx, db, rep.Node); err != nil {
				return err
			}
		}
	} else {
		rep.Source = *exportPath
		x, closeFn, err := openExport(*exportPath)
		if err != nil {
			return err
		}
		header = &x.Header
		own, err = x.Checkpoints()
		closeFn()
		if err != nil {
			return err
		}
		if rep.Node == "" {
			rep.Node = header.Node
		} else if rep.Node != header.Node {
			return exitCodeError{exitFailure, fmt.Sprintf("the export is of node %q, not %q", header.Node, rep.Node)}
		}
		rows = func() (evidence.Rows, func() error) {
			x, closeFn, err := openExport(*exportPath)
			if err != nil {
				return func(yield func(evidence.Row, error) bool) { yield(evidence.Row{}, err) }, func() error { return nil }
			}
			return x.Rows(), closeFn
		}
	}
	if rep.Node == "" {
		return exitCodeError{exitFailure, "the log names no node (it is empty, or its first entry is unreadable): pass --node to check it against checkpoints"}
	}
	sources = append(sources, checkpointSource{name: rep.Source, cps: ofNode(own, rep.Node)})

	for _, p := range from {
		cps, err := readCheckpointsFrom(ctx, p, rep.Node)
		if err != nil {
			return err
		}
		sources = append(sources, checkpointSource{name: p, cps: cps})
	}

	// Authenticate, or take the checkpoints as they are.
	var cps []evidence.Checkpoint
	rep.Checkpoints.Authenticated = !root.IsZero()
	rep.Anchors.Verified = tsaCerts != nil
	if rep.Checkpoints.Authenticated {
		rep.Checkpoints.Authority = root.KeyID()
		rep.Checkpoints.Space = *space
		if rep.Checkpoints.Space == "" && header != nil {
			rep.Checkpoints.Space = header.Space
		}
		for _, src := range sources {
			for _, s := range src.cps {
				if rep.Checkpoints.Space == "" {
					rep.Checkpoints.Space = evidence.CredentialSpace(s.Credential)
				}
			}
		}
	}
	var revoked *crypto.RevocationList
	if *revPath != "" {
		data, err := os.ReadFile(*revPath)
		if err != nil {
			return err
		}
		if revoked, err = crypto.ParseRevocationList(data, root, rep.Checkpoints.Space); err != nil {
			return exitCodeError{exitFailure, fmt.Sprintf("revocation list %s: %v", *revPath, err)}
		}
	}
	for _, src := range sources {
		n := 0
		for _, s := range src.cps {
			c := s.Checkpoint()
			if rep.Checkpoints.Authenticated {
				var err error
				if c, err = s.Authenticate(root, rep.Checkpoints.Space); err != nil {
					rep.Failed = append(rep.Failed, checkpointFault{Source: src.name, Count: s.Count, Error: err.Error()})
					continue
				}
				if err := checkpointKeyRevoked(revoked, s); err != nil {
					rep.Failed = append(rep.Failed, checkpointFault{Source: src.name, Count: s.Count, Error: err.Error()})
					continue
				}
			}
			if s.TSAToken != nil {
				rep.Anchors.Tokens++
				if tsaCerts != nil {
					at, err := verifyAnchor(s, tsaCerts)
					if err != nil {
						rep.Failed = append(rep.Failed, checkpointFault{Source: src.name, Count: s.Count, Error: err.Error()})
						continue
					}
					rep.Anchors.Anchored = append(rep.Anchors.Anchored, anchoredCheckpoint{Source: src.name, Count: s.Count, Time: at})
				}
			}
			cps = append(cps, c)
			rep.Checkpoints.Latest = max(rep.Checkpoints.Latest, c.Count)
			n++
		}
		rep.Checkpoints.Checked += n
		rep.Checkpoints.From = append(rep.Checkpoints.From, checkpointsFrom{Source: src.name, Count: n})
	}

	// Walk the chain.
	seq, closeRows := rows()
	head, err := evidence.VerifyCheckpoints(seq, cps)
	if cerr := closeRows(); err == nil && cerr != nil {
		err = cerr
	}
	var be *evidence.BrokenError
	switch {
	case errors.As(err, &be):
		rep.FirstBadEntry, rep.Reason = be.Seq, be.Reason
	case err != nil:
		return err
	case head.Count > 0 && head.Node != rep.Node:
		rep.FirstBadEntry, rep.Reason = 1, fmt.Sprintf("the entries are node %q's, not %q's", head.Node, rep.Node)
	case header != nil && header.Entries != stored(head):
		rep.FirstBadEntry = min(stored(head), header.Entries) + 1
		rep.Reason = fmt.Sprintf("the export's header says %d entries, it holds %d", header.Entries, stored(head))
	default:
		rep.Intact = true
		rep.Entries, rep.Head, rep.HashAlgorithm, rep.Gaps = head.Count, hex.EncodeToString(head.Hash), head.Algorithm, head.Gaps
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printAuditReport(stdout, &rep)
	}
	switch {
	case !rep.Intact:
		return exitCodeError{exitFailure, fmt.Sprintf("first bad entry %d: %s", rep.FirstBadEntry, rep.Reason)}
	case len(rep.Failed) > 0:
		return exitCodeError{exitFailure, fmt.Sprintf("%d checkpoint(s) failed to verify", len(rep.Failed))}
	case rep.Entries > 0 && rep.Checkpoints.Checked == 0:
		// A chain checked against nothing binds the log to no node: it may
		// have been rewritten whole, or renamed to a node with no
		// checkpoints.
		return exitCodeError{exitFailure, "no checkpoint of " + rep.Node + " verified: the chain is consistent, but a log rewritten whole, or renamed, would look the same; give --checkpoints-from a peer's database or export"}
	}
	return nil
}

// verifyAnchor verifies s's time-stamp token under the TSA certificates:
// it must stamp SHA-256 of the signed checkpoint and be signed by the TSA.
// It returns the TSA's time.
func verifyAnchor(s evidence.Signed, trusted []*x509.Certificate) (time.Time, error) {
	tok, err := timestamp.Parse(s.TSAToken)
	if err == nil {
		err = tok.Verify(s.Digest(), trusted)
	}
	if err != nil {
		return time.Time{}, err // it names the time-stamp token
	}
	return tok.Time, nil
}

// checkpointKeyRevoked fails when rl revokes the key that signed s, or s's
// node, at or before the checkpoint's time; rl nil revokes nothing.
func checkpointKeyRevoked(rl *crypto.RevocationList, s evidence.Signed) error {
	if rl == nil {
		return nil
	}
	node, keyID, err := crypto.CheckpointSigner(s.Data)
	if err != nil {
		return err
	}
	if at := time.UnixMilli(s.TimeMS); rl.Revoked(node, keyID, at) {
		return fmt.Errorf("signed with key %s of %s, revoked by then (revocation list %d)", keyID, node, rl.Serial)
	}
	return nil
}

type checkpointSource struct {
	name string
	cps  []evidence.Signed
}

func ofNode(cps []evidence.Signed, node string) []evidence.Signed {
	return slices.DeleteFunc(cps, func(s evidence.Signed) bool { return s.Node != node })
}

func openExport(path string) (*evidence.ExportReader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	x, err := evidence.NewExportReader(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, f.Close, nil
}

// readCheckpointsFrom reads node's checkpoints from a node database or an
// export, told apart by SQLite's file header.
func readCheckpointsFrom(ctx context.Context, path, node string) ([]evidence.Signed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	magic := make([]byte, 16)
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err == nil && bytes.Equal(magic, []byte("SQLite format 3\x00")) {
		db, err := store.OpenReadOnly(path)
		if err != nil {
			return nil, err
		}
		defer db.Close()
		return checkpoint.ReadSigned(ctx, db, node)
	}
	x, closeFn, err := openExport(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	cps, err := x.Checkpoints()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ofNode(cps, node), nil
}

// stored is how many entries a verified chain holds: its count less the
// entries lost in restores.
func stored(h evidence.Head) int64 {
	n := h.Count
	for _, g := range h.Gaps {
		n -= g.To - g.From + 1
	}
	return n
}

func printAuditReport(w io.Writer, r *auditReport) {
	fmt.Fprintf(w, "evidence log of %s (%s)\n", r.Node, r.Source)
	if r.Intact {
		fmt.Fprintf(w, "  entries      %d\n  head         %s\n", r.Entries, r.Head)
		if r.HashAlgorithm != "" {
			fmt.Fprintf(w, "  hash         %s\n", r.HashAlgorithm)
		}
		for _, g := range r.Gaps {
			fmt.Fprintf(w, "  lost         entries %d to %d, with a database restored from an older copy (declared by entry %d, vouched for by the checkpoint of entry %d)\n",
				g.From, g.To, g.To+1, g.To)
		}
	}
	c := r.Checkpoints
	switch {
	case c.Authenticated:
		fmt.Fprintf(w, "  checkpoints  %d checked, authenticated with authority %s in space %q\n", c.Checked, c.Authority, c.Space)
	default:
		fmt.Fprintf(w, "  checkpoints  %d checked, NOT authenticated (no --authority): they are taken as stored\n", c.Checked)
	}
	for _, f := range c.From {
		fmt.Fprintf(w, "               %d from %s\n", f.Count, f.Source)
	}
	a := r.Anchors
	switch {
	case a.Verified && len(a.Anchored) > 0:
		last := a.Anchored[0]
		for _, x := range a.Anchored {
			if x.Count > last.Count || x.Count == last.Count && x.Time.After(last.Time) {
				last = x
			}
		}
		fmt.Fprintf(w, "  trusted time %d checkpoint(s) anchored by time-stamp tokens that verify under --tsa-cert; the latest, at entry %d, at %s\n",
			len(a.Anchored), last.Count, last.Time.UTC().Format(time.RFC3339Nano))
	case a.Verified:
		fmt.Fprintln(w, "  trusted time no checkpoint with a time-stamp token that verifies: the log is unanchored")
	case a.Tokens > 0:
		fmt.Fprintf(w, "  trusted time %d checkpoint(s) carry time-stamp tokens, NOT verified (no --tsa-cert)\n", a.Tokens)
	}
	for _, f := range r.Failed {
		fmt.Fprintf(w, "  FAILED       checkpoint at entry %d from %s: %s\n", f.Count, f.Source, f.Error)
	}
	if r.Intact {
		switch {
		case c.Checked == 0 && r.Entries > 0:
			fmt.Fprintln(w, "  FAILED       no checkpoint: the chain is consistent, but a rewrite of the whole log, or a rename, would not show")
		case c.Latest < r.Entries:
			fmt.Fprintf(w, "  note         entries after %d are chained but not yet covered by a checkpoint\n", c.Latest)
		}
		if len(r.Failed) == 0 && (c.Checked > 0 || r.Entries == 0) {
			fmt.Fprintln(w, "intact")
		} else if len(r.Failed) == 0 {
			fmt.Fprintln(w, "not verified: no checkpoint to hold the chain against")
		} else {
			fmt.Fprintln(w, "chain intact against the checkpoints that verified; some did not")
		}
		return
	}
	fmt.Fprintf(w, "BROKEN: first bad entry %d: %s\n", r.FirstBadEntry, r.Reason)
}

// runAuditExport writes a node database's evidence log and its node's
// checkpoints to a file an auditor can verify offline.
func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export", stderr)
	dbPath := fs.String("db", "", "the node database (node.db) to export (required)")
	out := fs.String("out", "", "the export file to write (required)")
	nodeID := fs.String("node", "", "the log's node id (default: from the entries)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dbPath == "" || *out == "" {
		return fmt.Errorf("%w: --db and --out are required", errUsage)
	}
	if err := mustExist("--db", *dbPath); err != nil {
		return err
	}
	db, err := store.OpenReadOnly(*dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	node := *nodeID
	if node == "" {
		if node, err = evidence.FirstNode(evidence.DBRows(ctx, db)); err != nil {
			return err
		}
		if node == "" {
			return exitCodeError{exitFailure, "the log names no node (it is empty, or its first entry is unreadable): pass --node"}
		}
	}
	if err := crypto.WriteFile(*out, 0o644, func(w io.Writer) error { return checkpoint.Export(ctx, db, node, w) }); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "evidence log of %s exported to %s\n", node, *out)
	return nil
}

// runAuditFetch is `audit export` of a running node, through its admin
// API: the auditor's copy of the log without stopping the node or reading
// its database file. The file is written only when the export is whole
// and reads as one.
func runAuditFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit fetch", stderr)
	cf := adminFlags(fs)
	out := fs.String("out", "", "the export file to write (required); check it with eduspace audit verify --export")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if err := c.export(ctx, "/v1/evidence/export", *out, io.Discard, io.Discard); err != nil {
		return err
	}
	r, closeExport, err := openExport(*out)
	if err != nil {
		os.Remove(*out)
		return fmt.Errorf("%s: the node's answer is not an evidence export (%w); nothing kept", *out, err)
	}
	defer closeExport()
	h := r.Header
	fmt.Fprintf(stdout, "evidence log of %s (%d entries, %d checkpoints) fetched to %s; check it with eduspace audit verify --export %s\n",
		h.Node, h.Entries, h.Checkpoints, *out, *out)
	return nil
}
