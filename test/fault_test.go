package test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
	"github.com/eduspace/eduspace/test/wait"
)

// faultRecords are 10,200 course grades of 3,400 synthetic adult students,
// each identified by (student_id, course_code), and those students'
// student records: ingested first, they make every student a person the
// node knows (an unknown person's grade is decided as a minor's,
// person_unknown), so every grade is permitted under the fault agreement,
// which names course grades only. The synthetic juvenile class (under 14)
// is left out, student records and grades: a minor's grades need a
// guardian's consent.
func faultRecords(t *testing.T) (students, grades []byte, want map[[2]string]bool) {
	t.Helper()
	// 3,579 synthetic students, of whom 179 are in the juvenile class.
	students, grades, want = adultRecords(t, synth.Synth{Prefix: "2024999", Students: 3579, Seed: 7, Now: time.Now()})
	if len(want) != 10200 {
		t.Fatalf("%d distinct grades of adults; want 10,200", len(want))
	}
	return students, grades, want
}

// adultRecords are the student records and course grades sy writes of its
// adult students, each grade identified by (student_id, course_code); the
// juvenile class's (under 14 at sy.Now) are left out.
func adultRecords(t *testing.T, sy synth.Synth) (students, grades []byte, want map[[2]string]bool) {
	t.Helper()
	var all bytes.Buffer
	if _, err := sy.Write(&all); err != nil {
		t.Fatal(err)
	}
	var st, out bytes.Buffer
	want = map[[2]string]bool{}
	minors := map[string]bool{}
	sc := bufio.NewScanner(&all)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		id, _ := m["student_id"].(string)
		switch m["type"] {
		case "student":
			born, err := time.Parse(time.DateOnly, fmt.Sprint(m["birth_date"]))
			if err != nil {
				t.Fatal(err)
			}
			if born.After(sy.Now.AddDate(-14, 0, 0)) {
				minors[id] = true
				continue
			}
			st.Write(line)
			st.WriteByte('\n')
		case "course_grade":
			if minors[id] {
				continue
			}
			cc, _ := m["course_code"].(string)
			want[[2]string{id, cc}] = true
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return st.Bytes(), out.Bytes(), want
}

// studentsOf are the student records among students of the ids in grades.
func studentsOf(t *testing.T, students, grades []byte) []byte {
	t.Helper()
	ids := map[string]bool{}
	for _, line := range bytes.Split(bytes.TrimSpace(grades), []byte("\n")) {
		var r struct {
			StudentID string `json:"student_id"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		ids[r.StudentID] = true
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(students, []byte("\n")) {
		var r struct {
			StudentID string `json:"student_id"`
		}
		if json.Unmarshal(line, &r) == nil && ids[r.StudentID] {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// ingestStudents ingests the student records of the persons whose grades
// a test shares, and checks every one is stored.
func ingestStudents(ctx context.Context, t *testing.T, p *nodeProc, students []byte) {
	t.Helper()
	var ir struct{ Stored, Invalid int }
	n := bytes.Count(students, []byte("\n"))
	if err := p.call(ctx, http.MethodPost, "/v1/ingest", students, &ir); err != nil || ir.Stored != n {
		t.Fatalf("ingest the student records: %+v, %v; want %d stored", ir, err, n)
	}
}

func faultAgreement() []byte {
	now := time.Now()
	a := policy.Agreement{
		ID: "fault-verify", Provider: "uni-s", Recipient: "uni-r", Purpose: policy.PurposeEnrollmentVerification,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"course_grade": {"student_id", "course_code", "score"}},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(24 * time.Hour),
		BulkApproved: true, // 3,400 subjects at L3: rule V1 asks for bulk approval
	}
	data, _ := json.Marshal(a)
	return data
}

// storedSet reads what the receiver stored: every (student_id,
// course_code) and how many rows there are.
func storedSet(t *testing.T, dir string) (map[[2]string]bool, int) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT envelope_id, body FROM received`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	dk := dataKey(t, dir)
	got := map[[2]string]bool{}
	n := 0
	for rows.Next() {
		var eid string
		var body []byte
		if err := rows.Scan(&eid, &body); err != nil {
			t.Fatal(err)
		}
		if body, err = receive.OpenBody(dk, eid, body); err != nil {
			t.Fatal(err)
		}
		plain, err := envelope.ReceivedNDJSON(body)
		if err != nil {
			t.Fatal(err)
		}
		// An envelope whose every record was erased keeps an empty body.
		for line := range bytes.Lines(plain) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("a stored record is not JSON: %v", err)
			}
			id, _ := m["student_id"].(string)
			cc, _ := m["course_code"].(string)
			got[[2]string{id, cc}] = true
			n++
		}
	}
	return got, n
}

// faultRounds is how many faults a fault test injects: short, the
// default, for CI; EDUSPACE_FAULT_ROUNDS for the long form (test/FAULTS.md).
func faultRounds(t *testing.T, short int) int {
	t.Helper()
	v := os.Getenv("EDUSPACE_FAULT_ROUNDS")
	if v == "" {
		return short
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("EDUSPACE_FAULT_ROUNDS=%q: want a count of at least 1", v)
	}
	return n
}

// TestFaults kills, at random moments of a stream of 10,200 records, the
// sending node, the receiving node, and the NATS server, each restarted
// after. Every permitted record must be stored at the receiver exactly
// once: the sets are compared, and the row count must equal the set size.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level fault suite: skipped with -short")
	}
	for _, victim := range []string{"sender", "receiver", "nats"} {
		t.Run("kill "+victim, func(t *testing.T) { testFault(t, victim) })
	}
}

