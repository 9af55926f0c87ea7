package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (or found a broken log, an invalid record)
	exitUsage   = 2 // the command line was wrong
)

// errUsage marks an error in the command line.
var errUsage = errors.New("usage")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	// subs are a group's subcommands (`eduspace node run`); none for a
	// command that takes flags itself.
	subs []subcommand
}

// subcommand is one subcommand of a group, for the help.
type subcommand struct{ name, summary string }

func commands() []command {
	return []command{
		{name: "demo", summary: "run a whole space in one process and print what happened", run: runDemo},
		{name: "node", summary: "run and look after a node", run: runNode, subs: []subcommand{
			{"run", "run the node daemon until SIGTERM"},
			{"init", "create the node's keys and the request for its credential"},
			{"rotate", "rotate the node's keys, one step at a time"},
			{"rotate-data-key", "rotate the key records are sealed under at rest; re-seal in the background"},
			{"backup", "write an online, consistent copy of the node's database"},
			{"recover", "bring a node restored from an older copy back in step with the space"},
		}},
		{name: "authority", summary: "the space authority: credentials, revocations, policy, NATS", run: runAuthority, subs: []subcommand{
			{"init", "create the authority's root key pair"},
			{"issue", "issue a member credential from a node's request"},
			{"revoke", "revoke a member or one of its keys"},
			{"publish-revocations", "publish the signed revocation list on the space"},
			{"space-policy", "sign and publish the space policy (minimum suite)"},
			{"linkage-evaluator", "sign and publish the space policy naming the linkage evaluator and its key"},
			{"nats-config", "generate the NATS server configuration for the members"},
			{"nats-setup", "create or update the space's streams and buckets, as the operator"},
		}},
		{name: "ingest", summary: "send records (NDJSON, CSV, Ed-Fi XML, xAPI statements; UTF-8 or GBK) to a running node", run: runIngest},
		{name: "agreement", summary: "agreements with peers", run: runAgreement, subs: []subcommand{
			{"add", "add an agreement both parties signed off"},
			{"propose", "propose an agreement to its other party"},
			{"accept", "accept an agreement a peer proposed"},
			{"revoke", "revoke an agreement, or withdraw or decline a proposal"},
			{"list", "list the node's agreements"},
		}},
		{name: "share", summary: "share records under an agreement", run: runShare},
		{name: "held", summary: "the records the node holds of one type, as ingest stored them (NDJSON)", run: runHeld},
		{name: "received", summary: "what the node received: list it, export it under its agreement", run: runReceived, subs: []subcommand{
			{"list", "what was received, by agreement and record type: counts, last arrival"},
			{"export", "export the records received under an agreement (NDJSON or CSV), with evidence"},
		}},
		{name: "status", summary: "a running node's state on one screen", run: runStatus},
		{name: "consent", summary: "the consent ledger", run: runConsent, subs: []subcommand{
			{"grant", "record a consent"},
			{"withdraw", "withdraw a consent: drop what is queued, ask recipients to erase"},
			{"list", "list the consent ledger, a page at a time"},
			{"show", "show one consent record"},
		}},
		{name: "subject", summary: "what the node did with one student's data", run: runSubject, subs: []subcommand{
			{"report", "every delivery of one student's data, with its erasure state; at a recipient, every export of it"},
		}},
		{name: "aggregate", summary: "the center's aggregate queries, their rounds and releases; privacy budgets", run: runAggregate, subs: []subcommand{
			{"query", "submit, list, get or cancel the center's queries"},
			{"rounds", "recent rounds: state, participants, who declined and why, cells released and suppressed, ρ spent"},
			{"releases", "the released aggregates, or one with its cells (--id, --csv)"},
			{"budgets", "this node's privacy budgets per recipient and population of persons, spent per year"},
		}},
		{name: "dataset", summary: "the space's catalogue of offered datasets, this node's offers, and governed releases", run: runDataset, subs: datasetSubs()},
		{name: "provenance", summary: "an AI service's record of which releases fed which model version", run: runProvenance, subs: []subcommand{
			{"declare", "declare that releases fed a model version; each release's provider is told, signed"},
			{"list", "the declarations this node made, or received for its releases"},
		}},
		{name: "linkage", summary: "pseudonymous linkage: per-purpose, per-epoch pseudonyms of the students held, through the space's evaluator", run: runLinkage, subs: linkageSubs},
		{name: "classify", summary: "classify records offline by the grading standard", run: runClassify},
		{name: "audit", summary: "check an evidence log", run: runAudit, subs: []subcommand{
			{"verify", "verify an evidence chain against its checkpoints"},
			{"export", "export a node's evidence log for an auditor"},
			{"fetch", "export a running node's evidence log through its admin API"},
		}},
		{name: "inspect", summary: "print an envelope's header without opening it", run: runInspect},
		{name: "bench", summary: "measure the full pipeline against plain JetStream", run: runBench},
		{name: "version", summary: "print the version", run: runVersion},
	}
}

