package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
)

func runAuthority(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: authority init --dir D [--suite S] | authority issue --dir D --request FILE ... | authority revoke --dir D --space S --node ID ... | authority publish-revocations ... | authority space-policy --dir D --space S --min-suite SUITE ... | authority nats-config ... | authority nats-setup ...", errUsage)
	}
	switch args[0] {
	case "linkage-evaluator":
		return runAuthorityLinkage(ctx, args[1:], stdout, stderr) // linkage.go
	case "init":
		fs := newFlags("authority init", stderr)
		dir := fs.String("dir", "", "directory for the root key pair (required)")
		suite := fs.String("suite", crypto.DefaultSuite.String(), "the space's suite; "+crypto.SuiteSM2.String()+" adds an SM2 root key that signs credentials")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		if *dir == "" {
			return fmt.Errorf("%w: --dir is required", errUsage)
		}
		s, err := crypto.ParseSuite(*suite)
		if err != nil {
			return fmt.Errorf("%w: --suite: %v", errUsage, err)
		}
		pub, err := authority.InitFor(*dir, s)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "root key %s written; give %s to every node (authority_public_key)\n",
			pub.KeyID(), filepath.Join(*dir, authority.PublicKeyFile))
		return nil
	case "issue":
		fs := newFlags("authority issue", stderr)
		dir := fs.String("dir", "", "the authority directory (required)")
		req := fs.String("request", "", "the node's node-request.json (required)")
		space := fs.String("space", "", "the space name (required)")
		role := fs.String("role", "university", "member role: university, center, auditor or ai_service")
		inst := fs.String("institution", "", "the member institution's name (required)")
		valid := fs.Duration("valid", 365*24*time.Hour, "how long the credential is valid")
		out := fs.String("out", "", "file to write the credential (JWT) to (required)")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		for name, v := range map[string]string{"--dir": *dir, "--request": *req, "--space": *space, "--institution": *inst, "--out": *out} {
			if v == "" {
				return fmt.Errorf("%w: %s is required", errUsage, name)
			}
		}
		if !crypto.Role(*role).Valid() {
			return fmt.Errorf("%w: --role %q: use university, center, auditor or ai_service", errUsage, *role)
		}
		k, err := authority.Load(*dir)
		if err != nil {
			return err
		}
		tok, err := authority.Issue(k, *req, authority.Member{Space: *space, Institution: *inst,
			Role: crypto.Role(*role), Valid: *valid}, time.Now())
		if err != nil {
			return err
		}
		if err := crypto.WriteFileBytes(*out, []byte(tok+"\n"), 0o644); err != nil {
			return fmt.Errorf("write credential: %w", err)
		}
		fmt.Fprintf(stdout, "credential written to %s\n", *out)
		return nil
	case "revoke":
		return runRevoke(ctx, args[1:], stdout, stderr)
	case "publish-revocations":
		return runPublishRevocations(ctx, args[1:], stdout, stderr)
	case "nats-config":
		return runNATSConfig(ctx, args[1:], stdout, stderr)
	case "nats-setup":
		return runNATSSetup(ctx, args[1:], stdout, stderr)
	case "space-policy":
		return runSpacePolicy(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown authority subcommand %q", errUsage, args[0])
}

// runNATSConfig writes a stock nats-server configuration with one nkey user
// per member, each allowed to publish only as itself and to read only its
// own deliveries.
func runNATSConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority nats-config", stderr)
	dir := fs.String("dir", "", "the authority directory; nkey seeds are kept in DIR/nats (required)")
	space := fs.String("space", "", "the space name (required)")
	members := fs.String("members", "", "comma-separated node ids of the members (required)")
	auditors := fs.String("auditors", "", "comma-separated node ids of the auditors: they read checkpoints, the registry and the revocation list, never an envelope")
	listen := fs.String("listen", "0.0.0.0:4222", "the server's client address")
	store := fs.String("store", "/var/lib/nats", "the server's JetStream store directory")
	out := fs.String("out", "", "write the configuration here instead of standard output")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || *space == "" || *members == "" {
		return fmt.Errorf("%w: --dir, --space and --members are required", errUsage)
	}
	var auds []string
	if *auditors != "" {
		auds = strings.Split(*auditors, ",")
	}
	conf, err := authority.NATSConfig(*dir, *space, strings.Split(*members, ","), auds, *listen, *store)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = io.WriteString(stdout, conf)
		return err
	}
	if err := crypto.WriteFileBytes(*out, []byte(conf), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "nats-server configuration written to %s\nnkey seeds in %s: give each member its own <node>.nk (node config nats.credentials)\n",
		*out, filepath.Dir(authority.NATSSeedPath(*dir, "x")))
	return nil
}

