package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// adminClient talks to a running node's admin API.
type adminClient struct {
	base  string
	token string
}

func adminFlags(fs *flag.FlagSet) (addr, tokenFile *string) {
	addr = fs.String("node", "http://127.0.0.1:7600", "the node's admin API URL")
	tokenFile = fs.String("token-file", "", "the node's admin.token file (required)")
	return
}

func newAdminClient(addr, tokenFile string) (*adminClient, error) {
	if tokenFile == "" {
		return nil, fmt.Errorf("%w: --token-file is required (the node writes it to its data_dir/admin.token)", errUsage)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	return &adminClient{base: strings.TrimRight(addr, "/"), token: strings.TrimSpace(string(tok))}, nil
}

// retryFor bounds how long the client follows a node's Retry-After.
const retryFor = 30 * time.Second

// do sends a request and copies a JSON answer to stdout; a problem answer
// becomes an error with its title and detail. An answer of 409 or 503 with
// Retry-After (a state the node expects to change soon, such as an
// agreement whose acceptance is on its way) is asked again after the time
// it names, for up to retryFor, when the body can be read again (nil or
// an io.Seeker).
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader, stdout io.Writer) error {
	deadline := time.Now().Add(retryFor)
	var resp *http.Response
	var data []byte
	for {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		data, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		wait, again := retryAfter(resp)
		seeker, rewinds := body.(io.Seeker)
		if !again || (body != nil && !rewinds) || time.Now().Add(wait).After(deadline) {
			break
		}
		if rewinds {
			if _, err := seeker.Seek(0, io.SeekStart); err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if resp.StatusCode >= 300 {
		var p struct{ Title, Detail string }
		if err := json.Unmarshal(data, &p); err != nil {
			return fmt.Errorf("%s %s: %s (the answer is not a problem document: is --node the admin listener?)", method, path, resp.Status)
		}
		return fmt.Errorf("%s %s: %s: %s %s", method, path, resp.Status, p.Title, p.Detail)
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, data, "", "  ") == nil {
		data = pretty.Bytes()
	}
	_, err := stdout.Write(append(bytes.TrimRight(data, "\n"), '\n'))
	return err
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ingest", stderr)
	addr, tokenFile := adminFlags(fs)
	typ := fs.String("type", "", "record type for lines without a \"type\" member")
	if err := parse(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: eduspace ingest [flags] FILE.ndjson", errUsage)
	}
	c, err := newAdminClient(*addr, *tokenFile)
	if err != nil {
		return err
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	return c.do(ctx, http.MethodPost, "/v1/ingest?type="+url.QueryEscape(*typ), f, stdout)
}

func runAgreement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "agreement add FILE | propose FILE | accept --id ID | revoke --id ID | list"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	sub := args[0]
	fs := newFlags("agreement "+sub, stderr)
	addr, tokenFile := adminFlags(fs)
	id := fs.String("id", "", "the agreement's id (accept, revoke)")
	if err := parse(fs, args[1:], sub == "add" || sub == "propose"); err != nil {
		return err
	}
	var method, path string
	var body io.Reader
	switch sub {
	case "add", "propose":
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: eduspace agreement %s [flags] FILE.json", errUsage, sub)
		}
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		method, path, body = http.MethodPost, "/v1/agreements", f
		if sub == "propose" {
			path = "/v1/agreements/propose"
		}
	case "accept", "revoke":
		if *id == "" {
			return fmt.Errorf("%w: --id is required", errUsage)
		}
		method, path = http.MethodPost, "/v1/agreements/"+url.PathEscape(*id)+"/"+sub
	case "list":
		method, path = http.MethodGet, "/v1/agreements"
	default:
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	c, err := newAdminClient(*addr, *tokenFile)
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, body, stdout)
}

func runShare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("share", stderr)
	addr, tokenFile := adminFlags(fs)
	id := fs.String("agreement", "", "the agreement to share under (required)")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("%w: --agreement is required", errUsage)
	}
	c, err := newAdminClient(*addr, *tokenFile)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]string{"agreement": *id})
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/shares", bytes.NewReader(body), stdout)
}

// retryAfter is how long to wait before asking again, when resp is a 409
// or 503 that names it in seconds (Retry-After).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}
