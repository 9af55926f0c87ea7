package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/eduspace/eduspace/node"
)

// adminClient talks to a running node's admin API.
type adminClient struct {
	base  string
	token string
}

// clientFlags are the flags that say which node a client command talks
// to: --node and --token-file, or the node's --config (also
// $EDUSPACE_CONFIG), from which both follow.
type clientFlags struct {
	node, tokenFile, config *string
}

func adminFlags(fs *flag.FlagSet) *clientFlags {
	return &clientFlags{
		node:      fs.String("node", "", "the node's admin API URL (default: admin.listen of --config, else "+defaultAdmin+")"),
		tokenFile: fs.String("token-file", "", "the node's admin.token file (default: data_dir/admin.token of --config)"),
		config:    fs.String("config", os.Getenv("EDUSPACE_CONFIG"), "the node's YAML config file, for its admin URL and token (default $EDUSPACE_CONFIG)"),
	}
}

// defaultAdmin is the admin API a client talks to when nothing says which.
const defaultAdmin = "http://127.0.0.1:7600"

// client is the admin client the flags name: --node and --token-file
// where given, else what the config file says.
func (f *clientFlags) client() (*adminClient, error) {
	addr, tokenFile := *f.node, *f.tokenFile
	if *f.config != "" && (addr == "" || tokenFile == "") {
		cfg, err := node.LoadConfig(*f.config)
		if err != nil {
			return nil, err
		}
		if addr == "" {
			if cfg.Admin.Listen == "" {
				return nil, fmt.Errorf("%s: admin.listen is empty, the node serves no admin API: set it, or give --node", *f.config)
			}
			host, port, err := net.SplitHostPort(cfg.Admin.Listen)
			if err != nil {
				return nil, fmt.Errorf("%s: admin.listen %q: %w", *f.config, cfg.Admin.Listen, err)
			}
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1" // listening on every address: reach it over loopback
			}
			addr = "http://" + net.JoinHostPort(host, port)
		}
		if tokenFile == "" {
			tokenFile = filepath.Join(cfg.DataDir, "admin.token")
		}
	}
	if addr == "" {
		addr = defaultAdmin
	}
	return newAdminClient(addr, tokenFile)
}

func newAdminClient(addr, tokenFile string) (*adminClient, error) {
	if tokenFile == "" {
		return nil, fmt.Errorf("%w: --token-file or --config is required (the node writes its token to data_dir/admin.token)", errUsage)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("read token: %w", err)
	}
	return &adminClient{base: strings.TrimRight(addr, "/"), token: strings.TrimSpace(string(tok))}, nil
}

// retryFor bounds how long the client follows a node's Retry-After.
const retryFor = 30 * time.Second

// do sends a request and copies its JSON answer to stdout, indented.
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader, stdout io.Writer) error {
	data, err := c.fetch(ctx, method, path, body)
	if err != nil {
		return err
	}
	return printJSON(stdout, data)
}

// runRequest is a client command with no flags but the node's: it sends
// method to path and prints the answer.
func runRequest(ctx context.Context, name string, args []string, stdout, stderr io.Writer, method, path string) error {
	fs := newFlags(name, stderr)
	cf := adminFlags(fs)
	if err := parse(fs, args, false); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, nil, stdout)
}

// printJSON writes the JSON answer data to stdout, indented.
func printJSON(stdout io.Writer, data []byte) error {
	var pretty bytes.Buffer
	if json.Indent(&pretty, data, "", "  ") == nil {
		data = pretty.Bytes()
	}
	_, err := stdout.Write(append(bytes.TrimRight(data, "\n"), '\n'))
	return err
}

// raw GETs path and copies the answer to stdout as it is (CSV, say).
func (c *adminClient) raw(ctx context.Context, path string, stdout io.Writer) error {
	data, err := c.fetch(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	_, err = stdout.Write(data)
	return err
}

// fetch sends a request and returns the answer's body; a problem answer
// becomes an error with its title and detail. An answer of 409 or 503
// with Retry-After (a state the node expects to change soon, such as an
// agreement whose acceptance is on its way) is asked again after the time
// it names, for up to retryFor, when the body can be read again (nil or
// an io.Seeker).
func (c *adminClient) fetch(ctx context.Context, method, path string, body io.Reader) ([]byte, error) {
	deadline := time.Now().Add(retryFor)
	var resp *http.Response
	var data []byte
	for {
		var err error
		if resp, err = c.send(ctx, method, path, body); err != nil {
			return nil, err
		}
		data, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
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
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	if resp.StatusCode >= 300 {
		return nil, problemError(method, path, resp, data)
	}
	return data, nil
}

// send makes one request of the node's admin API with the client's token.
func (c *adminClient) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp, nil
}

// problemError is the error of an answer resp, with body data, that is
// not a success: its problem document's title and detail.
func problemError(method, path string, resp *http.Response, data []byte) error {
	var p struct{ Title, Detail string }
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("%s %s: %s (the answer is not a problem document: is --node the admin listener?)", method, path, resp.Status)
	}
	return fmt.Errorf("%s %s: %s: %s %s", method, path, resp.Status, p.Title, p.Detail)
}

func runIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ingest", stderr)
	cf := adminFlags(fs)
	in := inputFlags(fs)
	allOrNothing := fs.Bool("all-or-nothing", false, "store nothing if any record is refused")
	if err := parse(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: eduspace ingest [flags] FILE|- (NDJSON, CSV, Ed-Fi XML or xAPI statements)", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	body, closeInput, err := openInput(fs.Arg(0), stderr)
	if err != nil {
		return err
	}
	defer closeInput()
	q := in.query()
	q.Set("all_or_nothing", strconv.FormatBool(*allOrNothing))
	data, err := c.fetch(ctx, http.MethodPost, "/v1/ingest?"+q.Encode(), body)
	if err != nil {
		return err
	}
	if err := printJSON(stdout, data); err != nil {
		return err
	}
	return refused(data)
}

// inputOpts are the flags that say how to read records: ingest and share.
type inputOpts struct{ typ, format, encoding *string }

func inputFlags(fs *flag.FlagSet) inputOpts {
	return inputOpts{
		typ:      fs.String("type", "", "record type of records that name none (required for CSV; for Ed-Fi XML, keep only this type)"),
		format:   fs.String("format", "", "ndjson, csv, edfi or xapi (default: from the start of the input: < Ed-Fi XML, [ or a statement xAPI, other { NDJSON, else CSV)"),
		encoding: fs.String("encoding", "", "utf-8 or gb18030, which covers GBK (default: detected; undecodable input is refused with its line)"),
	}
}

func (o inputOpts) query() url.Values {
	return url.Values{"type": {*o.typ}, "format": {*o.format}, "encoding": {*o.encoding}}
}

// openInput opens the file named on the command line, "-" for standard
// input. A file read to a terminal shows its progress on stderr.
func openInput(name string, stderr io.Writer) (io.Reader, func(), error) {
	if name == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	p := newProgress(f, fi.Size(), stderr)
	return p, func() { p.stop(); f.Close() }, nil
}

// refused turns a response that counts refused records into the failure
// the operator must see, by reason.
func refused(data []byte) error {
	var res struct {
		Invalid    int            `json:"invalid"`
		ByReason   map[string]int `json:"by_reason"`
		NoneStored bool           `json:"none_stored"`
		Shared     []struct {
			Agreement, Error string
		} `json:"shared"`
	}
	if json.Unmarshal(data, &res) != nil {
		return nil
	}
	var msgs []string
	if res.Invalid > 0 {
		reasons := make([]string, 0, len(res.ByReason))
		for r, n := range res.ByReason {
			reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(reasons)
		msg := fmt.Sprintf("%d records refused (%s)", res.Invalid, strings.Join(reasons, ", "))
		if res.NoneStored {
			msg += "; --all-or-nothing: none stored"
		}
		msgs = append(msgs, msg)
	}
	for _, s := range res.Shared {
		if s.Error != "" {
			msgs = append(msgs, fmt.Sprintf("the continuous share under %s failed (%s); its records are held: eduspace share --agreement %s sends them", s.Agreement, s.Error, s.Agreement))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return exitCodeError{code: exitFailure, msg: strings.Join(msgs, "; ")}
}

func runAgreement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "agreement add FILE | propose FILE | accept --id ID | revoke --id ID | list"
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	sub := args[0]
	fs := newFlags("agreement "+sub, stderr)
	cf := adminFlags(fs)
	id := new(string)
	if sub == "accept" || sub == "revoke" {
		id = fs.String("id", "", "the agreement's id (required)")
	}
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
	c, err := cf.client()
	if err != nil {
		return err
	}
	return c.do(ctx, method, path, body, stdout)
}

func runShare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("share", stderr)
	cf := adminFlags(fs)
	id := fs.String("agreement", "", "the agreement to share under (required)")
	in := inputFlags(fs)
	if err := parse(fs, args, true); err != nil {
		return err
	}
	if *id == "" {
		return fmt.Errorf("%w: --agreement is required", errUsage)
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("%w: eduspace share --agreement ID [FILE|-]", errUsage)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if fs.NArg() == 0 {
		// The records the node holds.
		body, err := json.Marshal(map[string]string{"agreement": *id})
		if err != nil {
			return err
		}
		return c.do(ctx, http.MethodPost, "/v1/shares", bytes.NewReader(body), stdout)
	}
	// Records streamed straight under the agreement, not held.
	body, closeInput, err := openInput(fs.Arg(0), stderr)
	if err != nil {
		return err
	}
	defer closeInput()
	data, err := c.fetch(ctx, http.MethodPost, "/v1/agreements/"+url.PathEscape(*id)+"/stream?"+in.query().Encode(), body)
	if err != nil {
		return err
	}
	if err := printJSON(stdout, data); err != nil {
		return err
	}
	return refused(data)
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

// streamLines POSTs req, as JSON, to path, whose answer streams the work
// line by line (progress, then the outcome: node/admin's …Line types),
// and hands each line, decoded into a fresh L, to line until it says the
// command is done or fails. what names the work in errors ("release");
// owed is what the node must end with ("a report").
func streamLines[L any](ctx context.Context, c *adminClient, path string, req any, what, owed string, line func(*L) (done bool, err error)) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return problemError(http.MethodPost, path, resp, data)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l L
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the node ended the %s without %s: see its log", what, owed)
			}
			return fmt.Errorf("read the %s's progress: %w", what, err)
		}
		if done, err := line(&l); done || err != nil {
			return err
		}
	}
}
