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
}

func commands() []command {
	return []command{
		{"demo", "run a whole space in one process and print what happened", runDemo},
		{"node", "node run | init | rotate | backup --config FILE: run and look after a node", runNode},
		{"authority", "authority init --dir D | authority issue ...", runAuthority},
		{"ingest", "send NDJSON records to a running node", runIngest},
		{"agreement", "agreement add | propose | accept | revoke | list: agreements with peers", runAgreement},
		{"share", "share --agreement ID: share records under an agreement", runShare},
		{"consent", "consent grant FILE | consent withdraw --id ID: the consent ledger", runConsent},
		{"subject", "subject report --student ID: every delivery of one student's data", runSubject},
		{"classify", "classify records offline by the grading standard", runClassify},
		{"audit", "audit verify | audit export: check an evidence log", runAudit},
		{"inspect", "inspect FILE: print an envelope's header without opening it", runInspect},
		{"bench", "measure the full pipeline against plain JetStream", runBench},
		{"version", "print the version", runVersion},
	}
}

// Run runs the eduspace command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
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
	fmt.Fprintln(w, "usage: eduspace <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\n`eduspace <command> -h` shows a command's flags.")
}

// newFlags returns a flag set whose parse errors are usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("eduspace "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
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
