// Package bench measures a node's whole pipeline against plain JetStream on
// the same machine, in the same run: `eduspace bench`.
//
// It measures the paths operators run, through the sender's admin API as
// the command-line client calls it: the stream path (records POSTed to
// /v1/ingest under a continuous agreement), the held path (ingest, then a
// share request) and the forward path (records streamed under an
// agreement, not held). Behind the API runs the real pipeline: decoding,
// validation and classification, policy, sealing and signing into the
// outbox; the relay publishes the envelopes on JetStream; the receiver
// verifies, opens, checks and stores them, every node writing its
// evidence log. The baseline publishes the same plaintext records, one per
// message, with PublishAsync to a file-backed stream.
//
// It owns nothing beyond its temporary directory. It must never measure a
// path no command reaches.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// Options tune a run.
type Options struct {
	Records        int            // records through each path (default DefaultRecords)
	Suite          crypto.SuiteID // default crypto.DefaultSuite
	BatchRecords   int            // records per envelope (default: the node's default)
	LatencySamples int            // single records timed one at a time (default 200)
	Dir            string         // working directory; default a temporary one, removed after
	CPUProfile     io.Writer      // when set, a CPU profile of the pipeline phase goes here
	Logger         *slog.Logger
	Progress       func(string)
}

// Result is a run's outcome. Its JSON form is the contract of `eduspace
// bench --json` (version 1, DESIGN.md §11).
type Result struct {
	Version     int     `json:"version"`
	Records     int     `json:"records"`
	RecordBytes int     `json:"record_bytes"` // mean size of a plaintext record
	Seconds     float64 `json:"seconds"`
	SendSeconds float64 `json:"send_seconds"` // until the sender had sealed and committed everything
	RecordsPerS float64 `json:"records_per_s"`
	// CPUMicrosPerRecord is the process's CPU time (user and system, all
	// threads: both nodes, the NATS server and SQLite) over the pipeline
	// phase per record: steadier than records/s on a shared machine, for
	// comparing builds.
	CPUMicrosPerRecord float64 `json:"cpu_us_per_record"`
	BaselineMsgsPerS   float64 `json:"baseline_msgs_per_s"`
	BaselineRuns       []int   `json:"baseline_runs_msgs_per_s"` // before and after the pipeline
	// BaselineCPUMicrosPerMsg is CPUMicrosPerRecord for the baselines.
	BaselineCPUMicrosPerMsg float64 `json:"baseline_cpu_us_per_msg"`
	Ratio                   float64 `json:"ratio"`
	P50ms                   float64 `json:"p50_ms"`
	P99ms                   float64 `json:"p99_ms"`
	Suite                   string  `json:"suite"`
	BatchRecords            int     `json:"batch_records"`
	Cores                   int     `json:"cores"`
	GoVersion               string  `json:"go_version"`
	// Paths are the figures of each path operators run; the top-level
	// figures are the stream path's.
	Paths Paths `json:"paths"`
}

// Paths are the three ways records leave a node, each measured from the
// first byte POSTed to the admin API until the recipient holds them all.
type Paths struct {
	// Stream: POST /v1/ingest (`eduspace ingest`) under a continuous
	// agreement; records are held and go as they are stored.
	Stream Path `json:"stream"`
	// Held: POST /v1/ingest, then POST /v1/shares (`eduspace share`).
	Held Path `json:"held"`
	// Forward: POST /v1/agreements/{id}/stream (`eduspace share --agreement
	// ID FILE`); nothing is held.
	Forward Path `json:"forward"`
}

// Path is one path's figures.
type Path struct {
	Records            int     `json:"records"`
	Seconds            float64 `json:"seconds"`
	RecordsPerS        float64 `json:"records_per_s"`
	Ratio              float64 `json:"ratio"` // records_per_s / baseline_msgs_per_s
	CPUMicrosPerRecord float64 `json:"cpu_us_per_record"`
	// IngestRecordsPerS is the held path's ingest alone.
	IngestRecordsPerS float64 `json:"ingest_records_per_s,omitempty"`
	sendSeconds       float64 // until the node answered
}

const space = "bench"

// DefaultRecords is how many records each path sends by default. Rule V2
// (GRADING.md §5) makes 100,000 distinct students at L3 sent to one
// recipient in a calendar year important data, whose raw egress is
// blocked; so a path's records are those of at most MaxSubjects students,
// each student's record in several versions (as a student information
// system exports a student again after a change), and each path that
// holds records sends to a recipient of its own.
const (
	DefaultRecords = 300_000
	MaxSubjects    = 99_000
)

