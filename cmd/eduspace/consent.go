package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

// runConsent records consents in and withdraws them from a running node's
// ledger.
func runConsent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: consent grant [flags] FILE.json | consent withdraw [flags] --id ID", errUsage)
	}
	switch args[0] {
	case "grant":
		fs := newFlags("consent grant", stderr)
		cf := adminFlags(fs)
		if err := parse(fs, args[1:], true); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: eduspace consent grant [flags] FILE.json", errUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		body, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		return c.do(ctx, http.MethodPost, "/v1/consents", bytes.NewReader(body), stdout)
	case "withdraw":
		return runByID(ctx, "consent withdraw", "the consent's id", args[1:], stdout, stderr, http.MethodPost,
			func(id string) string { return "/v1/consents/" + url.PathEscape(id) + "/withdraw" })
	case "list":
		fs := newFlags("consent list", stderr)
		cf := adminFlags(fs)
		purpose := fs.String("purpose", "", "only the consents for this purpose")
		after := fs.String("after", "", "the page after this consent id (the last of the page before)")
		limit := fs.Int("limit", 1000, "at most this many (1..10000)")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(*limit)}}
		if *purpose != "" {
			q.Set("purpose", *purpose)
		}
		if *after != "" {
			q.Set("after", *after)
		}
		return c.do(ctx, http.MethodGet, "/v1/consents?"+q.Encode(), nil, stdout)
	case "show":
		return runByID(ctx, "consent show", "the consent's id", args[1:], stdout, stderr, http.MethodGet,
			func(id string) string { return "/v1/consents/" + url.PathEscape(id) })
	}
	return fmt.Errorf("%w: unknown consent subcommand %q", errUsage, args[0])
}

// runSubject prints the subject report: every delivery of one student's
// data, with its erasure state.
func runSubject(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "report" {
		return fmt.Errorf("%w: eduspace subject report [flags] --student ID", errUsage)
	}
	fs := newFlags("subject report", stderr)
	cf := adminFlags(fs)
	student := fs.String("student", "", "the student's id (required)")
	if err := parse(fs, args[1:], false); err != nil {
		return err
	}
	if *student == "" {
		return fmt.Errorf("%w: --student is required", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]string{"subject": *student})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/subjects/report", bytes.NewReader(body), stdout)
}

// runByID is a client command that names one thing by --id: it sends
// method to the path path gives for the id and prints the answer.
func runByID(ctx context.Context, name, what string, args []string, stdout, stderr io.Writer, method string, path func(string) string) error {
	fs := newFlags(name, stderr)
	cf := adminFlags(fs)
	id := fs.String("id", "", what+" (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("%w: --id is required", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.do(ctx, method, path(*id), nil, stdout)
}
