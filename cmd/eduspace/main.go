// Command eduspace runs an eduspace node, the space authority's tools, the
// offline classifier and the demo. `eduspace help` lists the subcommands.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// gcPercent is the garbage collector's target unless GOGC says otherwise:
// a node's live heap is small (records stream through in envelopes of at
// most batch.max_records), so letting the heap grow to 5× it before a
// collection costs tens of megabytes and saves about a tenth of the CPU of
// a busy pipeline (test/PERFORMANCE.md).
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