// studentRecords returns n distinct student records of at most
// MaxSubjects students: versions of the students of synth.Students with
// seeds seed, seed+1, …, which share student numbers and differ in the
// other fields.
func studentRecords(n int, seed uint64) []byte {
	versions := (n + MaxSubjects - 1) / MaxSubjects
	students := (n + versions - 1) / versions
	out := make([]byte, 0, n*600)
	for v := 0; n > 0; v++ {
		data, _ := synth.Students(min(students, n), seed+uint64(v))
		out = append(out, data...)
		n -= min(students, n)
	}
	return out
}

// Run runs the benchmark.
func Run(ctx context.Context, o Options) (res Result, err error) {
	if o.Records <= 0 {
		o.Records = DefaultRecords
	}
	if o.Suite == 0 {
		o.Suite = crypto.DefaultSuite
	}
	if o.LatencySamples <= 0 {
		o.LatencySamples = 200
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = node.DefaultConfig().Batch.MaxRecords
	}
	step := func(s string) {
		if o.Progress != nil {
			o.Progress(s)
		}
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "eduspace-bench-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	}

	step("generate records")
	// Three sets of distinct records: the stream path's (also forwarded),
	// the held path's and the latency samples.
	data := studentRecords(o.Records, 1000)
	heldData := studentRecords(o.Records, 2000)
	samples, _ := synth.Students(o.LatencySamples, 3)
	res = Result{Version: 1, Records: o.Records, RecordBytes: len(data) / o.Records, Suite: o.Suite.String(),
		BatchRecords: o.BatchRecords, Cores: runtime.NumCPU(), GoVersion: runtime.Version()}

	step("start NATS and three nodes")
	storeDir := filepath.Join(dir, "nats")
	emb, err := bus.StartEmbedded(storeDir, "")
	if err != nil {
		return res, err
	}
	defer emb.Shutdown()
	if _, err := authority.InitFor(filepath.Join(dir, "authority"), o.Suite); err != nil {
		return res, err
	}
	ak, err := authority.Load(filepath.Join(dir, "authority"))
	if err != nil {
		return res, err
	}
	open := func(id, admin string) (*node.Node, error) {
		nd := filepath.Join(dir, id)
		if _, err := authority.Provision(ak, nd, id, o.Suite, authority.Member{
			Space: space, Institution: id, Role: crypto.RoleUniversity, Valid: 24 * time.Hour}, time.Now()); err != nil {
			return nil, err
		}
		cfg := node.DefaultConfig()
		cfg.NodeID, cfg.Space, cfg.DataDir = id, space, nd
		cfg.AuthorityKey = filepath.Join(dir, "authority", authority.PublicKeyFile)
		cfg.Admin.Listen = admin
		cfg.Suite = o.Suite.String()
		cfg.Batch.MaxRecords = o.BatchRecords
		return node.Open(ctx, cfg, node.Env{Logger: o.Logger, Embedded: emb})
	}
	snd, err := open("sender", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	defer snd.Close()
	api, err := newAdminClient(snd, filepath.Join(dir, "sender"))
	if err != nil {
		return res, err
	}
	// One recipient per path: rule V2 counts the students each receives
	// in a year, and each path sends a set of its own.
	rcv, err := open("receiver", "")
	if err != nil {
		return res, err
	}
	defer rcv.Close()
	rcvHeld, err := open("receiver-held", "")
	if err != nil {
		return res, err
	}
	defer rcvHeld.Close()
	now := time.Now()
	held := Agreement(now)
	held.ID, held.Recipient = "bench-held", "receiver-held"
	for _, n := range []*node.Node{snd, rcvHeld} {
		if err := n.AddAgreement(ctx, held); err != nil {
			return res, err
		}
	}

	step("baseline: plain JetStream PublishAsync, one record per message")
	b1, c1, err := baseline(ctx, emb, storeDir, data, "before")
	if err != nil {
		return res, err
	}

	if o.CPUProfile != nil {
		if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile() // on an early return; a no-op after the stop below
	}
	// measure runs one path: send, then wait until rcv holds want records.
	measure := func(p *Path, rcv *node.Node, want int64, send func() error) error {
		runtime.GC() // as before a baseline
		p.Records = o.Records
		cpu0 := processCPU()
		start := time.Now()
		if err := send(); err != nil {
			return err
		}
		p.sendSeconds = time.Since(start).Seconds()
		if err := waitReceived(ctx, rcv, want, 5*time.Minute); err != nil {
			return err
		}
		p.Seconds = time.Since(start).Seconds()
		p.CPUMicrosPerRecord = float64((processCPU() - cpu0).Microseconds()) / float64(o.Records)
		p.RecordsPerS = float64(o.Records) / p.Seconds
		return nil
	}
	permitted := func(what string, got int, denied map[string]int, invalid int) error {
		if got != o.Records {
			return fmt.Errorf("bench: %s: %d of %d records permitted (denied %v, invalid %d)", what, got, o.Records, denied, invalid)
		}
		return nil
	}

	step(fmt.Sprintf("held path: %d records ingested, then shared (POST /v1/ingest, POST /v1/shares)", o.Records))
	if err := measure(&res.Paths.Held, rcvHeld, int64(o.Records), func() error {
		t0 := time.Now()
		var ir share.IngestResult
		if err := api.post(ctx, "/v1/ingest", bytes.NewReader(heldData), &ir); err != nil {
			return err
		}
		if ir.Stored != o.Records {
			return fmt.Errorf("bench: held path: %d of %d records stored (invalid %d)", ir.Stored, o.Records, ir.Invalid)
		}
		res.Paths.Held.IngestRecordsPerS = float64(o.Records) / time.Since(t0).Seconds()
		var sr share.Result
		if err := api.post(ctx, "/v1/shares", strings.NewReader(`{"agreement":"bench-held"}`), &sr); err != nil {
			return err
		}
		return permitted("held path", sr.Permitted, sr.Denied, 0)
	}); err != nil {
		return res, err
	}

	// The stream path's agreement is continuous: records go as they are
	// ingested. It comes into force after the held path, whose records
	// are not its to send.
	ag := Agreement(now)
	ag.Continuous = true
	for _, n := range []*node.Node{snd, rcv} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			return res, err
		}
	}
	step(fmt.Sprintf("stream path: %d records ingested under a continuous agreement (POST /v1/ingest)", o.Records))
	if err := measure(&res.Paths.Stream, rcv, int64(o.Records), func() error {
		var ir share.IngestResult
		if err := api.post(ctx, "/v1/ingest", bytes.NewReader(data), &ir); err != nil {
			return err
		}
		if len(ir.Shared) != 1 || ir.Shared[0].Error != "" {
			return fmt.Errorf("bench: stream path: continuous shares %+v, want one under %s", ir.Shared, ag.ID)
		}
		return permitted("stream path", ir.Shared[0].Permitted, ir.Shared[0].Denied, ir.Invalid)
	}); err != nil {
		return res, err
	}

	step(fmt.Sprintf("forward path: the same %d records streamed through, not held (POST /v1/agreements/%s/stream)", o.Records, ag.ID))
	if err := measure(&res.Paths.Forward, rcv, 2*int64(o.Records), func() error {
		var sr share.SendResult
		if err := api.post(ctx, "/v1/agreements/"+ag.ID+"/stream", bytes.NewReader(data), &sr); err != nil {
			return err
		}
		return permitted("forward path", sr.Permitted, sr.Denied, sr.Invalid)
	}); err != nil {
		return res, err
	}
	if o.CPUProfile != nil {
		pprof.StopCPUProfile()
	}

	step("baseline again")
	b2, c2, err := baseline(ctx, emb, storeDir, data, "after")
	if err != nil {
		return res, err
	}
	res.BaselineRuns = []int{int(b1), int(b2)}
	res.BaselineMsgsPerS = (b1 + b2) / 2
	res.BaselineCPUMicrosPerMsg = (c1 + c2) / 2
	for _, p := range []*Path{&res.Paths.Stream, &res.Paths.Held, &res.Paths.Forward} {
		p.Ratio = p.RecordsPerS / res.BaselineMsgsPerS
	}
	st := res.Paths.Stream
	res.Seconds, res.SendSeconds, res.RecordsPerS, res.CPUMicrosPerRecord, res.Ratio = st.Seconds, st.sendSeconds, st.RecordsPerS, st.CPUMicrosPerRecord, st.Ratio

	step(fmt.Sprintf("latency: %d single records ingested under the continuous agreement", o.LatencySamples))
	lines := bytes.SplitAfter(bytes.TrimSuffix(samples, []byte("\n")), []byte("\n"))
	lat := make([]float64, 0, len(lines))
	for _, line := range lines {
		want := rcv.ReceivedRecords() + 1
		t0 := time.Now()
		var ir share.IngestResult
		if err := api.post(ctx, "/v1/ingest", bytes.NewReader(line), &ir); err != nil {
			return res, err
		}
		if ir.Stored != 1 {
			return res, fmt.Errorf("bench: latency sample not stored: %+v", ir)
		}
		if err := waitReceived(ctx, rcv, want, 10*time.Second); err != nil {
			return res, err
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
	}
	sort.Float64s(lat)
	res.P50ms = lat[len(lat)/2]
	res.P99ms = lat[(len(lat)*99)/100]
	return res, nil
}

// adminClient calls a node's admin API as the command-line client does.
type adminClient struct {
	base, token string
}

func newAdminClient(n *node.Node, dir string) (*adminClient, error) {
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		return nil, err
	}
	return &adminClient{base: "http://" + n.AdminAddr(), token: strings.TrimSpace(string(tok))}, nil
}

