package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// For tests: where "-" reads from, and the clock of the default --as-of.
var (
	classifyStdin io.Reader = os.Stdin
	classifyNow             = time.Now
)

// classifyInput is one input file of classify.
type classifyInput struct {
	name   string // as given; "-" is standard input
	format string
	r      io.Reader
	close  func() error
}

// runClassify is `eduspace classify`: offline classification of records
// by a grading standard, with the output of DESIGN.md §11.
func runClassify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("classify", stderr)
	stdFile := fs.String("standard", "", "grading standard `FILE` (default: the built-in EDU-CN-DEFAULT v1)")
	format := fs.String("format", "", "input format: ndjson, csv, edfi or xapi (default: from each file's extension, and for .json, .jsonl, .ndjson and - from the content: xAPI statements or NDJSON)")
	typ := fs.String("type", "", "record `type` of the records (required for csv; for ndjson, of lines without a \"type\"; for edfi, keep only this type)")
	asOfFlag := fs.String("as-of", "", "the `date` (YYYY-MM-DD) that decides who is under 14 (default: today)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: eduspace classify [--standard FILE] [--format ndjson|csv|edfi|xapi] [--type T] [--as-of YYYY-MM-DD] FILE…")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nexample:\n  %s\n", examples["classify"])
	}
	if err := parse(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: no input file (give FILE…, or - for standard input)", errUsage)
	}

	std := schema.Default()
	if *stdFile != "" {
		data, err := os.ReadFile(*stdFile)
		if err != nil {
			return fmt.Errorf("%w: --standard: %v", errUsage, err)
		}
		if std, err = schema.ParseStandard(data); err != nil {
			return fmt.Errorf("%w: --standard %s: %v", errUsage, *stdFile, err)
		}
	}
	y, m, d := classifyNow().Date()
	asOf := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	if *asOfFlag != "" {
		t, err := time.Parse(time.DateOnly, *asOfFlag)
		if err != nil {
			return fmt.Errorf("%w: --as-of %q: want a date YYYY-MM-DD", errUsage, *asOfFlag)
		}
		asOf = t
	}
	if *format != "" && !slices.Contains(schema.Formats(), *format) {
		return fmt.Errorf("%w: --format %q: want one of %s", errUsage, *format, strings.Join(schema.Formats(), ", "))
	}
	if *typ != "" {
		if _, ok := std.Type(*typ); !ok {
			return fmt.Errorf("%w: --type %q: not a record type of %s (types: %s)", errUsage, *typ, std.Name(), strings.Join(std.Types(), ", "))
		}
	}

	// Check every input before writing anything.
	inputs := make([]classifyInput, 0, fs.NArg())
	defer func() {
		for _, in := range inputs {
			if in.close != nil {
				in.close()
			}
		}
	}()
	stdinUsed := false
	for _, name := range fs.Args() {
		in := classifyInput{name: name, format: *format}
		if in.format == "" {
			in.format = formatOf(name)
			if in.format == "" {
				return fmt.Errorf("%w: %s: cannot tell the format from the extension; give --format", errUsage, name)
			}
		}
		if in.format == schema.FormatCSV && *typ == "" {
			return fmt.Errorf("%w: %s: csv input needs --type", errUsage, name)
		}
		if name == "-" {
			if stdinUsed {
				return fmt.Errorf("%w: standard input given twice", errUsage)
			}
			stdinUsed = true
			in.r = classifyStdin
		} else {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("open input: %w", err)
			}
			in.r, in.close = f, f.Close
		}
		if *format == "" && in.format == schema.FormatNDJSON {
			// JSON: NDJSON records, or xAPI statements (a statement, an
			// array of them, an LRS statement result).
			br := bufio.NewReaderSize(in.r, 64<<10)
			peek, err := br.Peek(64 << 10)
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("read input %s: %w", name, err)
			}
			in.r, in.format = br, schema.DetectFormat(peek)
			if in.format != schema.FormatXAPI {
				in.format = schema.FormatNDJSON
			}
		}
		inputs = append(inputs, in)
	}

	out := bufio.NewWriterSize(stdout, 64<<10)
	c := classifier{std: std, asOf: asOf, ds: schema.NewDataset(std), out: out, progress: progressTo(stderr), start: time.Now()}
	c.lastReport = c.start
	var runErr error
	for _, in := range inputs {
		if runErr = c.classify(ctx, in, *typ); runErr != nil {
			break
		}
	}
	if runErr == nil {
		c.line = c.ds.Summary().AppendJSON(c.line[:0])
		c.line = append(c.line, '\n')
		_, runErr = out.Write(c.line)
	}
	if c.reported {
		fmt.Fprintln(c.progress)
	}
	if err := out.Flush(); err != nil && runErr == nil {
		runErr = fmt.Errorf("write output: %w", err)
	}
	if runErr != nil {
		return runErr
	}
	if s := c.ds.Summary(); s.Invalid > 0 {
		return exitCodeError{code: exitFailure, msg: fmt.Sprintf("%d of %d records invalid", s.Invalid, s.Invalid+s.Records)}
	}
	return nil
}

