package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/recovery"
)

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: node run --config FILE | node init --config FILE | node rotate --config FILE [--switch | --retire] | node rotate-data-key --config FILE [--status] | node backup --config FILE --out FILE | node recover --config FILE", errUsage)
	}
	switch args[0] {
	case "backup":
		return runNodeBackup(ctx, args[1:], stdout, stderr)
	case "recover":
		return runNodeRecover(ctx, args[1:], stdout, stderr)
	case "run":
		return runNodeRun(ctx, args[1:], stdout, stderr)
	case "init":
		return runNodeInit(ctx, args[1:], stdout, stderr)
	case "rotate":
		return runNodeRotate(ctx, args[1:], stdout, stderr)
	case "rotate-data-key":
		return runNodeRotateDataKey(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown node subcommand %q", errUsage, args[0])
}

// runNodeRun runs the daemon until SIGINT or SIGTERM, then shuts down
// cleanly.
func runNodeRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node run", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	cfg, err := loadRequiredConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	n, err := node.Open(ctx, cfg, node.Env{Logger: log})
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return n.Close()
}

// runNodeInit creates a node's keys in its data directory and writes the
// request file the authority issues the credential from.
func runNodeInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node init", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	cfg, err := loadRequiredConfig(*cfgPath)
	if err != nil {
		return err
	}
	suite, err := crypto.ParseSuite(cfg.Suite)
	if err != nil {
		return err
	}
	if _, err := keys.InitKeys(cfg.DataDir, cfg.NodeID, suite); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keys written to %s\nhand %s to the space authority:\n  eduspace authority issue --dir AUTHORITY_DIR --request %s --space %s --role university --institution NAME --out credential.jwt\nthen put credential.jwt in %s\n",
		filepath.Join(cfg.DataDir, "keys"), filepath.Join(cfg.DataDir, keys.RequestFile),
		filepath.Join(cfg.DataDir, keys.RequestFile), cfg.Space, cfg.DataDir)
	return nil
}

// runNodeRotateDataKey asks the running node to rotate its data key
// (node/keys/KEYS.md §1), or with --status reports the rotation's
// progress: the key in use, the keys being retired and the values left to
// re-seal, as JSON.
func runNodeRotateDataKey(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node rotate-data-key", stderr)
	cf := adminFlags(fs)
	status := fs.Bool("status", false, "report the data key and the rotation's progress, rotate nothing")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if *status {
		return c.do(ctx, http.MethodGet, "/v1/data-key", nil, stdout)
	}
	return c.do(ctx, http.MethodPost, "/v1/data-key/rotate", nil, stdout)
}

// runNodeRotate takes one step of a key rotation (node/keys/KEYS.md,
// crypto/CREDENTIALS.md §5): by default it announces next keys, with
// --switch it makes them current, with --retire it drops the old ones from
// the request. Each step writes node-request.json for the authority; the
// node takes the credential issued from it at its next start.
func runNodeRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node rotate", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	sw := fs.Bool("switch", false, "make the keys announced by the last rotate current (step 2)")
	retire := fs.Bool("retire", false, "request the current keys only (step 3), once envelopes sealed to the old ones have expired")
	force := fs.Bool("force", false, "with --retire: retire at once, for old keys the authority revoked")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: --config is required", errUsage)
	}
	if *sw && *retire {
		return fmt.Errorf("%w: --switch and --retire exclude each other", errUsage)
	}
	cfg, err := loadRequiredConfig(*cfgPath)
	if err != nil {
		return err
	}
	step := keys.RotateAnnounce
	switch {
	case *sw:
		step = keys.RotateSwitch
	case *retire:
		step = keys.RotateRetire
	}
	if *force && !*retire {
		return fmt.Errorf("%w: --force goes with --retire", errUsage)
	}
	rot, err := node.RotateKeys(cfg, step, time.Now(), *force)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(struct {
			Version int `json:"version"`
			keys.Rotation
		}{1, rot})
	}
	if rot.Created != 0 {
		fmt.Fprintf(stdout, "key generation %d created in %s\n", rot.Created, filepath.Join(cfg.DataDir, "keys"))
	}
	fmt.Fprintf(stdout, "%s: %s lists key generations %v (current first)\n", rot.Step, rot.Request, rot.Listed)
	fmt.Fprintf(stdout, "have the authority issue a credential from it:\n  eduspace authority issue --dir AUTHORITY_DIR --request %s --space %s --role ROLE --institution NAME --out credential.jwt\nthen put credential.jwt in place and restart the node\n",
		rot.Request, cfg.Space)
	for _, g := range rot.Unlisted {
		fmt.Fprintf(stdout, "generation %d is not in the request: once the new credential is in use and every envelope sealed to it has expired, delete %v\n",
			g, keys.GenerationFiles(cfg.DataDir, g))
	}
	return nil
}

