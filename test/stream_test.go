package test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/test/wait"
)

// TestStreamShare: records streamed under an agreement through the admin
// API (`eduspace share --agreement ID FILE`) are decided, sealed and
// delivered like held records, but never held at the sender. The input is
// read as ingest reads it (here a GBK CSV, detected); a refused record is
// counted by reason while the rest go on; an unknown agreement and
// all_or_nothing are refused before anything is read.
func TestStreamShare(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	agreeGrades(t, "feed", s.now, a, b)
	dir := s.conf["uni-a"].DataDir

	var csv, known strings.Builder
	csv.WriteString("student_id,course_code,score,course_name\n")
	const n = 300
	for i := range n {
		fmt.Fprintf(&csv, "S%04d,CS101,%d,数据结构\n", i, 60+i%40)
		known.WriteString(knownStudents(fmt.Sprintf("S%04d", i)))
	}
	// The students' records, held before their grades stream through.
	if res, err := a.Ingest(ctx, strings.NewReader(known.String()), ""); err != nil || res.Stored != n {
		t.Fatalf("ingest the students: %+v, %v", res, err)
	}
	csv.WriteString(",CS101,70,数据结构\n") // no student: refused (required)
	gbk, err := simplifiedchinese.GBK.NewEncoder().String(csv.String())
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res share.SendResult
	resp := adminCall(t, a, dir, http.MethodPost, "/v1/agreements/feed/stream?type=course_grade", gbk, &res)
	if resp.StatusCode != http.StatusOK || res.Format != "csv" || res.Encoding != "gb18030" ||
		res.Considered != n || res.Permitted != n || res.Invalid != 1 || res.ByReason["required"] != 1 || res.Envelopes == 0 {
		t.Fatalf("stream: %s, %+v; want %d permitted from a GB18030 CSV and one refused (required)", resp.Status, res, n)
	}
	wait.Until(t, 30*time.Second, fmt.Sprintf("uni-b to hold the %d streamed records", n), func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == n
	})
	after, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Records != before.Records {
		t.Errorf("uni-a holds %d records after a stream, %d before; a stream keeps none", after.Records, before.Records)
	}
	// Every decision is in the evidence log: at least one entry per
	// envelope sealed, beyond what was there before.
	if after.EvidenceEntries < before.EvidenceEntries+int64(res.Envelopes) {
		t.Errorf("evidence entries %d → %d for %d envelopes", before.EvidenceEntries, after.EvidenceEntries, res.Envelopes)
	}
	// What arrived is what was streamed, as the agreement lets it leave:
	// every score once, and no field outside the agreement (course_name).
	scores := map[string]int{}
	for _, r := range received(t, s.conf["uni-b"].DataDir) {
		if _, ok := r["course_name"]; ok {
			t.Fatalf("a field outside the agreement arrived: %v", r)
		}
		scores[fmt.Sprint(r["score"])]++
	}
	for i := range 40 {
		if got := scores[fmt.Sprint(60+i)]; got != n/40+b2i(i < n%40) {
			t.Errorf("score %d arrived %d times", 60+i, got)
		}
	}
	for _, c := range []struct {
		name, path string
		status     int
	}{
		{"unknown agreement", "/v1/agreements/nope/stream?type=course_grade", http.StatusNotFound},
		{"all or nothing", "/v1/agreements/feed/stream?type=course_grade&all_or_nothing=true", http.StatusBadRequest},
		{"CSV without a type", "/v1/agreements/feed/stream", http.StatusBadRequest},
		{"GBK read as UTF-8", "/v1/agreements/feed/stream?type=course_grade&encoding=utf-8", http.StatusUnprocessableEntity},
	} {
		if resp := adminCall(t, a, dir, http.MethodPost, c.path, gbk, nil); resp.StatusCode != c.status {
			t.Errorf("%s: %s, want %d", c.name, resp.Status, c.status)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestContinuousAgreement: under a continuous agreement, records go as
// they are ingested, without a share request: each ingest's answer names
// the share it started, only the new records are considered, and the
// recipient holds each record once.
func TestContinuousAgreement(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	b := s.member("uni-b", crypto.SuiteX25519)
	// The students' records, held before the agreement shares their
	// grades as they are ingested.
	var known strings.Builder
	for i := range 2700 {
		known.WriteString(knownStudents(fmt.Sprintf("S%04d", i)))
	}
	if res, err := a.Ingest(ctx, strings.NewReader(known.String()), ""); err != nil || res.Stored != 2700 {
		t.Fatalf("ingest the students: %+v, %v", res, err)
	}
	ag := gradeAgreement("live", "uni-a", "uni-b", s.now)
	ag.Continuous, ag.BulkApproved = true, true
	for _, n := range []*node.Node{a, b} {
		if err := n.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	dir := s.conf["uni-a"].DataDir
	grades := func(from, to int) string {
		var b strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, `{"type":"course_grade","student_id":"S%04d","course_code":"CS101","score":%d}`+"\n", i, 50+i%50)
		}
		return b.String()
	}
	total := 0
	// The third ingest spans several stored batches (share.ingestBatch),
	// shared as they are stored; the last is all held already.
	for _, batch := range [][2]int{{0, 120}, {120, 200}, {200, 2700}, {0, 200}} {
		var res share.IngestResult
		resp := adminCall(t, a, dir, http.MethodPost, "/v1/ingest", grades(batch[0], batch[1]), &res)
		fresh := max(0, batch[1]-max(batch[0], total))
		if resp.StatusCode != http.StatusOK || res.Stored != fresh {
			t.Fatalf("ingest %v: %s, %+v; want %d stored", batch, resp.Status, res, fresh)
		}
		total += fresh
		if fresh == 0 {
			if len(res.Shared) != 0 {
				t.Errorf("ingest of held records started shares %+v", res.Shared)
			}
			continue
		}
		if len(res.Shared) != 1 || res.Shared[0].Agreement != "live" || res.Shared[0].Error != "" ||
			res.Shared[0].Considered != fresh || res.Shared[0].Permitted != fresh {
			t.Fatalf("ingest %v: shares %+v; want the %d new records permitted under live", batch, res.Shared, fresh)
		}
	}
	wait.Until(t, 30*time.Second, "uni-b to hold every record once", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == int64(total)
	})
	seen := map[string]bool{}
	for _, r := range received(t, s.conf["uni-b"].DataDir) {
		k := fmt.Sprint(r["student_id"])
		if seen[k] {
			t.Errorf("student %s received twice", k)
		}
		seen[k] = true
	}
	// A share request finds nothing left to send.
	if res, err := a.Share(ctx, "live"); err != nil || res.Considered != 0 {
		t.Errorf("share after continuous shares: %+v, %v; want nothing considered", res, err)
	}
}
