package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
)

// runReceived reads what the node received: `received list` and
// `received export`.
func runReceived(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "received list | received export --agreement ID [--type T] [--format ndjson|csv] [--out FILE]"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	switch args[0] {
	case "list":
		return runRequest(ctx, "received list", args[1:], stdout, stderr, http.MethodGet, "/v1/received/summary")
	case "export":
		fs := newFlags("received export", stderr)
		cf := adminFlags(fs)
		id := fs.String("agreement", "", "the agreement whose records to export (required; eduspace received list lists them)")
		typ := fs.String("type", "", "only records of this type (required for CSV)")
		format := fs.String("format", "ndjson", "ndjson (the records as they arrived) or csv (a header row, then one row per record)")
		out := fs.String("out", "", "write to this file, only once the export is complete (default: standard output)")
		if err := parse(fs, args[1:], false); err != nil {
			return err
		}
		if *id == "" {
			return fmt.Errorf("%w: --agreement is required", errUsage)
		}
		if *format == "csv" && *typ == "" {
			return fmt.Errorf("%w: --format csv needs --type: a CSV export is of one record type (eduspace received list lists them by agreement)", errUsage)
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		q := url.Values{"agreement": {*id}, "format": {*format}}
		if *typ != "" {
			q.Set("type", *typ)
		}
		return c.export(ctx, "/v1/received?"+q.Encode(), *out, stdout, stderr)
	}
	return fmt.Errorf("%w: %s", errUsage, use)
}

// export streams an export to the file out (written beside it, renamed
// into place once complete and its digest checked: no partial file), or
// to stdout. The node sends the count and digest first and an error that
// cut the export short in a trailer.
func (c *adminClient) export(ctx context.Context, path, out string, stdout, stderr io.Writer) (err error) {
	resp, err := c.send(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return problemError(http.MethodGet, path, resp, data)
	}
	w, finish := stdout, func(error) error { return nil }
	if out != "" {
		f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-*")
		if err != nil {
			return err
		}
		w = f
		finish = func(failed error) error {
			if failed != nil {
				f.Close()
				os.Remove(f.Name())
				return nil
			}
			if err := f.Sync(); err != nil {
				f.Close()
				os.Remove(f.Name())
				return err
			}
			if err := f.Close(); err != nil {
				os.Remove(f.Name())
				return err
			}
			return os.Rename(f.Name(), out)
		}
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(w, h), resp.Body)
	if err == nil {
		if msg := resp.Trailer.Get("Eduspace-Export-Error"); msg != "" {
			err = fmt.Errorf("the node cut the export short: %s", msg)
		} else if got, want := hex.EncodeToString(h.Sum(nil)), resp.Header.Get("Eduspace-Export-Digest"); want != "" && got != want {
			err = fmt.Errorf("the export's digest is %s, the node's evidence log says %s: incomplete", got, want)
		}
	}
	if ferr := finish(err); ferr != nil && err == nil {
		err = ferr
	}
	if err != nil {
		if out == "" {
			return fmt.Errorf("%w; what was written to standard output is incomplete", err)
		}
		return fmt.Errorf("%w; %s was not written", err, out)
	}
	if n := resp.Header.Get("Eduspace-Export-Records"); out != "" && n != "" {
		fmt.Fprintf(stderr, "%s records written to %s (sha256 %s, in the node's evidence log)\n",
			n, out, resp.Header.Get("Eduspace-Export-Digest"))
	} else if out != "" {
		fmt.Fprintf(stderr, "written to %s\n", out)
	}
	return nil
}

// runHeld writes the records the node holds of one type (`eduspace held`).
func runHeld(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("held", stderr)
	cf := adminFlags(fs)
	typ := fs.String("type", "", "the record type (required)")
	out := fs.String("out", "", "write to this file, only once it is complete (default: standard output)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *typ == "" {
		return fmt.Errorf("%w: --type is required", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.export(ctx, "/v1/held?"+url.Values{"type": {*typ}}.Encode(), *out, stdout, stderr)
}
