package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/catalogue"
)

// datasetHelp is each dataset subcommand's one-line summary for the help.
var datasetHelp = map[string]string{
	"list":     "the space's catalogue: datasets this node and the members offer",
	"show":     "one dataset whole: fields and levels, noised rows, purposes, licence, contact",
	"offer":    "offer a dataset from a JSON file (CATALOGUE.md §1), or replace its offer",
	"withdraw": "withdraw one of this node's offers",
	"publish":  "send this node's catalogue to the space's members now",
}

// datasetCommands are the `eduspace dataset` subcommands; other files add
// theirs in their init() (the release command file adds "release", and
// its line in datasetHelp).
var datasetCommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"list":     runDatasetList,
	"show":     runDatasetShow,
	"offer":    runDatasetOffer,
	"withdraw": runDatasetWithdraw,
	"publish":  runDatasetPublish,
}

func init() {
	examples["dataset list"] = "eduspace dataset list --config /etc/eduspace/node.yaml"
	examples["dataset show"] = "eduspace dataset show learning-analytics-2026 --config /etc/eduspace/node.yaml"
	examples["dataset offer"] = "eduspace dataset offer --config /etc/eduspace/node.yaml --file dataset.json"
	examples["dataset withdraw"] = "eduspace dataset withdraw --config /etc/eduspace/node.yaml --id learning-analytics-2026"
	examples["dataset publish"] = "eduspace dataset publish --config /etc/eduspace/node.yaml"
}

// datasetSubs are the dataset subcommands for the help, sorted, list
// first.
func datasetSubs() []subcommand {
	subs := []subcommand{{"list", datasetHelp["list"]}}
	for _, n := range slices.Sorted(maps.Keys(datasetCommands)) {
		if n != "list" {
			subs = append(subs, subcommand{n, cmp.Or(datasetHelp[n], "see `eduspace dataset "+n+" -h`")})
		}
	}
	return subs
}

// runDataset dispatches `eduspace dataset SUB`.
func runDataset(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var names []string
	for _, s := range datasetSubs() {
		names = append(names, s.name)
	}
	use := "dataset " + strings.Join(names, "|") + " [flags]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	if run, ok := datasetCommands[args[0]]; ok {
		return run(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("%w: unknown subcommand %q: %s", errUsage, args[0], use)
}

func runDatasetList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset list", stderr)
	cf := adminFlags(fs)
	asJSON := fs.Bool("json", false, "print the versioned JSON answer ({\"version\":1,\"datasets\":[…]}) instead of a table")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	data, err := c.fetch(ctx, http.MethodGet, "/v1/datasets", nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, data)
	}
	var list admin.DatasetList
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("the node's answer to GET /v1/datasets: %w", err)
	}
	if len(list.Datasets) == 0 {
		fmt.Fprintln(stdout, "no datasets offered in the space yet (`eduspace dataset offer --file F` offers one of this node's)")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PUBLISHER\tID\tTITLE\tLEVEL\tROWS≈\tPURPOSES\tRECORD TYPES")
	for _, e := range list.Datasets {
		pub := e.Publisher
		if e.Own {
			pub += " (this node)"
		}
		purposes := make([]string, len(e.Purposes))
		for i, p := range e.Purposes {
			purposes[i] = string(p)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", pub, e.ID, e.Title, e.Level, e.Rows.Noised,
			strings.Join(purposes, ","), strings.Join(e.RecordTypes, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nROWS≈ are differentially private counts (discrete Gaussian noise, drawn once a day): `eduspace dataset show ID` says how.")
	return nil
}

func runDatasetShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset show", stderr)
	cf := adminFlags(fs)
	id := fs.String("id", "", "the dataset's id (or give it as the first argument)")
	publisher := fs.String("publisher", "", "the member that offers it, when several offer the same id")
	asJSON := fs.Bool("json", false, "print the dataset as JSON")
	// The id may come first (`dataset show ID --json`) or last.
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := parse(fs, args, arg == ""); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(1))
	}
	if fs.NArg() == 1 {
		arg = fs.Arg(0)
	}
	if arg != "" {
		if *id != "" {
			return fmt.Errorf("%w: give the id once, as an argument or with --id", errUsage)
		}
		*id = arg
	}
	if *id == "" {
		return fmt.Errorf("%w: dataset show ID [--publisher NODE] [--json]: which dataset? `eduspace dataset list` lists them", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path := "/v1/datasets/" + url.PathEscape(*id)
	if *publisher != "" {
		path += "?" + url.Values{"publisher": {*publisher}}.Encode()
	}
	data, err := c.fetch(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, data)
	}
	var e catalogue.Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return fmt.Errorf("the node's answer to GET %s: %w", path, err)
	}
	return printDataset(stdout, e)
}

// printDataset writes a dataset for people.
func printDataset(w io.Writer, e catalogue.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	pub := e.Publisher
	if e.Institution != "" {
		pub += " (" + e.Institution + ")"
	}
	if e.Own {
		pub += ", this node"
	}
	purposes := make([]string, len(e.Purposes))
	for i, p := range e.Purposes {
		purposes[i] = string(p)
	}
	for _, kv := range [][2]string{
		{"id", e.ID}, {"title", e.Title}, {"publisher", pub}, {"description", e.Description},
		{"record types", strings.Join(e.RecordTypes, ", ")}, {"level", e.Level + " (the highest of its fields, " + e.Standard + ")"},
		{"rows", fmt.Sprintf("≈ %d (%s, σ² = %d, ρ = %g per row, drawn for %s UTC)", e.Rows.Noised, e.Rows.Mechanism, e.Rows.Sigma2, e.Rows.Rho, e.Rows.Day)},
		{"purposes", strings.Join(purposes, ", ")}, {"licence", e.Licence}, {"retention", fmt.Sprintf("%d days", e.RetentionDays)},
		{"contact", e.Contact}, {"keywords", strings.Join(e.Keywords, ", ")}, {"updated", e.Updated.UTC().Format("2006-01-02 15:04:05 UTC")},
		{"DSP endpoint", e.Endpoint},
	} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nfields:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RECORD TYPE\tFIELD\tCATEGORY\tLEVEL\t")
	for _, f := range e.Fields {
		direct := ""
		if f.Direct {
			direct = "direct identifier"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", f.RecordType, f.Name, f.Category, f.Level, direct)
	}
	return tw.Flush()
}

func runDatasetOffer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset offer", stderr)
	cf := adminFlags(fs)
	file := fs.String("file", "", "the offer, a JSON file (required; node/catalogue/CATALOGUE.md §1 lists its keys)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("%w: --file is required: the dataset's offer as JSON", errUsage)
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/datasets", f, stdout)
}

func runDatasetWithdraw(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runByID(ctx, "dataset withdraw", "the id of the offer to withdraw", args, stdout, stderr, http.MethodDelete,
		func(id string) string { return "/v1/datasets/" + url.PathEscape(id) })
}

func runDatasetPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runRequest(ctx, "dataset publish", args, stdout, stderr, http.MethodPost, "/v1/datasets/publish")
}