// runNodeBackup writes an online, consistent copy of a node's database and
// its manifest (node.Backup); the node may be running.
func runNodeBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node backup", stderr)
	cfgPath := fs.String("config", "", "the node's YAML config file (required)")
	out := fs.String("out", "", "the backup file to write; must not exist (required)")
	asJSON := fs.Bool("json", false, "print the manifest as JSON")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *cfgPath == "" || *out == "" {
		return fmt.Errorf("%w: --config and --out are required", errUsage)
	}
	cfg, err := node.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	m, err := node.Backup(ctx, cfg, *out, time.Now())
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(m)
	}
	fmt.Fprintf(stdout, "backup of %s written to %s (%d bytes), manifest %s\n", m.Node, *out, m.Bytes, *out+node.ManifestSuffix)
	fmt.Fprintf(stdout, "evidence: %d entries (chain verified), own checkpoint covers %d; %d records held, %d received\n",
		m.Evidence.Count, m.OwnCheckpoint, m.Records, m.Received)
	fmt.Fprintf(stdout, "keep a copy of %s, %s and %s with it: they are the node's identity\n",
		filepath.Join(cfg.DataDir, "keys"), cfg.CredentialPath(), filepath.Join(cfg.DataDir, "admin.token"))
	return nil
}

// runNodeRecover brings a running node restored from an older copy of its
// database back in step with the space (POST /v1/recover,
// node/recovery), printing its progress and what it could not recover.
func runNodeRecover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node recover", stderr)
	cf := adminFlags(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the peers' answers")
	allowMissing := fs.Bool("allow-missing", false, "recover with the answers that came in time when some peer does not answer")
	var peers []string
	fs.Func("peer", "a peer to ask besides those the database names (repeat): one this node exchanged with only after the copy", func(p string) error {
		peers = append(peers, p)
		return nil
	})
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "asking the peers what they hold of this node (waiting up to %s)\n", *timeout)
	req := admin.RecoverRequest{Timeout: timeout.String(), AllowMissing: *allowMissing, Peers: peers}
	return streamLines(ctx, c, "/v1/recover", req, "recovery", "a report", func(l *admin.RecoverLine) (bool, error) {
		if l.Progress != "" {
			fmt.Fprintln(stderr, l.Progress)
		}
		if l.Report != nil && l.Error == "" {
			if *asJSON {
				return true, json.NewEncoder(stdout).Encode(l.Report)
			}
			printRecovery(stdout, l.Report)
			return true, nil
		}
		if l.Error != "" {
			if l.Report != nil && len(l.Report.Missing) > 0 {
				fmt.Fprintf(stderr, "no answer from: %s\n", strings.Join(l.Report.Missing, ", "))
			}
			return true, fmt.Errorf("recovery: %s", l.Error)
		}
		return false, nil
	})
}

// printRecovery prints a recovery's report for an operator.
func printRecovery(w io.Writer, r *recovery.Report) {
	fmt.Fprintf(w, "recovered: sending again\n")
	if r.EvidenceLost.To > 0 {
		fmt.Fprintf(w, "evidence: entries %d to %d lost with the copy; the log goes on after the space's checkpoint of entry %d\n",
			r.EvidenceLost.From, r.EvidenceLost.To, r.EvidenceLost.To)
	} else {
		fmt.Fprintf(w, "evidence: no entry the space attests was lost; entries written after the newest checkpoint and before the loss are gone unattested\n")
	}
	for _, p := range r.Peers {
		fmt.Fprintf(w, "%s: holds up to sequence %d; %d envelopes confirmed, %d sent again, %d to share again (it holds others under their numbers); "+
			"%d envelopes (%d records) it holds were sent after the copy; it sent %d envelopes again (%d expired); %d erasures carried out since the copy\n",
			p.Peer, p.Last, p.Confirmed, p.Resent, p.Replayed, p.LostEnvelopes, p.LostRecords, p.Republished.Envelopes, p.Republished.Expired, p.Erasures)
		if len(p.MissingAgreements) > 0 {
			fmt.Fprintf(w, "%s: agreements in force it holds that the copy does not (install them again): %s\n",
				p.Peer, strings.Join(p.MissingAgreements, ", "))
		}
	}
	fmt.Fprintf(w, "consents withdrawn again: %d\n", r.ConsentsWithdrawn)
	u := r.Unrecoverable
	fmt.Fprintf(w, "not recoverable: %d evidence entries; %d envelopes (%d records) sent after the copy, not recorded here; "+
		"%d envelopes received after the copy and expired; %d withdrawals of consents the copy does not hold; %d agreements to install again; %d peers silent; "+
		"%d erasure requests in answers that this node did not make (ignored)\n",
		u.EvidenceEntries, u.SentEnvelopes, u.SentRecords, u.ExpiredEnvelopes, u.UnknownConsents, u.MissingAgreements, u.SilentPeers, u.ForeignErasures)
}

// loadRequiredConfig loads the config file a command's --config names,
// which it cannot do without.
func loadRequiredConfig(path string) (node.Config, error) {
	if path == "" {
		return node.Config{}, fmt.Errorf("%w: --config is required", errUsage)
	}
	return node.LoadConfig(path)
}
