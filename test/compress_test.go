package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/test/wait"
)

// s2Magic starts every compressed records payload, an S2 block after it
// (crypto/ENVELOPE.md §11).
var s2Magic = []byte{0x89, 'S', '2', 'B'}

// receivedBodies reads the received table's bodies as stored, by envelope,
// opened with the node's data key.
func receivedBodies(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	dk := dataKey(t, dir)
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
	out := map[string][]byte{}
	for rows.Next() {
		var eid string
		var body []byte
		if err := rows.Scan(&eid, &body); err != nil {
			t.Fatal(err)
		}
		if body, err = receive.OpenBody(dk, eid, body); err != nil {
			t.Fatal(err)
		}
		out[eid] = body
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// gradeLines is NDJSON of n course grades as a sender puts them on the
// wire, student ids tokenised.
func gradeLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"type":"course_grade","student_id":"tk_%022x","course_code":"CS101","score":%d}`+"\n", i, 60+i%40)
	}
	return b.Bytes()
}

// repeatTo repeats line to at least n bytes.
func repeatTo(line []byte, n int) []byte { return bytes.Repeat(line, n/len(line)+1) }

// TestCompressedRecords: envelopes of records travel compressed and are
// stored compressed; an uncompressed envelope, as a node that does not
// compress sends, is accepted; a compressed payload that is too large,
// lies about its size, has none, is corrupt, truncated or followed by
// anything, holds what the record type does not have, or is a zstd frame
// is refused as bad content, counted, recorded in the evidence log and
// never stored.
func TestCompressedRecords(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	data, _ := records(s.now)
	if _, err := a.Ingest(ctx, strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	ag := agreeGrades(t, "a-to-b", s.now, a, b)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sr.Permitted != 27 || sr.Envelopes != 3 {
		t.Fatalf("share: got %+v, want 27 grades in 3 envelopes", sr)
	}
	wait.Until(t, 20*time.Second, "27 records at uni-b", func() bool { st, err := b.Status(ctx); return err == nil && st.Received == 27 })
	shared := receivedBodies(t, s.conf["uni-b"].DataDir)
	stored, plain := 0, 0
	for eid, body := range shared {
		if !bytes.HasPrefix(body, s2Magic) {
			t.Errorf("envelope %s stored uncompressed", eid)
		}
		nd, err := envelope.ReceivedNDJSON(body)
		if err != nil {
			t.Fatalf("envelope %s: %v", eid, err)
		}
		stored, plain = stored+len(body), plain+len(nd)
	}
	if stored*2 > plain {
		t.Errorf("uni-b stores %d bytes for %d bytes of records, want at most half", stored, plain)
	}

	// Envelopes made by hand with uni-a's real keys.
	aKeys, err := keys.LoadKeys(s.conf["uni-a"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	bKeys, err := keys.LoadKeys(s.conf["uni-b"].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	bKEM := bKeys.KEM.Public()
	now := time.Now()
	seq := uint64(1000)
	seal := func(count int, payload []byte) []byte {
		t.Helper()
		seq++
		h := crypto.Header{Suite: bKEM.Suite(), Kind: crypto.KindRecords, Sender: "uni-a", SenderKeyID: aKeys.Signing.Public().KeyID(),
			Recipient: "uni-b", RecipientKeyID: bKEM.KeyID(), Seq: seq, Created: now, Expires: now.Add(time.Hour),
			Agreement: ag.ID, Purpose: string(ag.Purpose), RecordType: "course_grade", Count: uint32(count), Level: "L2"}
		rand.Read(h.ID[:])
		env, err := crypto.Seal(nil, h, bKEM, aKeys.Signing, payload)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	// A payload is the magic, then the block: its size as a varint, then
	// its operations.
	block := func(plain []byte) []byte { return append(bytes.Clone(s2Magic), s2.Encode(nil, plain)...) }
	better := func(plain []byte) []byte { return append(bytes.Clone(s2Magic), s2.EncodeBetter(nil, plain)...) }
	declaring := func(z []byte, size uint64) []byte {
		_, n := binary.Uvarint(z[len(s2Magic):])
		return append(binary.AppendUvarint(bytes.Clone(s2Magic), size), z[len(s2Magic)+n:]...)
	}
	twenty := block(gradeLines(20))
	// The first operation a copy: there is nothing yet to copy from.
	corrupt := bytes.Clone(twenty)
	_, n := binary.Uvarint(corrupt[len(s2Magic):])
	corrupt[len(s2Magic)+n] = 9<<2 | 2
	zenc, err := zstd.NewWriter(nil, zstd.WithSingleSegment(true))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		want string // "" = stored
		env  []byte
	}{
		{"uncompressed, as a node that does not compress sends", "", seal(3, gradeLines(3))},
		{"compressed by another encoder (S2's better level)", "", seal(20, better(gradeLines(20)))},
		{"9 MiB decompressed: more than an envelope may hold", envelope.RefuseContent, seal(500, block(repeatTo(gradeLines(1), 9<<20)))},
		{"2 MiB decompressed for one record", envelope.RefuseContent, seal(1, block(repeatTo(gradeLines(1), 2<<20)))},
		{"the magic without a block (no size)", envelope.RefuseContent, seal(20, s2Magic)},
		{"a block declaring one byte less than it holds", envelope.RefuseContent, seal(20, declaring(twenty, uint64(len(gradeLines(20))-1)))},
		{"a block declaring one byte more than it holds", envelope.RefuseContent, seal(20, declaring(twenty, uint64(len(gradeLines(20))+1)))},
		{"a corrupt block", envelope.RefuseContent, seal(20, corrupt)},
		{"a block truncated", envelope.RefuseContent, seal(20, twenty[:100])},
		{"a block and trailing bytes", envelope.RefuseContent, seal(20, append(bytes.Clone(twenty), "{}\n"...))},
		{"a block of a field outside the record type", envelope.RefuseContent,
			seal(1, block([]byte(`{"type":"course_grade","student_id":"tk_x","salary":1,"course_code":"CS101","score":91}`+"\n")))},
		{"a zstd frame", envelope.RefuseContent, seal(20, zenc.EncodeAll(gradeLines(20), nil))},
	}
	js := s.js()
	subject := bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a")
	want, accepted := map[string]int{}, 0
	for _, c := range cases {
		if _, err := js.Publish(ctx, subject, c.env); err != nil {
			t.Fatalf("%s: publish: %v", c.name, err)
		}
		if c.want != "" {
			want[c.want]++
		} else {
			accepted++
		}
	}
	wait.Until(t, 20*time.Second, "every refusal counted", func() bool { return sameCounts(refusedCounts(t, b), want) })
	wait.Until(t, 20*time.Second, "uni-b to store the accepted envelopes", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 27+3+20
	})
	if got := refusals(t, s.conf["uni-b"].DataDir); !sameCounts(got, want) {
		t.Errorf("evidence log refusals by reason:\ngot  %v\nwant %v", got, want)
	}
	bodies := receivedBodies(t, s.conf["uni-b"].DataDir)
	if len(bodies) != len(shared)+accepted {
		t.Errorf("uni-b stored %d envelopes, want %d", len(bodies), len(shared)+accepted)
	}
	forms := map[bool]int{}
	for eid, body := range bodies {
		if _, ok := shared[eid]; !ok {
			forms[bytes.HasPrefix(body, s2Magic)]++
		}
	}
	if forms[false] != 1 || forms[true] != 1 {
		t.Errorf("the two accepted envelopes stored as %d uncompressed and %d compressed, want one each (as they arrived)", forms[false], forms[true])
	}
	got := received(t, s.conf["uni-b"].DataDir)
	if len(got) != 27+3+20 {
		t.Errorf("uni-b holds %d records, want %d", len(got), 27+3+20)
	}
	for _, r := range got {
		if r["salary"] != nil {
			t.Errorf("a refused record was stored: %v", r)
		}
	}
}

// TestErasureOfCompressedBody: an erasure request removes the subject's
// record from a body stored compressed, keeps the others, and writes the
// body back compressed.
func TestErasureOfCompressedBody(t *testing.T) {
	ctx := context.Background()
	s, a, b, ag := consentStudy(t)
	for i := range 10 {
		id := fmt.Sprintf("S%04d", i)
		if _, err := a.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeResearch,
			Recipients: []string{"uni-b"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if sr, err := a.Share(ctx, ag.ID); err != nil || sr.Permitted != 10 || sr.Envelopes != 1 {
		t.Fatalf("share: %+v, %v; want 10 records in one envelope", sr, err)
	}
	wait.Until(t, 20*time.Second, "10 records at uni-b", func() bool { st, _ := b.Status(ctx); return st.Received == 10 })
	dir := s.conf["uni-b"].DataDir
	ids := func() map[string]bool {
		out := map[string]bool{}
		for _, body := range receivedBodies(t, dir) {
			if !bytes.HasPrefix(body, s2Magic) {
				t.Errorf("body stored uncompressed")
			}
		}
		for _, r := range received(t, dir) {
			id, _ := r["student_id"].(string)
			out[id] = true
		}
		return out
	}
	before := ids()
	if len(before) != 10 {
		t.Fatalf("uni-b holds %d subjects, want 10", len(before))
	}

	if _, err := a.WithdrawConsent(ctx, "c-S0001"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the erasure confirmed at uni-a", func() bool {
		return strings.Contains(nodetest.Scrape(t, a), `eduspace_erasures_total{event="confirmed"} 1`)
	})
	after := ids()
	if len(after) != 9 {
		t.Errorf("uni-b holds %d subjects after the erasure, want 9", len(after))
	}
	for id := range after {
		if !before[id] {
			t.Errorf("subject %s appeared with the erasure", id)
		}
	}
	if st, _ := b.Status(ctx); st.Received != 9 {
		t.Errorf("uni-b counts %d records after the erasure, want 9", st.Received)
	}
}
