package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// TestDataKeyRotation: a provider rotates its data key through the admin
// API and is stopped after the first page of records was re-sealed under
// the new key; at its next start it re-seals the rest, compacts its
// database and retires the old key. A recipient rotates without a stop.
// Afterwards every held record, consent and received record reads back,
// the old keys' files are gone, no database file holds a value sealed
// under an old key (nor a personal value in clear), and each evidence log
// records the rotation's start and end.
func TestDataKeyRotation(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	fast := node.Env{DataKey: node.DataKeyOptions{Grace: time.Millisecond}}
	a := s.memberEnv("uni-a", crypto.SuiteX25519, fast)
	b := s.memberEnv("uni-b", crypto.SuiteX25519, fast)
	dirA, dirB := s.conf["uni-a"].DataDir, s.conf["uni-b"].DataDir
	ag := agreeGrades(t, "rotate", s.now, a, b)
	var in strings.Builder
	var secrets []string
	const students = 600 // a student record and a grade each; records go 500 to a page: three pages
	for i := range students {
		id := fmt.Sprintf("RK%07d", 4100000+i)
		secrets = append(secrets, id)
		in.WriteString(knownStudents(id))
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":%q,"course_code":"CS101","score":%d}`+"\n", id, 50+i%50)
	}
	if res, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil || res.Stored != 2*students {
		t.Fatalf("ingest: %+v, %v", res, err)
	}
	if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "consent-rk", Subject: secrets[0], Purpose: policy.PurposeCreditTransfer,
		Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	shareAndWait(t, a, b, ag.ID, students)
	oldA, oldB := dataKey(t, dirA).ID(), dataKey(t, dirB).ID()

	// The recipient: rotated while running, to the end.
	var st keys.DataKeyState
	if resp := adminCall(t, b, dirB, http.MethodPost, "/v1/data-key/rotate", "", &st); resp.StatusCode != http.StatusAccepted || st.Current == oldB {
		t.Fatalf("rotate uni-b's data key: %s %+v", resp.Status, st)
	}
	wait.Until(t, 30*time.Second, "uni-b to retire its old data key", func() bool {
		st, err := b.DataKeyState(ctx)
		return err == nil && st.State == "idle" && len(st.Retiring) == 0
	})
	var out bytes.Buffer
	if res, err := b.ExportReceived(ctx, receive.ExportOptions{Agreement: ag.ID}, &out); err != nil || res.Records != students {
		t.Fatalf("uni-b's export after the rotation: %+v, %v", res, err)
	}

	// The provider: rotated, and stopped once the first page is re-sealed.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	paused := make(chan struct{})
	var once sync.Once
	a = s.open("uni-a", node.Env{DataKey: node.DataKeyOptions{Grace: time.Hour, Page: func(ctx context.Context) {
		once.Do(func() { close(paused) })
		<-ctx.Done() // until the node stops
	}}})
	if resp := adminCall(t, a, dirA, http.MethodPost, "/v1/data-key/rotate", "", &st); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("rotate uni-a's data key: %s", resp.Status)
	}
	resp := adminCall(t, a, dirA, http.MethodPost, "/v1/data-key/rotate", "", nil)
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("a second rotation while the first is under way: %s, want 409", resp.Status)
	}
	select {
	case <-paused:
	case <-time.After(30 * time.Second):
		t.Fatal("uni-a re-sealed no page")
	}
	newA := st.Current
	// Records ingested meanwhile are sealed under the new key at once.
	const later = 10
	in.Reset()
	for i := range later {
		fmt.Fprintf(&in, `{"type":"course_grade","student_id":"RL%07d","course_code":"CS102","score":60}`+"\n", i)
	}
	if res, err := a.Ingest(ctx, strings.NewReader(in.String()), ""); err != nil || res.Stored != later {
		t.Fatalf("ingest during the rotation: %+v, %v", res, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	under := sealedUnder(t, dirA, "records", "body")
	if under[oldA] == 0 || under[newA] < later || under[oldA]+under[newA] != 2*students+later {
		t.Fatalf("after the stop, held records by key: %v; want some under the old key %s and the rest, the %d new ones too, under the new %s",
			under, oldA, later, newA)
	}
	if got := len(heldRecords(t, dirA, "course_grade")); got != students+later {
		t.Fatalf("mid-rotation, %d held records read back, want %d", got, students+later)
	}

	// The next start goes on and finishes.
	a = s.open("uni-a", fast)
	wait.Until(t, 30*time.Second, "uni-a to retire its old data key", func() bool {
		st, err := a.DataKeyState(ctx)
		return err == nil && st.Current == newA && st.State == "idle" && len(st.Retiring) == 0
	})
	var ledger []policy.ConsentRecord
	if resp := adminCall(t, a, dirA, http.MethodGet, "/v1/consents", "", &ledger); resp.StatusCode != http.StatusOK || len(ledger) != 1 || ledger[0].Subject != secrets[0] {
		t.Errorf("uni-a's ledger after the rotation: %s %+v", resp.Status, ledger)
	}
	for _, n := range []*node.Node{a, b} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(heldRecords(t, dirA, "course_grade")); got != students+later {
		t.Errorf("after the rotation, %d held records read back, want %d", got, students+later)
	}
	for dir, old := range map[string]string{dirA: oldA, dirB: oldB} {
		if _, err := os.Stat(filepath.Join(dir, "keys", "data.key."+old+".pem")); !os.IsNotExist(err) {
			t.Errorf("%s: the old data key's file is still there: %v", dir, err)
		}
		if f := sealedBytes(t, dir, old); len(f) > 0 {
			t.Errorf("%s: values sealed under the retired key %s remain in %v", dir, old, f)
		}
		for _, f := range inClear(t, dir, secrets[:20]) {
			t.Errorf("%s: %s", dir, f)
		}
		reasons := map[string]int{}
		for _, e := range nodetest.Evidence(t, dir) {
			if e["kind"] == "data_key" {
				reasons[fmt.Sprint(e["reason"])]++
			}
		}
		if reasons["rotation_started"] != 1 || reasons["rotation_finished"] < 1 {
			t.Errorf("%s: data key evidence %v; want one rotation_started and a rotation_finished", dir, reasons)
		}
	}
	if under := sealedUnder(t, dirA, "records", "body"); under[newA] != 2*students+later || len(under) != 1 {
		t.Errorf("held records by key after the rotation: %v; want all %d under %s", under, 2*students+later, newA)
	}
}

// sealedUnder counts the values of table.column in the database in dir
// by the id of the data key that sealed them ("" for values in clear).
func sealedUnder(t *testing.T, dir, table, column string) map[string]int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(fmt.Sprintf(`SELECT %s FROM %s`, column, table))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var v []byte
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		id := ""
		if keys.IsSealed(v) && len(v) >= 6 {
			id = hex.EncodeToString(v[2:6])
		}
		out[id]++
	}
	return out
}

// sealedBytes lists the database files in dir holding the start of a
// value sealed under the key with id: the mark ED A7 and the id.
func sealedBytes(t *testing.T, dir, id string) []string {
	t.Helper()
	mark, err := hex.DecodeString("eda7" + id)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	files, _ := filepath.Glob(filepath.Join(dir, "node.db*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if k := bytes.Count(data, mark); k > 0 {
			found = append(found, fmt.Sprintf("%s (%d)", filepath.Base(f), k))
		}
	}
	return found
}
