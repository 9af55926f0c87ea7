package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/test/wait"
)

// readyProblem is a node process's /readyz: "" when ready, else its
// status and detail.
func (p *nodeProc) readyProblem() string {
	resp, err := http.Get("http://" + p.admin + "/readyz")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return ""
	}
	var prob struct{ Detail string }
	body, _ := io.ReadAll(resp.Body)
	json.Unmarshal(body, &prob)
	return fmt.Sprintf("%d %s", resp.StatusCode, prob.Detail)
}

// largestFile is the size of the largest file in dir.
func largestFile(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var most int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			most = max(most, fi.Size())
		}
	}
	return most
}

// TestFullDisk: the receiving node runs out of room for its database (a
// file size limit, RLIMIT_FSIZE, stands in for a full disk: writes past
// it fail as they do on a full one) in the middle of an exchange. It
// stores nothing it cannot, acknowledges nothing it did not store,
// answers /readyz 503 saying why; once there is room it recovers by
// itself, and every record is there exactly once.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not on PATH: skipping the full-disk test")
	}
	f := newFaultRun(t, 1)
	ctx, snd, rcv := f.ctx, f.snd, f.rcv
	students, data, want := faultRecords(t)
	ingestStudents(ctx, t, snd, students)
	var ir struct{ Stored int }
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", data, &ir); err != nil || ir.Stored != len(want) {
		t.Fatalf("ingest: %+v, %v; want %d stored", ir, err, len(want))
	}
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", faultAgreement(), nil); err != nil {
			t.Fatal(err)
		}
	}

	// Restart the receiver with room for a little more than it holds.
	if err := rcv.stop(); err != nil {
		t.Fatal(err)
	}
	limit := largestFile(t, rcv.dir) + 256<<10
	rcv.args = append([]string{"/bin/sh", "-c", "ulimit -S -f " + strconv.FormatInt(limit/512, 10) + ` && exec "$0" "$@"`}, rcv.args...)
	rcv.startReady()
	if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil); err != nil {
		t.Fatalf("share: %v", err)
	}
	var problem string
	wait.UntilErr(t, 60*time.Second, "the receiver to say it cannot write", func() error {
		if problem = rcv.readyProblem(); !strings.Contains(problem, "503") {
			return fmt.Errorf("receiver /readyz: %q, holds %d records", problem, rcv.received(ctx))
		}
		return nil
	})
	t.Logf("out of room: /readyz %s; receiver holds %d of %d", problem, rcv.received(ctx), len(want))
	if got := rcv.received(ctx); got >= int64(len(want)) {
		t.Fatalf("the receiver stored all %d records within its limit: make the limit smaller", got)
	}

	// Make room: lift the limit of the running process.
	if out, err := exec.Command(prlimit, "--pid", strconv.Itoa(rcv.cmd.Process.Pid), "--fsize=unlimited:unlimited").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	wait.UntilErr(t, 90*time.Second, "every record at the receiver after room was made", func() error {
		if got := rcv.received(ctx); got < int64(len(want)) {
			return fmt.Errorf("receiver holds %d of %d records (/readyz %q)", got, len(want), rcv.readyProblem())
		}
		return nil
	})
	wait.UntilErr(t, 30*time.Second, "the receiver ready again", func() error {
		if p := rcv.readyProblem(); p != "" {
			return fmt.Errorf("/readyz %s", p)
		}
		return nil
	})
	f.finish(t, want)
}

// TestDamagedDatabaseStopsStart: a node whose database file was damaged
// while it was stopped does not start: it exits non-zero at once, saying
// the database is damaged and to restore it from a backup.
func TestDamagedDatabaseStopsStart(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	s := newProcSpace(t)
	n := s.node("uni-d", 20)
	n.startReady()
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(n.dir, "node.db")
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database ", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a node with a damaged database did not exit within 20s")
	}
	if n.cmd.ProcessState.Success() {
		t.Error("a node with a damaged database exited 0")
	}
	out, _ := os.ReadFile(n.log)
	if !strings.Contains(string(out), "is damaged") || !strings.Contains(string(out), "restore it from a backup") {
		t.Errorf("its output does not say the database is damaged and what to do:\n%s", out)
	}
	n.cmd = nil
}