// runNATSSetup creates the space's stream and registry bucket as the
// operator, on a server whose members may not create them.
func runNATSSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority nats-setup", stderr)
	url := fs.String("url", "", "the NATS server URL (required)")
	creds := fs.String("credentials", "", "the operator's nkey seed file (DIR/nats/operator.nk)")
	space := fs.String("space", "", "the space name (required)")
	replicas := fs.Int("replicas", 1, "copies of the streams and buckets (3 on a hub cluster)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *url == "" || *space == "" {
		return fmt.Errorf("%w: --url and --space are required", errUsage)
	}
	if *replicas < 1 || *replicas > 5 {
		return fmt.Errorf("%w: --replicas must be 1 to 5", errUsage)
	}
	l := bus.Layout{Space: *space, Replicas: *replicas}
	js, closeNATS, err := operatorJetStream(*url, *creds)
	if err != nil {
		return err
	}
	defer closeNATS()
	if _, err := bus.Ensure(ctx, js, l); err != nil {
		return err
	}
	if err := bus.Update(ctx, js, l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "streams %s, %s and buckets %s, %s ready\n", l.ExchangeStream(), l.AuditStream(), l.RegistryBucket(), l.RevocationBucket())
	return nil
}

// runRevoke adds a node, or one of its keys, to the space's revocation
// list, signs the list with the next serial, keeps it in the authority
// directory, and writes it to a file or publishes it on the space.
func runRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority revoke", stderr)
	dir := fs.String("dir", "", "the authority directory (required)")
	space := fs.String("space", "", "the space name (required)")
	nodeID := fs.String("node", "", "the node id to revoke (required)")
	keyID := fs.String("key", "", "revoke only this key id (k-…, s-… or c-…) of the node; default the whole node")
	reason := fs.String("reason", "", "why, kept in the signed list (no personal data)")
	at := fs.String("at", "", "revoked from this time on (RFC 3339, e.g. the time of compromise); default now")
	out := fs.String("out", "", "write the signed list to this file")
	url := fs.String("url", "", "publish the signed list on the space through this NATS server")
	creds := fs.String("credentials", "", "the operator's nkey seed file (DIR/nats/operator.nk), with --url")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || *space == "" || *nodeID == "" {
		return fmt.Errorf("%w: --dir, --space and --node are required", errUsage)
	}
	if *out == "" && *url == "" {
		return fmt.Errorf("%w: give --out FILE, --url URL, or both", errUsage)
	}
	now := time.Now()
	from := now
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return fmt.Errorf("%w: --at: %v", errUsage, err)
		}
		from = t
	}
	k, err := authority.Load(*dir)
	if err != nil {
		return err
	}
	rl, data, err := authority.Revoke(k, *dir, *space, crypto.Revocation{NodeID: *nodeID, KeyID: *keyID, Revoked: from, Reason: *reason}, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revocation list %d signed (%d entries), kept in %s\n", rl.Serial, len(rl.Entries), authority.RevocationListPath(*dir, *space))
	return emitRevocations(ctx, *space, data, rl.Serial, *out, *url, *creds, stdout)
}

// runPublishRevocations publishes the last list the authority signed, for
// a space set up after the list was made or a bucket that lost it.
func runPublishRevocations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority publish-revocations", stderr)
	dir := fs.String("dir", "", "the authority directory (required)")
	space := fs.String("space", "", "the space name (required)")
	out := fs.String("out", "", "write the signed list to this file")
	url := fs.String("url", "", "publish the signed list on the space through this NATS server")
	creds := fs.String("credentials", "", "the operator's nkey seed file (DIR/nats/operator.nk), with --url")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || *space == "" || (*out == "" && *url == "") {
		return fmt.Errorf("%w: --dir and --space, and --out or --url, are required", errUsage)
	}
	rl, data, err := authority.RevocationList(*dir, *space)
	if err != nil {
		return err
	}
	if rl == nil {
		return fmt.Errorf("no revocation list for space %s in %s: nothing revoked yet", *space, *dir)
	}
	return emitRevocations(ctx, *space, data, rl.Serial, *out, *url, *creds, stdout)
}