func (c *adminClient) post(ctx context.Context, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("bench: POST %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: POST %s: %s: %s", path, resp.Status, data)
	}
	return json.Unmarshal(data, out)
}

func waitReceived(ctx context.Context, n *node.Node, want int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for n.ReceivedRecords() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: receiver holds %d of %d records after %s", n.ReceivedRecords(), want, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
	}
	return nil
}

// baseline publishes every record of data as its own message with
// PublishAsync (at most 4096 in flight) to a file-backed stream with the
// exchange stream's settings, waits for every acknowledgement, and returns
// messages per second and the process's CPU time per message.
func baseline(ctx context.Context, emb *bus.Embedded, storeDir string, data []byte, name string) (msgsPerS, cpuPerMsg float64, err error) {
	runtime.GC() // the garbage of what ran before is not this phase's
	nc, err := bus.Connect(bus.ConnectOptions{Name: "bench-baseline", Embedded: emb})
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, 0, err
	}
	// The exchange stream's settings, but for the bound per subject: the
	// baseline publishes every record to one subject with nobody reading,
	// which the pipeline never does.
	cfg := bus.ExchangeStreamConfig(bus.Layout{Space: "baseline_" + name})
	cfg.MaxMsgsPerSubject, cfg.DiscardNewPerSubject, cfg.Discard = 0, false, jetstream.DiscardOld
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return 0, 0, fmt.Errorf("baseline stream: %w", err)
	}
	defer func() {
		if rerr := removeStream(js, storeDir, cfg.Name); rerr != nil && err == nil {
			err = rerr
		}
	}()
	subject := "eds.baseline_" + name + ".deliver.receiver.sender"
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	// A busy machine may keep the window full for longer than the default
	// stall wait (200 ms): wait, as a publisher would.
	stall := jetstream.WithStallWait(30 * time.Second)
	cpu0 := processCPU()
	start := time.Now()
	for _, l := range lines {
		if _, err := js.PublishAsync(subject, l, stall); err != nil {
			return 0, 0, fmt.Errorf("baseline publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		return 0, 0, fmt.Errorf("baseline: acknowledgements missing after 5 minutes")
	}
	secs := time.Since(start).Seconds()
	return float64(len(lines)) / secs, float64((processCPU() - cpu0).Microseconds()) / float64(len(lines)), nil
}

// removeStream deletes the baseline's stream and waits, up to 10 s, until
// the server has removed its files: it does so in the background, and the
// pipeline measured next must not pay for it.
func removeStream(js jetstream.JetStream, storeDir, name string) error {
	if err := js.DeleteStream(context.Background(), name); err != nil {
		return fmt.Errorf("remove baseline stream: %w", err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		found := false
		if err := filepath.WalkDir(storeDir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && d.Name() == name {
				found = true
				return filepath.SkipAll
			}
			return nil
		}); err != nil {
			return fmt.Errorf("remove baseline stream: %w", err)
		}
		if !found {
			return nil
		}
	}
	return nil
}

// Agreement is the bench's agreement: every field of the bench records
// may leave (direct identifiers tokenised), for research, up to L3.
func Agreement(now time.Time) *policy.Agreement {
	return &policy.Agreement{
		ID: "bench", Provider: "sender", Recipient: "receiver",
		Purpose: policy.PurposeResearch, LegalBasis: policy.BasisPublicInterest,
		RecordTypes: map[string][]string{"student": synth.StudentFields},
		MaxLevel:    schema.L3, RetentionDays: 30, BulkApproved: true,
		ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour),
	}
}
