package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// TestFaultsWithdrawal: consent withdrawals under random kills. 300
// students consent to a research study; their course grades are shared
// while ten at a time withdraw (60 in the short form), between kills of
// the sender, the receiver and the NATS server in turn (each restarted
// after). At the end the receiver holds exactly the grades of those who
// did not withdraw, each once; every erasure is confirmed; nothing withdrawn came back, in
// whatever order erasures and records reached the receiver.
func TestFaultsWithdrawal(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	f := newFaultRun(t, faultRounds(t, 6))
	ctx, rng, s, snd, rcv := f.ctx, f.rng, f.s, f.snd, f.rcv

	// The grades of the first 300 students of the fault records.
	known, all, _ := faultRecords(t)
	var data bytes.Buffer
	grades := map[string][]string{} // student → course codes
	var students []string
	for _, line := range bytes.Split(bytes.TrimSpace(all), []byte("\n")) {
		var m map[string]any
		json.Unmarshal(line, &m)
		id, _ := m["student_id"].(string)
		cc, _ := m["course_code"].(string)
		if _, ok := grades[id]; !ok {
			if len(students) == 300 {
				continue
			}
			students = append(students, id)
		}
		grades[id] = append(grades[id], cc)
		data.Write(line)
		data.WriteByte('\n')
	}
	ingestStudents(ctx, t, snd, studentsOf(t, known, data.Bytes()))
	var ir struct{ Stored int }
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", data.Bytes(), &ir); err != nil || ir.Stored == 0 {
		t.Fatalf("ingest: %+v, %v", ir, err)
	}
	now := time.Now()
	ag, _ := json.Marshal(policy.Agreement{ID: "fault-study", Provider: "uni-s", Recipient: "uni-r", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisConsent, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour)})
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", ag, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range students {
		c, _ := json.Marshal(policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
			Recipients: []string{"uni-r"}, Granted: now.Add(-time.Minute)})
		if err := snd.call(ctx, http.MethodPost, "/v1/consents", c, nil); err != nil {
			t.Fatalf("consent of a student: %v", err)
		}
	}

	share := func() {
		go snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-study"}`), nil)
	}
	pace := func(d time.Duration) {
		t.Helper()
		if err := wait.For(ctx, d); err != nil {
			t.Fatalf("pacing the faults: %v", err)
		}
	}
	withdrawn := map[string]bool{}
	order := rng.Perm(len(students))
	rounds := min(faultRounds(t, 6), len(students)/10)
	share()
	for round := range rounds {
		pace(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		for _, i := range order[round*10 : round*10+10] {
			id := students[i]
			wait.UntilErr(t, 30*time.Second, "a withdrawal taken", func() error {
				return snd.call(ctx, http.MethodPost, "/v1/consents/c-"+id+"/withdraw", nil, nil)
			})
			withdrawn[id] = true
		}
		pace(time.Duration(rng.IntN(300)) * time.Millisecond)
		victim := []string{"sender", "receiver", "nats"}[round%3]
		switch victim {
		case "sender":
			snd.kill()
			snd.startReady()
		case "receiver":
			rcv.kill()
			pace(time.Duration(rng.IntN(300)) * time.Millisecond)
			rcv.startReady()
		case "nats":
			s.nats.kill()
			pace(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			s.nats.start()
		}
		share()
		t.Logf("round %d: 10 withdrawn, killed %s; receiver holds %d", round, victim, rcv.received(ctx))
	}
	wait.Until(t, 20*time.Second, "sender ready", func() bool {
		return snd.call(ctx, http.MethodGet, "/readyz", nil, nil) == nil
	})
	if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-study"}`), nil); err != nil {
		t.Fatalf("final share: %v", err)
	}

	// What the receiver must hold: the grades of those who stayed, under
	// the tokens the sender gives uni-r.
	sk, err := keys.LoadKeys(snd.dir)
	if err != nil {
		t.Fatal(err)
	}
	tk := crypto.TokenKey(sk.Derive("tokens"), "uni-r")
	want := map[[2]string]bool{}
	gone := map[string]bool{}
	for _, id := range students {
		for _, cc := range grades[id] {
			if withdrawn[id] {
				gone[crypto.Token(tk, id)] = true
			} else {
				want[[2]string{crypto.Token(tk, id), cc}] = true
			}
		}
	}
	wait.UntilErr(t, 90*time.Second, "every erasure confirmed and the exchange settled", func() error {
		if v := metric(snd.admin, "eduspace_erasures_open"); v != "0" {
			return fmt.Errorf("erasures open at the sender: %s", v)
		}
		return exchangeSettled(snd.admin, rcv.admin)
	})
	wait.UntilErr(t, 60*time.Second, "the receiver to hold what stayed", func() error {
		if got := rcv.received(ctx); got != int64(len(want)) {
			return fmt.Errorf("receiver holds %d records, want %d", got, len(want))
		}
		return nil
	})
	f.finish(t, want)
	got, _ := storedSet(t, rcv.dir)
	for k := range got {
		if gone[k[0]] {
			t.Errorf("a withdrawn student's grade is at the receiver")
			break
		}
	}
}

// metric is the value of the series named exactly series in the metrics
// a node serves at addr, "absent" when there is none.
func metric(addr, series string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return "absent"
}
