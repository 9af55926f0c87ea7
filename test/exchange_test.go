package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"github.com/nats-io/nats.go"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

const space = "e2e"

// space is an authority and an embedded NATS server in a temp directory.
type testSpace struct {
	t    testing.TB
	dir  string
	ak   *crypto.AuthorityKey
	emb  *bus.Embedded
	now  time.Time
	conf map[string]node.Config
}

func newSpace(t testing.TB) *testSpace {
	t.Helper()
	dir := t.TempDir()
	if _, err := authority.Init(filepath.Join(dir, "authority")); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	emb, err := bus.StartEmbedded(filepath.Join(dir, "nats"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return &testSpace{t: t, dir: dir, ak: ak, emb: emb, now: time.Now(), conf: map[string]node.Config{}}
}

// member creates a node's keys and credential and opens it, connected to
// the space's server over loopback TCP.
func (s *testSpace) member(id string, suite crypto.SuiteID, edit ...func(*node.Config)) *node.Node {
	return s.memberEnv(id, suite, node.Env{}, edit...)
}

// memberEnv is member with the node's environment (its clock) given.
func (s *testSpace) memberEnv(id string, suite crypto.SuiteID, env node.Env, edit ...func(*node.Config)) *node.Node {
	s.t.Helper()
	return s.memberAs(id, crypto.RoleUniversity, suite, env, edit...)
}

// memberAs is memberEnv for a member of the given role.
func (s *testSpace) memberAs(id string, role crypto.Role, suite crypto.SuiteID, env node.Env, edit ...func(*node.Config)) *node.Node {
	s.t.Helper()
	nd := filepath.Join(s.dir, id)
	if _, err := authority.Provision(s.ak, nd, id, suite, authority.Member{
		Space: space, Institution: "Institution " + id, Role: role, Valid: time.Hour}, s.now); err != nil {
		s.t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir = id, space, nd
	cfg.AuthorityKey = filepath.Join(s.dir, "authority", authority.PublicKeyFile)
	cfg.NATS.URL = s.emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Suite = suite.String()
	cfg.Batch.MaxRecords = 10
	for _, e := range edit {
		e(&cfg)
	}
	s.conf[id] = cfg
	n, err := node.Open(context.Background(), cfg, env)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if err := n.Close(); err != nil {
			s.t.Errorf("close %s: %v", id, err)
		}
	})
	return n
}

func residentID(body17 string) string {
	w := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, c := range body17 {
		sum += int(c-'0') * w[i]
	}
	return body17 + string("10X98765432"[sum%11])
}

// records: 25 adult students with grades, 2 students under 14, one invalid
// record.
func records(now time.Time) (string, int) {
	var b strings.Builder
	for i := 0; i < 27; i++ {
		birth := now.AddDate(-20, 0, -i)
		if i >= 25 {
			birth = now.AddDate(-12, 0, -i)
		}
		fmt.Fprintf(&b, `{"type":"student","student_id":"S%04d","name":"张%d","gender":"女","birth_date":%q,"id_type":"resident_id","id_number":%q,"religion":"none"}`+"\n",
			i, i, birth.Format("2006-01-02"), residentID("110101"+birth.Format("20060102")+"123"))
		// The two minors' grades would be theirs too, and need a guardian's
		// consent (TestMinorAcrossRecordTypes): the 27 grades are adults',
		// two of them a second course's.
		student, course := i, "CS201"
		if i >= 25 {
			student, course = i-25, "CS202"
		}
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S%04d","course_code":%q,"course_name":"数据结构","credits":4,"term":"2025-2026-1","score":%d}`+"\n", student, course, 60+i)
	}
	b.WriteString(`{"type":"student","student_id":"BAD","id_type":"resident_id","id_number":"110101200001011230"}` + "\n")
	return b.String(), 27 * 2
}

func received(t *testing.T, dir string) []map[string]any {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT envelope_id, type, body FROM received ORDER BY envelope_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	dk := dataKey(t, dir)
	var out []map[string]any
	for rows.Next() {
		var eid, typ string
		var body []byte
		if err := rows.Scan(&eid, &typ, &body); err != nil {
			t.Fatal(err)
		}
		if body, err = receive.OpenBody(dk, eid, body); err != nil {
			t.Fatal(err)
		}
		plain, err := envelope.ReceivedNDJSON(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(plain), []byte("\n")) {
			m := map[string]any{}
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			m["_type"] = typ
			out = append(out, m)
		}
	}
	return out
}

// TestTwoNodeExchange runs the whole way of a record between two nodes:
// ingest with validation, decisions, sealing, JetStream, verification,
// storing, evidence on both sides; then a repeated share sends nothing
// twice, and forged deliveries are refused and counted.
func TestTwoNodeExchange(t *testing.T) {
	for _, suite := range []crypto.SuiteID{crypto.SuiteXWing, crypto.SuiteX25519} {
		t.Run(suite.String(), func(t *testing.T) { testExchange(t, suite) })
	}
}

func testExchange(t *testing.T, suite crypto.SuiteID) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", suite)
	b := s.member("uni-b", suite)

	data, valid := records(s.now)
	ir, err := a.Ingest(ctx, strings.NewReader(data), "")
	if err != nil {
		t.Fatal(err)
	}
	if ir.Stored != valid || ir.Invalid != 1 || len(ir.Errors) != 1 || ir.Errors[0].Reason != "checksum" || ir.Errors[0].Index != valid {
		t.Fatalf("ingest: got %+v, want %d stored and one checksum error at index %d", ir, valid, valid)
	}
	if again, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil || again.Stored != 0 || again.Duplicate != valid {
		t.Fatalf("re-ingest: got %+v, %v; want every record a duplicate", again, err)
	}

	ag := &policy.Agreement{
		ID: "a-to-b", Provider: "uni-a", Recipient: "uni-b", Purpose: policy.PurposeCreditTransfer,
		LegalBasis: policy.BasisContract,
		RecordTypes: map[string][]string{
			"student":      {"student_id", "name", "birth_date"},
			"course_grade": {"student_id", "course_code", "score"},
		},
		MaxLevel: schema.L3, Transforms: map[string]policy.Transform{"birth_date": policy.TransformGeneraliseYear},
		RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour),
	}
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	sr, err := a.Share(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	// 27 grades and 25 adult students leave; the two minors' student
	// records need guardian consent.
	if sr.Permitted != 52 || sr.Denied[string(policy.ReasonMinorNeedsGuardian)] != 2 || len(sr.Denied) != 1 {
		t.Fatalf("share: got %+v, want 52 permitted and 2 denied minor_needs_guardian", sr)
	}
	wait.Until(t, 20*time.Second, "52 records at uni-b", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 52
	})

	// Every envelope comes back with a signed receipt; no sequence is missing.
	wait.Until(t, 20*time.Second, "receipts for every envelope at uni-a", func() bool {
		m := nodetest.Scrape(t, a)
		return strings.Contains(m, fmt.Sprintf("eduspace_receipts_received_total %d\n", sr.Envelopes)) &&
			strings.Contains(m, "eduspace_envelopes_awaiting_receipt 0\n")
	})
	if m := nodetest.Scrape(t, b); !strings.Contains(m, "eduspace_sequence_missing 0\n") {
		t.Errorf("uni-b reports missing sequence numbers")
	}

	got := received(t, s.conf["uni-b"].DataDir)
	students, grades := 0, 0
	for _, r := range got {
		if _, ok := r["religion"]; ok {
			t.Errorf("a field outside the agreement arrived: %v", r)
		}
		id, _ := r["student_id"].(string)
		if !strings.HasPrefix(id, "tk_") {
			t.Errorf("student_id not tokenised: %q", id)
		}
		switch r["_type"] {
		case "student":
			students++
			if bd, _ := r["birth_date"].(string); len(bd) != 4 {
				t.Errorf("birth_date not generalised to a year: %q", bd)
			}
			if _, ok := r["id_number"]; ok {
				t.Errorf("id_number arrived though not agreed")
			}
		case "course_grade":
			grades++
		}
	}
	if students != 25 || grades != 27 {
		t.Errorf("received %d students and %d grades, want 25 and 27", students, grades)
	}

	// A second share finds nothing new to send.
	sr2, err := a.Share(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sr2.Permitted != 0 || sr2.Envelopes != 0 {
		t.Errorf("second share: got %+v, want nothing sent again", sr2)
	}

	// Forged deliveries: garbage, and an envelope to uni-b sealed by a key
	// the registry does not know. Both refused, counted, never stored.
	nc, err := nats.Connect(s.emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	mallory, _ := crypto.GenerateSigningKey(nil)
	cred := s.conf["uni-b"]
	bReq, _ := os.ReadFile(filepath.Join(cred.DataDir, keys.RequestFile))
	var req keys.Request
	json.Unmarshal(bReq, &req)
	bKEM, err := crypto.ParseKEMPublicKey(req.KEMKeys[0].Suite, req.KEMKeys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	h := crypto.Header{Suite: bKEM.Suite(), Sender: "uni-a", SenderKeyID: mallory.Public().KeyID(),
		Recipient: "uni-b", RecipientKeyID: bKEM.KeyID(), Seq: 999, Created: time.Now(), Expires: time.Now().Add(time.Hour),
		Agreement: ag.ID, Purpose: string(ag.Purpose), RecordType: "course_grade", Count: 1, Level: "L1", Kind: crypto.KindRecords}
	h.ID[0] = 1
	forged, err := crypto.Seal(nil, h, bKEM, mallory, []byte(`{"type":"course_grade","level":"L1","fields":{"course_code":"X"}}`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	js := bus.Layout{Space: space}
	for _, msg := range [][]byte{[]byte("not an envelope"), forged} {
		if _, err := jsPublish(nc, js.DeliverSubject("uni-b", "uni-a"), msg); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 20*time.Second, "two refusals in uni-b's metrics", func() bool {
		m := nodetest.Scrape(t, b)
		return strings.Contains(m, `eduspace_envelopes_refused_total{reason="malformed"} 1`) &&
			strings.Contains(m, `eduspace_envelopes_refused_total{reason="unknown_key"} 1`)
	})
	if st, _ := b.Status(ctx); st.Received != 52 {
		t.Errorf("after forged deliveries uni-b holds %d records, want 52", st.Received)
	}

	for name, n := range map[string]*node.Node{"uni-a": a, "uni-b": b} {
		head, err := n.VerifyEvidence(ctx)
		if err != nil || head.Count == 0 {
			t.Errorf("%s evidence: %d entries, %v", name, head.Count, err)
		}
	}
	// The newest delivery's ack is held for up to 100 ms (node.ackHold).
	wait.Until(t, 20*time.Second, "uni-b reporting no deliveries waiting (consumer lag) once everything was stored", func() bool {
		return strings.Contains(nodetest.Scrape(t, b), `eduspace_consumer_pending_messages{consumer="deliver"} 0`)
	})
	m := nodetest.Scrape(t, a)
	for _, want := range []string{
		`eduspace_policy_decisions_total{outcome="permit",reason="permit"} 52`,
		// Denied records stay eligible and are decided again at the second
		// share; the invalid record was refused at both ingests.
		`eduspace_policy_decisions_total{outcome="deny",reason="minor_needs_guardian"} 4`,
		`eduspace_ingest_invalid_total{reason="checksum"} 2`,
		`eduspace_outbox_depth 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("uni-a metrics lack %q", want)
		}
	}
}

func jsPublish(nc *nats.Conn, subject string, data []byte) (*nats.Msg, error) {
	return nc.Request(subject, data, 5*time.Second)
}

// exchangeSettled says, as an error naming what is still under way,
// whether the exchange from the node whose admin API listens at snd to the
// one at rcv has come to rest (nil): snd's outbox is empty, so everything
// it sealed is in the stream; every envelope of records it sent has come
// back receipted, so rcv stored it; and rcv's deliveries consumer holds
// nothing, not even a duplicate of an envelope already stored. In that
// order: what was published before the first figure read 0 is consumed
// when the last one does. Nothing more can then arrive at rcv to be
// counted.
func exchangeSettled(snd, rcv string) error {
	for _, f := range []struct{ addr, series string }{
		{snd, "eduspace_outbox_depth"},
		{snd, "eduspace_envelopes_awaiting_receipt"},
		{rcv, `eduspace_consumer_pending_messages{consumer="deliver"}`},
	} {
		if v := metric(f.addr, f.series); v != "0" {
			return fmt.Errorf("%s at %s: %s, want 0", f.series, f.addr, v)
		}
	}
	return nil
}

// dataKey is the data key of the node in dir, which seals its records at
// rest.
func dataKey(t *testing.T, dir string) *keys.DataKey {
	t.Helper()
	dk, err := keys.LoadDataKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

// shareAndWait shares under agreement id from a, which must permit want
// records, and waits until b holds that many.
func shareAndWait(t *testing.T, a, b *node.Node, id string, want int) {
	t.Helper()
	ctx := context.Background()
	if res, err := a.Share(ctx, id); err != nil || res.Permitted != want {
		t.Fatalf("share under %s: %+v, %v; want %d permitted", id, res, err, want)
	}
	wait.Until(t, 30*time.Second, fmt.Sprintf("%d records at the recipient", want), func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == int64(want)
	})
}
