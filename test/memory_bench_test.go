package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bench"
	"github.com/eduspace/eduspace/schema/synth"
)

// BenchmarkStreamMemory streams records under an agreement through the
// admin API, as `eduspace share --agreement ID FILE` does, and reports the
// process's resident memory (both nodes and the NATS server) after 50,000
// records and after 1,000,000 more: a stream's memory must stay flat, not
// grow with its length. The 1,000,000 are 50,000 students' records
// twenty times over (rule V2 counts students, not records).
//
//	go test ./test/ -run '^$' -bench StreamMemory -benchtime 1x
func BenchmarkStreamMemory(b *testing.B) {
	data, _ := synth.Students(50_000, 1)
	memoryRun(b, false, "/v1/agreements/"+bench.Agreement(time.Now()).ID+"/stream", func(copies int) io.Reader {
		var parts []io.Reader
		for range copies {
			parts = append(parts, bytes.NewReader(data))
		}
		return io.MultiReader(parts...)
	})
}

// memoryRun opens uni-a and uni-b under the bench's agreement (continuous
// when asked), POSTs to uni-a's path the body of 50,000 records, then of
// 1,000,000 more (body(k): k × 50,000 records), waits each time until
// uni-b holds them, and reports the process's resident memory after each.
func memoryRun(b *testing.B, continuous bool, path string, body func(copies int) io.Reader) {
	for b.Loop() {
		ctx := context.Background()
		s := newSpace(b)
		a := s.member("uni-a", crypto.SuiteX25519)
		r := s.member("uni-b", crypto.SuiteX25519)
		ag := bench.Agreement(s.now)
		ag.Provider, ag.Recipient, ag.Continuous = "uni-a", "uni-b", continuous
		for _, n := range []*node.Node{a, r} {
			if err := n.AddAgreement(ctx, ag); err != nil {
				b.Fatal(err)
			}
		}
		tok, err := os.ReadFile(filepath.Join(s.conf["uni-a"].DataDir, "admin.token"))
		if err != nil {
			b.Fatal(err)
		}
		total := int64(0)
		post := func(copies int) {
			req, _ := http.NewRequest(http.MethodPost, "http://"+a.AdminAddr()+path, body(copies))
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("POST %s: %s %s", path, resp.Status, answer)
			}
			total += int64(copies * 50_000)
			for deadline := time.Now().Add(20 * time.Minute); r.ReceivedRecords() < total; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatalf("uni-b holds %d of %d records", r.ReceivedRecords(), total)
				}
			}
		}
		post(1)
		small := rss(b)
		post(20)
		large := rss(b)
		b.ReportMetric(small/(1<<20), "MiB_rss_after_50k")
		b.ReportMetric(large/(1<<20), "MiB_rss_after_1.05M")
		b.ReportMetric(large/small, "rss_ratio")
		b.Logf("resident memory %.0f MiB after 50,000 records, %.0f MiB after 1,050,000 (×%.2f)", small/(1<<20), large/(1<<20), large/small)
	}
}

// rss is the process's resident memory in bytes, after a collection has
// returned what it can to the system.
func rss(b *testing.B) float64 {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatal(fmt.Errorf("no VmRSS in /proc/self/status"))
	return 0
}

// BenchmarkIngestStreamMemory is BenchmarkStreamMemory for the stream
// path: records POSTed to /v1/ingest (`eduspace ingest`) under a
// continuous agreement, held and shared as they are stored. The 1,000,000
// records are twenty versions of the same 50,000 students' records
// (each version different in the fields other than the student number,
// so each is a record of its own), generated as the request reads them.
//
//	go test ./test/ -run '^$' -bench IngestStreamMemory -benchtime 1x
func BenchmarkIngestStreamMemory(b *testing.B) {
	seed := uint64(100)
	memoryRun(b, true, "/v1/ingest", func(versions int) io.Reader {
		var parts []io.Reader
		for range versions {
			parts = append(parts, &studentsReader{n: 50_000, seed: seed})
			seed++
		}
		return io.MultiReader(parts...)
	})
}

// studentsReader reads synth.Students(n, seed), made at the first read
// and dropped at the end.
type studentsReader struct {
	n    int
	seed uint64
	data []byte
	done bool
}

func (s *studentsReader) Read(p []byte) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	if s.data == nil {
		s.data, _ = synth.Students(s.n, s.seed)
	}
	k := copy(p, s.data)
	if s.data = s.data[k:]; len(s.data) == 0 {
		s.done, s.data = true, nil
	}
	return k, nil
}