// faultRun is a fault test's setting: a sender and a receiver, each a
// process, on a nats-server process; a random source whose seed is
// logged; a deadline for the whole run.
type faultRun struct {
	ctx      context.Context
	rng      *rand.Rand
	s        *procSpace
	snd, rcv *nodeProc
}

// newFaultRun starts a fault test of rounds faults; its deadline grows
// with them, and the test's cleanup ends it.
func newFaultRun(t *testing.T, rounds int) *faultRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+time.Duration(rounds)*10*time.Second)
	t.Cleanup(cancel)
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	f := &faultRun{ctx: ctx, rng: rand.New(rand.NewPCG(seed, seed>>7)), s: newProcSpace(t)}
	f.snd, f.rcv = f.s.node("uni-s", 20), f.s.node("uni-r", 20)
	f.snd.startReady()
	f.rcv.startReady()
	return f
}

// finish waits for the exchange to settle (any duplicate still on its way
// arrives first), stops both nodes and compares what the receiver stored
// with want.
func (f *faultRun) finish(t *testing.T, want map[[2]string]bool) {
	t.Helper()
	wait.UntilErr(t, 60*time.Second, "the exchange to settle", func() error { return exchangeSettled(f.snd.admin, f.rcv.admin) })
	for _, p := range []*nodeProc{f.snd, f.rcv} {
		if err := p.stop(); err != nil {
			t.Error(err)
		}
	}
	assertExactlyOnce(t, f.rcv.dir, want)
}

func testFault(t *testing.T, victim string) {
	rounds := faultRounds(t, 3)
	f := newFaultRun(t, rounds)
	ctx, rng, s, snd, rcv := f.ctx, f.rng, f.s, f.snd, f.rcv

	students, data, want := faultRecords(t)
	ingestStudents(ctx, t, snd, students)
	var ir struct{ Stored, Invalid int }
	if err := snd.call(ctx, http.MethodPost, "/v1/ingest", data, &ir); err != nil || ir.Stored != len(want) {
		t.Fatalf("ingest: %+v, %v; want %d stored", ir, err, len(want))
	}
	for _, p := range []*nodeProc{snd, rcv} {
		if err := p.call(ctx, http.MethodPost, "/v1/agreements", faultAgreement(), nil); err != nil {
			t.Fatal(err)
		}
	}

	share := func() {
		go snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil)
	}
	// The faults come at random moments: the test paces them on purpose.
	pace := func(d time.Duration) {
		t.Helper()
		if err := wait.For(ctx, d); err != nil {
			t.Fatalf("pacing the faults: %v", err)
		}
	}
	share()
	for round := range rounds {
		pace(time.Duration(50+rng.IntN(700)) * time.Millisecond)
		switch victim {
		case "sender":
			snd.kill()
			snd.startReady()
			share() // what the killed share had not committed is still unshared
		case "receiver":
			rcv.kill()
			pace(time.Duration(rng.IntN(300)) * time.Millisecond)
			rcv.startReady()
		case "nats":
			s.nats.kill()
			pace(time.Duration(100+rng.IntN(500)) * time.Millisecond)
			s.nats.start()
		}
		t.Logf("round %d: killed %s; receiver holds %d", round, victim, rcv.received(ctx))
	}
	// A last share after the faults: it finds only records not yet shared.
	wait.Until(t, 20*time.Second, "sender ready", func() bool {
		return snd.call(ctx, http.MethodGet, "/readyz", nil, nil) == nil
	})
	if err := snd.call(ctx, http.MethodPost, "/v1/shares", []byte(`{"agreement":"fault-verify"}`), nil); err != nil {
		t.Fatalf("final share: %v", err)
	}
	wait.UntilErr(t, 90*time.Second, "every record at the receiver", func() error {
		if got := rcv.received(ctx); got < int64(len(want)) {
			return fmt.Errorf("receiver holds %d of %d records", got, len(want))
		}
		return nil
	})
	f.finish(t, want)
}

// assertExactlyOnce compares what the receiver in dir stored with want:
// every record there, none twice, nothing else.
func assertExactlyOnce(t *testing.T, dir string, want map[[2]string]bool) {
	t.Helper()
	got, rows := storedSet(t, dir)
	if rows != len(want) || len(got) != len(want) {
		t.Errorf("receiver stored %d rows, %d distinct records; want exactly %d", rows, len(got), len(want))
	}
	missing, extra := 0, 0
	for k := range want {
		if !got[k] {
			missing++
		}
	}
	for k := range got {
		if !want[k] {
			extra++
		}
	}
	if missing > 0 || extra > 0 {
		t.Errorf("%d records missing, %d unexpected at the receiver", missing, extra)
	}
}
