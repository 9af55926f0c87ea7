package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// runAggregate is the center's side of aggregates: its queries, their
// rounds and releases, and every node's privacy budgets
// (node/aggregate/AGGREGATES.md).
func runAggregate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "query":
		return runAggregateQuery(ctx, args[1:], stdout, stderr)
	case "rounds", "releases", "budgets":
		sub := args[0]
		fs := newFlags("aggregate "+sub, stderr)
		cf := adminFlags(fs)
		id, csv := new(string), new(bool)
		if sub == "releases" {
			id = fs.String("id", "", "one release, with its cells")
			csv = fs.Bool("csv", false, "the release's cells as CSV (with --id)")
		}
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		path := map[string]string{"rounds": "/v1/aggregate-rounds", "releases": "/v1/aggregates", "budgets": "/v1/budgets"}[sub]
		if *id != "" {
			path += "/" + url.PathEscape(*id)
			if *csv {
				return c.raw(ctx, path+"?format=csv", stdout)
			}
		}
		return c.do(ctx, http.MethodGet, path, nil, stdout)
	}
	return fmt.Errorf("%w: unknown aggregate subcommand %q (query, rounds, releases, budgets)", errUsage, args[0])
}

// runAggregateQuery submits, lists, shows and cancels the center's queries.
func runAggregateQuery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("aggregate query", stderr)
	cf := adminFlags(fs)
	id := fs.String("id", "", "the query's id (get, cancel)")
	usage := fs.Usage
	fs.Usage = func() {
		fmt.Fprintln(stderr, "actions: submit FILE.json (a query, AGGREGATES.md) | list | get --id ID | cancel --id ID (no round starts after it)")
		usage()
	}
	if len(args) == 0 || isHelp(args[0]) {
		fs.Usage()
		if len(args) == 0 {
			return fmt.Errorf("%w: eduspace aggregate query submit|list|get|cancel [flags]", errUsage)
		}
		return flag.ErrHelp
	}
	action := args[0]
	if err := parse(fs, args[1:], action == "submit"); err != nil {
		return err
	}
	var method, path string
	var body io.Reader
	switch action {
	case "submit":
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: eduspace aggregate query submit [flags] FILE.json", errUsage)
		}
		data, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		method, path, body = http.MethodPost, "/v1/aggregate-queries", bytes.NewReader(data)
	case "list":
		method, path = http.MethodGet, "/v1/aggregate-queries"
	case "get", "cancel":
		if *id == "" {
			return fmt.Errorf("%w: --id is required", errUsage)
		}
		method, path = http.MethodGet, "/v1/aggregate-queries/"+url.PathEscape(*id)
		if action == "cancel" {
			method, path = http.MethodPost, path+"/cancel"
		}
	default:
		return fmt.Errorf("%w: unknown action %q (submit, list, get, cancel)", errUsage, action)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, body, stdout)
}