// examples are one command line each command and subcommand is typically
// run with, shown by -h.
var examples = map[string]string{
	"demo":                          "eduspace demo",
	"node run":                      "eduspace node run --config /etc/eduspace/node.yaml",
	"node init":                     "eduspace node init --config /etc/eduspace/node.yaml",
	"node rotate":                   "eduspace node rotate --config /etc/eduspace/node.yaml",
	"node rotate-data-key":          "eduspace node rotate-data-key --config /etc/eduspace/node.yaml   (then --status until no key is retiring)",
	"node backup":                   "eduspace node backup --config /etc/eduspace/node.yaml --out /backup/node-2026-12-04.db",
	"node recover":                  "eduspace node recover --config /etc/eduspace/node.yaml",
	"authority init":                "eduspace authority init --dir /srv/authority",
	"authority issue":               "eduspace authority issue --dir /srv/authority --request node-request.json --space beijing-edu --institution \"Example University\" --out credential.jwt",
	"authority revoke":              "eduspace authority revoke --dir /srv/authority --space beijing-edu --node uni-x",
	"authority publish-revocations": "eduspace authority publish-revocations --dir /srv/authority --space beijing-edu --url nats://hub-1:4222 --credentials /srv/authority/nats/operator.nk",
	"authority space-policy":        "eduspace authority space-policy --dir /srv/authority --space beijing-edu --min-suite xwing-sha256-aes128gcm",
	"authority nats-config":         "eduspace authority nats-config --dir /srv/authority --space beijing-edu --members uni-a,uni-b,center --out generated.conf",
	"authority nats-setup":          "eduspace authority nats-setup --url nats://hub-1:4222 --credentials /srv/authority/nats/operator.nk --space beijing-edu",
	"ingest":                        "eduspace ingest --config /etc/eduspace/node.yaml --type student --encoding gb18030 students.csv",
	"agreement add":                 "eduspace agreement add --token-file /var/lib/eduspace/admin.token agreement.json",
	"agreement propose":             "eduspace agreement propose --token-file /var/lib/eduspace/admin.token agreement.json",
	"agreement accept":              "eduspace agreement accept --token-file /var/lib/eduspace/admin.token --id credit-2026",
	"agreement revoke":              "eduspace agreement revoke --token-file /var/lib/eduspace/admin.token --id credit-2026",
	"agreement list":                "eduspace agreement list --token-file /var/lib/eduspace/admin.token",
	"share": "eduspace share --config /etc/eduspace/node.yaml --agreement credit-2026   (the records the node holds)\n" +
		"  eduspace share --config /etc/eduspace/node.yaml --agreement feed-2026 --type course_grade grades.csv   (records streamed through, not held)",
	"held":               "eduspace held --config /etc/eduspace/node.yaml --type student --out held-students.ndjson",
	"received list":      "eduspace received list --config /etc/eduspace/node.yaml",
	"received export":    "eduspace received export --config /etc/eduspace/node.yaml --agreement credit-2026 --type course_grade --format csv --out grades.csv",
	"status":             "eduspace status --config /etc/eduspace/node.yaml",
	"consent grant":      "eduspace consent grant --token-file /var/lib/eduspace/admin.token consent.json",
	"consent withdraw":   "eduspace consent withdraw --token-file /var/lib/eduspace/admin.token --id c-0001-study-2026",
	"consent list":       "eduspace consent list --config node.yaml --purpose research",
	"consent show":       "eduspace consent show --config node.yaml --id c-0001-study-2026",
	"subject report":     "eduspace subject report --token-file /var/lib/eduspace/admin.token --student 2024001",
	"aggregate query":    "eduspace aggregate query submit --config node.yaml query.json",
	"aggregate rounds":   "eduspace aggregate rounds --config node.yaml",
	"aggregate releases": "eduspace aggregate releases --config node.yaml --id gender-2026-r1 --csv",
	"aggregate budgets":  "eduspace aggregate budgets --config node.yaml",
	"dataset release":    "eduspace dataset release --config node.yaml --agreement la-2026 --k 5 --out release.json   (or --dp --epsilon 1)",
	"provenance declare": "eduspace provenance declare --config ai.yaml --model tutor --version 1.0 --release rel-3f2a9c0d1e4b5a6f --use training",
	"provenance list":    "eduspace provenance list --config ai.yaml",
	"classify":           "eduspace classify --type student students.csv",
	"audit verify":       "eduspace audit verify --db /backup/node.db --authority authority.pub.pem",
	"audit export":       "eduspace audit export --db /var/lib/eduspace/node.db --out evidence.ndjson",
	"audit fetch":        "eduspace audit fetch --config /etc/eduspace/node.yaml --out uni-a.evidence.jsonl",
	"inspect":            "eduspace inspect envelope.bin",
	"bench":              "eduspace bench --json",
	"version":            "eduspace version",
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

// groupUsage prints a group's subcommands.
func groupUsage(w io.Writer, c command) {
	fmt.Fprintf(w, "usage: eduspace %s <subcommand> [flags]\n\n%s.\n\nsubcommands:\n", c.name, c.summary)
	for _, sc := range c.subs {
		fmt.Fprintf(w, "  %-20s %s\n", sc.name, sc.summary)
	}
	fmt.Fprintf(w, "\nexample:\n  %s\n\n`eduspace %s <subcommand> -h` shows a subcommand's flags.\n", examples[c.name+" "+c.subs[0].name], c.name)
}

// Run runs the eduspace command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && args[0] == "help" {
		args = append(args[1:], "-h") // eduspace help node run = eduspace node run -h
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		if len(c.subs) > 0 && (len(args) == 1 || isHelp(args[1])) {
			groupUsage(stderr, c)
			if len(args) == 1 {
				return exitUsage
			}
			return exitOK
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		var ec exitCodeError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "eduspace %s: %v\n", c.name, err)
			return exitUsage
		case errors.As(err, &ec):
			if ec.msg != "" {
				fmt.Fprintf(stderr, "eduspace %s: %s\n", c.name, ec.msg)
			}
			return ec.code
		default:
			fmt.Fprintf(stderr, "eduspace %s: %v\n", c.name, err)
			return exitFailure
		}
	}
	fmt.Fprintf(stderr, "eduspace: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

// exitCodeError ends a command with a chosen exit code.
type exitCodeError struct {
	code int
	msg  string
}

func (e exitCodeError) Error() string { return e.msg }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: eduspace <command> [subcommand] [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
		for _, sc := range c.subs {
			fmt.Fprintf(w, "    %-21s %s\n", sc.name, sc.summary)
		}
	}
	fmt.Fprintln(w, "\n`eduspace <command> [subcommand] -h` shows its flags and an example; `eduspace help <command>` the same.")
}

// newFlags returns a flag set whose parse errors are usage errors and
// whose -h shows the flags and an example.
// operands are what a command takes after its flags, for its usage line.
var operands = map[string]string{
	"ingest":            " FILE|-",
	"share":             " [FILE|-]",
	"agreement add":     " FILE.json",
	"agreement propose": " FILE.json",
	"consent grant":     " FILE.json",
	"inspect":           " FILE",
	"dataset show":      " [ID]",
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("eduspace "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: eduspace %s [flags]%s\n", name, operands[name])
		has := false
		fs.VisitAll(func(*flag.Flag) { has = true })
		if has {
			fmt.Fprint(stderr, "\nflags:\n")
			fs.PrintDefaults()
		}
		if ex := examples[name]; ex != "" {
			fmt.Fprintf(stderr, "\nexample:\n  %s\n", ex)
		}
	}
	return fs
}

// parse parses args, turning flag errors into usage errors and refusing
// stray positional arguments unless allowArgs.
func parse(fs *flag.FlagSet, args []string, allowArgs bool) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if !allowArgs && fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