func emitRevocations(ctx context.Context, space string, data []byte, serial uint64, out, url, creds string, stdout io.Writer) error {
	if out != "" {
		if err := crypto.WriteFileBytes(out, data, 0o644); err != nil {
			return fmt.Errorf("write revocation list: %w", err)
		}
		fmt.Fprintf(stdout, "revocation list %d written to %s\n", serial, out)
	}
	if url == "" {
		return nil
	}
	js, closeNATS, err := operatorJetStream(url, creds)
	if err != nil {
		return err
	}
	defer closeNATS()
	if err := authority.PublishRevocations(ctx, js, space, data); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revocation list %d published in bucket %s\n", serial, bus.Layout{Space: space}.RevocationBucket())
	return nil
}

// runSpacePolicy signs the space's policy (the weakest suite envelopes may
// be sealed with), keeps it in the authority directory, and writes it to a
// file or publishes it on the space, where nodes read it when they start.
func runSpacePolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("authority space-policy", stderr)
	dir := fs.String("dir", "", "the authority directory (required)")
	space := fs.String("space", "", "the space name (required)")
	minSuite := fs.String("min-suite", "", "the weakest suite nodes may seal or open, e.g. "+crypto.SuiteXWing.String()+
		"; "+crypto.SuiteSM2.String()+" puts the space on the GM/T suite alone (required)")
	out := fs.String("out", "", "write the signed policy to this file")
	url := fs.String("url", "", "publish the signed policy on the space through this NATS server")
	creds := fs.String("credentials", "", "the operator's nkey seed file (DIR/nats/operator.nk), with --url")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" || *space == "" || *minSuite == "" || (*out == "" && *url == "") {
		return fmt.Errorf("%w: --dir, --space and --min-suite, and --out or --url, are required", errUsage)
	}
	suite, err := crypto.ParseSuite(*minSuite)
	if err != nil {
		return fmt.Errorf("%w: --min-suite: %v", errUsage, err)
	}
	k, err := authority.Load(*dir)
	if err != nil {
		return err
	}
	p, data, err := authority.SetSpacePolicy(k, *dir, *space, suite, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "space policy %d signed (minimum suite %s), kept in %s\n", p.Serial, p.MinSuite, authority.SpacePolicyPath(*dir, *space))
	published := fmt.Sprintf("space policy %d published in bucket %s; running nodes take it at once, others when they start", p.Serial, bus.Layout{Space: *space}.RevocationBucket())
	return deliverSpacePolicy(ctx, stdout, p, data, *space, *out, *url, *creds, published)
}

// deliverSpacePolicy writes the signed space policy p, data, to the file
// out and publishes it on the space through the NATS server url as the
// operator (creds), each where it is given, saying so on stdout;
// published is what it says once the policy is published.
func deliverSpacePolicy(ctx context.Context, stdout io.Writer, p *crypto.SpacePolicy, data []byte, space, out, url, creds, published string) error {
	if out != "" {
		if err := crypto.WriteFileBytes(out, data, 0o644); err != nil {
			return fmt.Errorf("write space policy: %w", err)
		}
		fmt.Fprintf(stdout, "space policy %d written to %s\n", p.Serial, out)
	}
	if url == "" {
		return nil
	}
	js, closeNATS, err := operatorJetStream(url, creds)
	if err != nil {
		return err
	}
	defer closeNATS()
	if err := authority.PublishSpacePolicy(ctx, js, space, data); err != nil {
		return err
	}
	fmt.Fprintln(stdout, published)
	return nil
}

// operatorJetStream connects to the space's NATS server as the operator
// (creds, the operator's nkey seed file) and returns its JetStream context
// and what closes the connection.
func operatorJetStream(url, creds string) (jetstream.JetStream, func(), error) {
	nc, err := bus.Connect(bus.ConnectOptions{Name: "eduspace-operator", URL: url, Credentials: creds})
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}
