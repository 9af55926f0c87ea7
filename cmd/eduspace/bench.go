package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object (version 1)")
	records := fs.Int("records", bench.DefaultRecords, fmt.Sprintf("records through each path (those of at most %d students: rule V2)", bench.MaxSubjects))
	suite := fs.String("suite", crypto.DefaultSuite.String(), "the space's suite, selected in its signed policy: "+suiteNames())
	batch := fs.Int("batch", 0, "records per envelope (default: the node's default)")
	samples := fs.Int("latency-samples", 200, "single records timed for the latency figures")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the pipeline phase (not the baselines or latency samples) to this file")
	if err := parse(fs, args, false); err != nil {
		return err
	}
	s, err := crypto.ParseSuite(*suite)
	if err != nil {
		return fmt.Errorf("%w: --suite: %v", errUsage, err)
	}
	if *records < 1 || *batch < 0 || *samples < 1 {
		return fmt.Errorf("%w: --records and --latency-samples must be positive", errUsage)
	}
	o := bench.Options{Records: *records, Suite: s, BatchRecords: *batch, LatencySamples: *samples}
	if !*asJSON {
		o.Progress = func(s string) { fmt.Fprintf(stderr, "· %s\n", s) }
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		o.CPUProfile = f
	}
	res, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	fmt.Fprintf(stdout, "\neduspace bench: %d records of %d bytes, suite %s, %d per envelope, %d cores\n\n",
		res.Records, res.RecordBytes, res.Suite, res.BatchRecords, res.Cores)
	fmt.Fprintf(stdout, "  %-8s %9s  %5s  %8s\n", "path", "records/s", "ratio", "CPU µs/record")
	for _, p := range []struct {
		name, what string
		p          bench.Path
	}{
		{"stream", "eduspace ingest under a continuous agreement, to stored at the peer", res.Paths.Stream},
		{"held", "eduspace ingest, then eduspace share", res.Paths.Held},
		{"forward", "eduspace share --agreement ID FILE: nothing held", res.Paths.Forward},
	} {
		fmt.Fprintf(stdout, "  %-8s %9.0f  %5.2f  %8.1f       %s\n", p.name, p.p.RecordsPerS, p.p.Ratio, p.p.CPUMicrosPerRecord, p.what)
	}
	fmt.Fprintf(stdout, "  ingest alone %9.0f records/s (the held path's ingest)\n", res.Paths.Held.IngestRecordsPerS)
	fmt.Fprintf(stdout, "  baseline     %9.0f msgs/s    (plain JetStream PublishAsync, one record per message; runs %v; %.1f CPU µs/msg)\n",
		res.BaselineMsgsPerS, res.BaselineRuns, res.BaselineCPUMicrosPerMsg)
	fmt.Fprintf(stdout, "  latency      p50 %.2f ms, p99 %.2f ms  (one record ingested under the continuous agreement, to stored at the peer)\n", res.P50ms, res.P99ms)
	return nil
}