// formatOf returns the input format a file name's extension implies, or "".
func formatOf(name string) string {
	if name == "-" {
		return schema.FormatNDJSON
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".ndjson", ".jsonl", ".json":
		return schema.FormatNDJSON
	case ".csv":
		return schema.FormatCSV
	case ".xml":
		return schema.FormatEdFi
	}
	return ""
}

// progressTo returns stderr if it is a terminal, for progress lines, or nil.
func progressTo(stderr io.Writer) io.Writer {
	f, ok := stderr.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return f
}

// classifier writes the output lines of one classify run.
type classifier struct {
	std   *schema.Standard
	asOf  time.Time
	ds    *schema.Dataset
	out   *bufio.Writer
	line  []byte
	base  int // index of the current file's first record
	count int // records so far

	progress   io.Writer // nil: no progress lines
	start      time.Time
	lastReport time.Time
	reported   bool
}

// classify classifies the records of one input; indices continue from the
// inputs before it.
func (c *classifier) classify(ctx context.Context, in classifyInput, typ string) error {
	r, err := c.std.NewReader(in.format, in.r, typ)
	if err != nil {
		return fmt.Errorf("%s: %w", in.name, err)
	}
	n := 0 // records of this input
	for {
		rec, idx, err := r.Next()
		if err == io.EOF {
			break
		}
		var ve *schema.ValidationError
		index := c.base + idx
		switch {
		case errors.As(err, &ve):
			c.ds.AddInvalid()
			c.line = ve.AppendJSON(c.line[:0], index)
		case err != nil:
			return fmt.Errorf("%s: %w", in.name, err)
		default:
			l, err := c.std.Classify(rec, c.asOf)
			if errors.As(err, &ve) {
				c.ds.AddInvalid()
				c.line = ve.AppendJSON(c.line[:0], index)
			} else if err != nil {
				return fmt.Errorf("%s: record %d: %w", in.name, index, err)
			} else {
				c.ds.Add(l)
				c.line = l.AppendJSON(c.line[:0], index, l.ID)
			}
		}
		c.line = append(c.line, '\n')
		if _, err := c.out.Write(c.line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		n = idx + 1
		c.count++
		if c.count&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			c.report()
		}
	}
	c.base += n
	return nil
}

// report writes a progress line at most once a second.
func (c *classifier) report() {
	if c.progress == nil {
		return
	}
	now := time.Now()
	if now.Sub(c.lastReport) < time.Second {
		return
	}
	c.lastReport = now
	c.reported = true
	rate := float64(c.count) / now.Sub(c.start).Seconds()
	fmt.Fprintf(c.progress, "\reduspace classify: %d records, %.0f records/s ", c.count, rate)
}
