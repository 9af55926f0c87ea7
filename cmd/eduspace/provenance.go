package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/eduspace/eduspace/node/release"
)

// runProvenance is `eduspace provenance declare|list`: on an ai_service
// node, which releases fed which model version (node/release/RELEASES.md
// §9).
func runProvenance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: eduspace provenance declare|list [flags]", errUsage)
	}
	switch args[0] {
	case "declare":
		return runProvenanceDeclare(ctx, args[1:], stdout, stderr)
	case "list":
		return runRequest(ctx, "provenance list", args[1:], stdout, stderr, http.MethodGet, "/v1/provenance")
	}
	return fmt.Errorf("%w: unknown subcommand %q: eduspace provenance declare|list", errUsage, args[0])
}

func runProvenanceDeclare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("provenance declare", stderr)
	cf := adminFlags(fs)
	model := fs.String("model", "", "the model's name (required)")
	version := fs.String("version", "", "the model's version (required)")
	releases := fs.String("release", "", "the ids of the releases that fed it, comma-separated (required; `eduspace dataset release --received` lists them)")
	use := fs.String("use", release.UseTraining, "training or evaluation")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *model == "" || *version == "" || *releases == "" {
		return fmt.Errorf("%w: --model, --version and --release are required", errUsage)
	}
	if *use != release.UseTraining && *use != release.UseEvaluation {
		return fmt.Errorf("%w: --use %q: want training or evaluation", errUsage, *use)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	body, err := json.Marshal(release.DeclareRequest{Model: *model, Version: *version, Releases: strings.Split(*releases, ","), Use: *use})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/provenance", bytes.NewReader(body), stdout)
}
