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
	records := fs.Int("records", bench.DefaultRecords, fmt.Sprintf("records through the pipeline (at most %d: rule V2)", bench.MaxRecords))
	suite := fs.String("suite", crypto.DefaultSuite.String(), "HPKE suite")
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
	if *records < 1 || *records > bench.MaxRecords || *batch < 0 || *samples < 1 {
		return fmt.Errorf("%w: --records must be 1 to %d, --latency-samples positive", errUsage, bench.MaxRecords)
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
	fmt.Fprintf(stdout, "  pipeline   %9.0f records/s  (classify, policy, seal, sign, JetStream, verify, open, store)\n", res.RecordsPerS)
	fmt.Fprintf(stdout, "  baseline   %9.0f msgs/s     (plain JetStream PublishAsync, one record per message; runs %v)\n", res.BaselineMsgsPerS, res.BaselineRuns)
	fmt.Fprintf(stdout, "  ratio      %9.2f\n", res.Ratio)
	fmt.Fprintf(stdout, "  latency    p50 %.2f ms, p99 %.2f ms  (one record, send to stored at the peer)\n", res.P50ms, res.P99ms)
	return nil
}
