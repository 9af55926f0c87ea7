package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/test/wait"
)

// TestFaultsRestore: the sender's database is restored from a backup
// taken several thousand records earlier, after it was killed. It fails
// closed until `eduspace node recover` has asked the receiver what it
// holds; then the operator ingests again what the copy lost and more,
// shares, and the receiver holds every record exactly once.
func TestFaultsRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	f := newFaultRun(t, 1)
	ctx, s, snd, rcv := f.ctx, f.s, f.snd, f.rcv
	students, data, want := faultRecords(t)
	ingestStudents(ctx, t, snd, students)
	lines := bytes.SplitAfter(bytes.TrimSpace(data), []byte("\n"))
	part := func(from, to int) []byte { return bytes.Join(lines[from:min(to, len(lines))], nil) }
	before, after, later := part(0, 2000), part(2000, 6000), part(6000, len(lines))
	cfgPath := filepath.Join(s.dir, "uni-s.yaml")

	ingestShare := func(what string, records []byte, want int64) {
		t.Helper()
		var ir struct{ Stored int }
		if err := snd.call(ctx, http.MethodPost, "/v1/ingest", records, &ir); err != nil {
			t.Fatalf("ingest %s: %v", what, err)
		}
		if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil); err != nil {
			t.Fatalf("share %s: %v", what, err)
		}
		wait.UntilErr(t, 90*time.Second, what+" at the receiver", func() error {
			if got := rcv.received(ctx); got != want {
				return fmt.Errorf("receiver holds %d records, want %d", got, want)
			}
			return nil
		})
	}
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", faultAgreement(), nil); err != nil {
			t.Fatal(err)
		}
	}
	ingestShare("the first 2,000", before, 2000)
	backup := filepath.Join(t.TempDir(), "uni-s.db")
	if out, err := exec.Command(s.bin, "node", "backup", "--config", cfgPath, "--out", backup).CombinedOutput(); err != nil {
		t.Fatalf("node backup: %v\n%s", err, out)
	}
	ingestShare("4,000 more after the backup", after, 6000)
	// The sender's newest checkpoint on the space covers the shares after
	// the backup; then it is killed, and restored from the backup.
	wait.Until(t, 60*time.Second, "the sender's log covered by a checkpoint", func() bool {
		resp, err := http.Get("http://" + snd.admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		m, _ := io.ReadAll(resp.Body)
		return bytes.Contains(m, []byte("\neduspace_checkpoint_age_seconds 0\n"))
	})
	snd.kill()
	restoreCopy(t, snd.dir, backup)
	snd.start()
	wait.Until(t, 30*time.Second, "the restored sender failing closed", func() bool {
		return strings.Contains(snd.readyProblem(), "restored from an older copy")
	})

	out, err := exec.CommandContext(ctx, s.bin, "node", "recover", "--config", cfgPath, "--timeout", "60s").CombinedOutput()
	t.Logf("node recover:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("recovered: sending again")) || !bytes.Contains(out, []byte("(4000 records) it holds were sent after the copy")) {
		t.Fatalf("node recover: %v; want the 4,000 records shared after the copy reported", err)
	}
	wait.Until(t, 30*time.Second, "the sender ready after recovering", func() bool { return snd.readyProblem() == "" })

	// The operator ingests again what the copy lost, and more: the
	// receiver drops what it holds already and stores the rest.
	ingestShare("everything", append(append([]byte(nil), after...), later...), int64(len(want)))
	f.finish(t, want)
}

// TestFaultsRestoreFoundByReplay: the sender is killed and restored from a
// backup newer than its newest checkpoint on the space, so nothing tells
// the restore at start. Its next share reuses sequence numbers the
// receiver holds other envelopes under: refused as replayed, which fails
// the sender closed, across a restart. Recovered, it shares again, and the
// receiver holds every record once.
func TestFaultsRestoreFoundByReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newProcSpace(t)
	snd, rcv := s.node("uni-s", 20), s.node("uni-r", 20)
	cfgPath := filepath.Join(s.dir, "uni-s.yaml")
	// One checkpoint, at start: the backup below is newer than it.
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(cfg, "checkpoint:\n  interval: 1h\n  max_age: 2h\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	snd.startReady()
	rcv.startReady()
	f := &faultRun{ctx: ctx, s: s, snd: snd, rcv: rcv}

	students, data, want := faultRecords(t)
	lines := bytes.SplitAfter(bytes.TrimSpace(data), []byte("\n"))
	first := bytes.Join(lines[:3000], nil)
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", faultAgreement(), nil); err != nil {
			t.Fatal(err)
		}
	}
	ingestStudents(ctx, t, snd, students)
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", first, nil); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "uni-s.db")
	if out, err := exec.Command(s.bin, "node", "backup", "--config", cfgPath, "--out", backup).CombinedOutput(); err != nil {
		t.Fatalf("node backup: %v\n%s", err, out)
	}
	share := func() {
		t.Helper()
		if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil); err != nil {
			t.Fatalf("share: %v", err)
		}
	}
	share()
	wait.Until(t, 60*time.Second, "3,000 records at the receiver", func() bool { return rcv.received(ctx) == 3000 })
	snd.kill()
	restoreCopy(t, snd.dir, backup)
	snd.startReady() // nothing on the space is newer than the copy yet

	// Under sequence numbers the receiver has seen: the share may fail
	// itself, once the first refusals come back and the log freezes.
	snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil)
	wait.Until(t, 60*time.Second, "the sender failing closed on the replay refusals", func() bool {
		return strings.Contains(snd.readyProblem(), "replayed")
	})
	// A restart does not clear it.
	snd.kill()
	snd.start()
	wait.Until(t, 30*time.Second, "the restarted sender still failing closed", func() bool {
		return strings.Contains(snd.readyProblem(), "replayed")
	})
	out, err := exec.CommandContext(ctx, s.bin, "node", "recover", "--config", cfgPath, "--timeout", "60s").CombinedOutput()
	t.Logf("node recover:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("recovered: sending again")) || !bytes.Contains(out, []byte("no entry the space attests was lost")) {
		t.Fatalf("node recover: %v", err)
	}
	wait.Until(t, 30*time.Second, "the sender ready after recovering", func() bool { return snd.readyProblem() == "" })

	// What the refusals returned is shared again and dropped by the
	// receiver; the rest is new.
	share()
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", bytes.Join(lines[3000:], nil), nil); err != nil {
		t.Fatal(err)
	}
	share()
	wait.UntilErr(t, 90*time.Second, "every record at the receiver", func() error {
		if got := rcv.received(ctx); got != int64(len(want)) {
			return fmt.Errorf("receiver holds %d records, want %d", got, len(want))
		}
		return nil
	})
	f.finish(t, want)
}
