package linkage_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
)

// students writes n student records whose student_id has prefix and whose
// resident ids are the i-th of a shared sequence, from first.
func students(now time.Time, prefix string, first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		birth := now.AddDate(-20, 0, -(i % 3000))
		fmt.Fprintf(&b, `{"type":"student","student_id":"%s%05d","name":"Student %d","birth_date":%q,"id_type":"resident_id","id_number":%q}`+"\n",
			prefix, i, i, birth.Format("2006-01-02"), nodetest.ResidentID(fmt.Sprintf("110101%s%03d", birth.Format("20060102"), i/3000)))
	}
	return b.String()
}

// linkSpace opens universities uni-a and uni-b and the evaluator uni-e,
// its config edited by edit and opened with env.
func linkSpace(t *testing.T, edit func(*node.Config), env ...node.Env) (s *nodetest.Space, a, b, e *node.Node) {
	t.Helper()
	s = nodetest.NewSpace(t)
	ca, cb, ce := s.Config("uni-a"), s.Config("uni-b"), s.Config("uni-e")
	if edit != nil {
		edit(&ce)
		s.Configs["uni-e"] = ce
	}
	s.LinkageEvaluator("uni-e")
	return s, s.Open(ca), s.Open(cb), s.Open(ce, env...)
}

func ingest(t *testing.T, n *node.Node, ndjson string) {
	t.Helper()
	if _, err := n.Ingest(context.Background(), strings.NewReader(ndjson), ""); err != nil {
		t.Fatal(err)
	}
}

// TestLinkageSamePerson: two universities holding the same people under
// different student ids get the same pseudonyms for one purpose and
// epoch, and different ones across purposes and epochs.
func TestLinkageSamePerson(t *testing.T) {
	s, a, b, _ := linkSpace(t, nil)
	ingest(t, a, students(s.Now, "A", 0, 40))
	ingest(t, b, students(s.Now, "B", 20, 40)) // people 20..39 at both
	ctx := context.Background()
	pa, ra, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	pb, rb, err := b.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	if ra.Evaluated != 40 || rb.Evaluated != 40 || ra.Excluded != 0 {
		t.Fatalf("reports: %+v %+v", ra, rb)
	}
	for i := 0; i < 60; i++ {
		xa, okA := pa[fmt.Sprintf("A%05d", i)]
		xb, okB := pb[fmt.Sprintf("B%05d", i)]
		if okA && okB && xa != xb {
			t.Errorf("person %d: pseudonyms differ between the universities", i)
		}
		if okA != (i < 40) || okB != (i >= 20) {
			t.Errorf("person %d: at a %v, at b %v", i, okA, okB)
		}
	}
	if pa["A00000"] == pa["A00001"] {
		t.Error("two people, one pseudonym")
	}
	other, _, err := a.LinkagePseudonyms(ctx, policy.PurposeResearch, "2026")
	if err != nil {
		t.Fatal(err)
	}
	later, _, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2027")
	if err != nil {
		t.Fatal(err)
	}
	for id, p := range pa {
		if other[id] == p || later[id] == p {
			t.Fatalf("%s: the same pseudonym across purposes or epochs", id)
		}
	}
	again, rep, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil || rep.Cached != 40 || rep.Evaluated != 40 {
		t.Fatalf("again: %+v, %v; want 40 cached", rep, err)
	}
	for id, p := range pa {
		if again[id] != p {
			t.Fatalf("%s: another pseudonym the second time", id)
		}
	}
}

// residentIDs are the resident ids students(now, _, first, n) writes.
func residentIDs(now time.Time, first, n int) []string {
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(students(now, "X", first, n)), "\n") {
		i := strings.Index(line, `"id_number":"`)
		ids = append(ids, line[i+13:i+13+18])
	}
	return ids
}

// TestLinkageNothingInClearAtEvaluator: what the evaluator opens and what
// its data directory holds carry no resident id, no student id and no
// pseudonym, in clear, hex or base64; the same person's blinded elements
// differ between two requests.
func TestLinkageNothingInClearAtEvaluator(t *testing.T) {
	opts, opened := linkage.Opened()
	s, a, b, e := linkSpace(t, nil, node.Env{Linkage: opts})
	ingest(t, a, students(s.Now, "A", 0, 30))
	ingest(t, b, students(s.Now, "B", 0, 30))
	ctx := context.Background()
	pa, _, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026"); err != nil {
		t.Fatal(err)
	}
	var secrets [][]byte
	for _, id := range residentIDs(s.Now, 0, 30) {
		secrets = append(secrets, []byte(id), []byte(id[:17]))
	}
	for i := range 30 {
		secrets = append(secrets, []byte(fmt.Sprintf("A%05d", i)), []byte(fmt.Sprintf("B%05d", i)))
	}
	for _, p := range pa {
		secrets = append(secrets, p[:], []byte(hex.EncodeToString(p[:])), []byte(base64.StdEncoding.EncodeToString(p[:])))
	}
	encodings := func(b []byte) [][]byte {
		return [][]byte{b, []byte(hex.EncodeToString(b)), []byte(base64.StdEncoding.EncodeToString(b)), []byte(base64.RawStdEncoding.EncodeToString(b))}
	}
	plains := opened()
	if len(plains) != 2 {
		t.Fatalf("evaluator opened %d linkage messages, want 2 (one chunk from each university)", len(plains))
	}
	var elems [2][]byte
	for i, plain := range plains {
		for _, sec := range secrets {
			for _, enc := range encodings(sec) {
				if bytes.Contains(plain, enc) {
					t.Fatalf("a linkage request opened at the evaluator carries a secret (%d bytes)", len(sec))
				}
			}
		}
		var m struct{ Elements []byte }
		if err := json.Unmarshal(plain, &m); err != nil {
			t.Fatal(err)
		}
		elems[i] = m.Elements
	}
	if len(elems[0]) != 30*linkage.ElementSize || bytes.Equal(elems[0][:32], elems[1][:32]) {
		t.Fatal("the same person's blinded elements are equal in two requests (not blinded)")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(s.Configs["uni-e"].DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, sec := range secrets {
			if bytes.Contains(data, sec) {
				t.Errorf("%s holds a secret in clear (%d bytes)", path, len(sec))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The evaluator counted both members and wrote its evidence.
	ev := nodetest.Evidence(t, s.Configs["uni-e"].DataDir)
	evaluated := 0
	for _, entry := range ev {
		if entry["kind"] == "linkage" && entry["reason"] == "evaluated" {
			evaluated += int(entry["count"].(float64))
			if entry["purpose"] != "statistics" || entry["rule"] != "epoch:2026" {
				t.Errorf("evidence entry %v", entry)
			}
		}
	}
	if evaluated != 60 {
		t.Errorf("evaluator's evidence counts %d evaluations, want 60", evaluated)
	}
	if k := nodetest.Count(t, s.Configs["uni-e"], `SELECT sum(evaluations) FROM linkage_usage WHERE purpose = 'statistics' AND epoch = '2026'`); k != 60 {
		t.Errorf("linkage_usage: %d, want 60", k)
	}
}

// TestLinkageRateLimits: past the evaluator's per-epoch limit, or above its
// per-request limit, a member is refused, with the refusal counted and in
// evidence at the evaluator; another purpose has its own allowance.
func TestLinkageRateLimits(t *testing.T) {
	s, a, b, e := linkSpace(t, func(c *node.Config) { c.Linkage = linkage.Limits{PerEpoch: 50, PerRequest: 35} })
	ingest(t, a, students(s.Now, "A", 0, 30))
	ingest(t, b, students(s.Now, "B", 0, 40))
	ctx := context.Background()
	if _, _, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026"); err != nil {
		t.Fatal(err)
	}
	// The same people again come from the node's memory: nothing asked.
	if _, rep, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026"); err != nil || rep.Cached != 30 {
		t.Fatalf("the same people again: %+v, %v; want 30 cached", rep, err)
	}
	// Another purpose has its own allowance.
	if _, _, err := a.LinkagePseudonyms(ctx, policy.PurposeResearch, "2026"); err != nil {
		t.Fatalf("another purpose: %v", err)
	}
	// 30 more people would make 60 evaluations for (statistics, 2026).
	ingest(t, a, students(s.Now, "A", 30, 30))
	_, _, err := a.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	var refused *linkage.RefusedError
	if !errors.As(err, &refused) || refused.Reason != linkage.RefusePerEpoch {
		t.Fatalf("second linkage past the epoch's limit: %v, want a refusal %s", err, linkage.RefusePerEpoch)
	}
	_, _, err = b.LinkagePseudonyms(ctx, policy.PurposeStatistics, "2026")
	if !errors.As(err, &refused) || refused.Reason != linkage.RefusePerRequest {
		t.Fatalf("a request of 40 above the limit of 35: %v, want a refusal %s", err, linkage.RefusePerRequest)
	}
	scrape := nodetest.Scrape(t, e)
	for _, want := range []string{`eduspace_linkage_refused_total{reason="epoch_limit"} 1`, `eduspace_linkage_refused_total{reason="request_limit"} 1`,
		`eduspace_linkage_evaluations_total{event="evaluated"} 60`} {
		if !strings.Contains(scrape, want) {
			t.Errorf("evaluator's metrics lack %s", want)
		}
	}
	refusals := map[string]int{}
	for _, entry := range nodetest.Evidence(t, s.Configs["uni-e"].DataDir) {
		if entry["kind"] == "refuse" {
			refusals[entry["peer"].(string)+" "+entry["reason"].(string)]++
		}
	}
	if refusals["uni-a linkage:epoch_limit"] != 1 || refusals["uni-b linkage:request_limit"] != 1 {
		t.Errorf("evaluator's evidence refusals: %v", refusals)
	}
}

// TestLinkageDishonestEvaluator: answers under another key than the space
// policy's, with a forged proof, or labelled with another purpose or
// epoch than their request's (their proofs valid), are refused by the
// requester, counted and in its evidence under the request's own purpose
// and epoch (never the answer's), and no pseudonym is returned.
func TestLinkageDishonestEvaluator(t *testing.T) {
	cases := map[string]struct {
		opts   linkage.Options
		reason string
	}{
		"wrong key":          {linkage.WrongKey(), linkage.RefuseProof},
		"forged proof":       {linkage.ForgedProof(), linkage.RefuseProof},
		"relabelled epoch":   {linkage.Relabelled("", "1999"), linkage.RefuseMismatch},
		"relabelled purpose": {linkage.Relabelled(string(policy.PurposeEmploymentStatistics), ""), linkage.RefuseMismatch},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, a, _, _ := linkSpace(t, nil, node.Env{Linkage: c.opts})
			ingest(t, a, students(s.Now, "A", 0, 20))
			p, _, err := a.LinkagePseudonyms(context.Background(), policy.PurposeStatistics, "2026")
			var refused *linkage.RefusedError
			if !errors.As(err, &refused) || refused.Reason != c.reason || p != nil {
				t.Fatalf("got %d pseudonyms, %v; want a refusal %s", len(p), err, c.reason)
			}
			if !strings.Contains(nodetest.Scrape(t, a), `eduspace_linkage_refused_total{reason="`+c.reason+`"} 1`) {
				t.Error("the refusal is not counted")
			}
			found := false
			for _, entry := range nodetest.Evidence(t, s.Configs["uni-a"].DataDir) {
				if entry["kind"] == "refuse" && entry["reason"] == "linkage:"+c.reason && entry["peer"] == "uni-e" {
					found = true
					if entry["purpose"] != string(policy.PurposeStatistics) || entry["rule"] != "epoch:2026" {
						t.Errorf("refusal recorded under purpose %v, rule %v; want the request's statistics, epoch:2026", entry["purpose"], entry["rule"])
					}
				}
				if entry["rule"] == "epoch:1999" || entry["purpose"] == string(policy.PurposeEmploymentStatistics) {
					t.Errorf("the answer's own label reached the requester's evidence: %v", entry)
				}
			}
			if !found {
				t.Error("no evidence entry for the refused answer")
			}
		})
	}
}

// TestLinkageBadIdentifiers: duplicate and missing resident ids are
// counted, reported and left out, never guessed; malformed ones do not get
// past ingest (TestCollect covers those held anyway).
func TestLinkageBadIdentifiers(t *testing.T) {
	s, a, _, _ := linkSpace(t, nil)
	ids := residentIDs(s.Now, 0, 6)
	badCheck := ids[1][:17] + string("0123456789X"[(strings.IndexByte("0123456789X", ids[1][17])+1)%11])
	line := func(student, typ, id string) string {
		return fmt.Sprintf(`{"type":"student","student_id":%q,"name":"N","birth_date":"2004-01-01","id_type":%q,"id_number":%q}`+"\n", student, typ, id)
	}
	res, err := a.Ingest(context.Background(), strings.NewReader(line("S1", "resident_id", ids[0])+ // kept
		line("S2", "resident_id", " "+ids[2]+" ")+ // rejected at ingest
		line("S3", "resident_id", badCheck)+ // rejected at ingest: check character
		line("S4", "passport", "E12345678")+ // missing: not a resident id
		line("S5", "resident_id", ids[3])+line("S6", "resident_id", ids[3])+ // duplicate: one id, two students
		line("S7", "resident_id", ids[4])+strings.Replace(line("S7", "resident_id", ids[4]), `"N"`, `"N2"`, 1)+ // the same person twice: kept once
		line("S8", "resident_id", ids[0][:17])+ // rejected at ingest: too short
		line("S9", "resident_id", ids[5])), "") // kept
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest %+v", res)
	p, rep, err := a.LinkagePseudonyms(context.Background(), policy.PurposeStatistics, "2026")
	if err != nil {
		t.Fatal(err)
	}
	want := linkage.Report{Purpose: "statistics", Epoch: "2026", Evaluator: "uni-e", KeyID: rep.KeyID, Records: 7, Evaluated: 3,
		Duplicate: 3, Missing: 1, Excluded: 4, Chunks: 1, Seconds: rep.Seconds}
	if rep != want {
		t.Errorf("report\n got %+v\nwant %+v", rep, want)
	}
	for _, kept := range []string{"S1", "S7", "S9"} {
		if _, ok := p[kept]; !ok {
			t.Errorf("%s left out", kept)
		}
	}
	if len(p) != 3 {
		t.Errorf("%d pseudonyms, want 3", len(p))
	}
}

// TestLinkageRoles: the center is never the evaluator (members refuse to
// ask it) and never a requester (it refuses itself, and the evaluator
// refuses one that asks anyway, counted and in evidence).
func TestLinkageRoles(t *testing.T) {
	t.Run("center as evaluator", func(t *testing.T) {
		s := nodetest.NewSpace(t)
		ca, cc := s.Config("uni-a"), s.Member("center", crypto.RoleCenter)
		s.LinkageEvaluator("center")
		a := s.Open(ca)
		s.Open(cc)
		ingest(t, a, students(s.Now, "A", 0, 5))
		_, _, err := a.LinkagePseudonyms(context.Background(), policy.PurposeStatistics, "2026")
		var refused *linkage.RefusedError
		if !errors.As(err, &refused) || refused.Reason != linkage.RefuseRole {
			t.Fatalf("linkage through the center: %v, want a refusal %s", err, linkage.RefuseRole)
		}
	})
	t.Run("center as requester", func(t *testing.T) {
		s := nodetest.NewSpace(t)
		ce, cc := s.Config("uni-e"), s.Member("center", crypto.RoleCenter)
		s.LinkageEvaluator("uni-e")
		e := s.Open(ce)
		honest := s.Open(cc)
		ingest(t, honest, students(s.Now, "C", 0, 5))
		_, _, err := honest.LinkagePseudonyms(context.Background(), policy.PurposeStatistics, "2026")
		var refused *linkage.RefusedError
		if !errors.As(err, &refused) || refused.Reason != linkage.RefuseRole {
			t.Fatalf("the center asking: %v, want a refusal %s", err, linkage.RefuseRole)
		}
		if err := honest.Close(); err != nil {
			t.Fatal(err)
		}
		modified := s.Open(cc, node.Env{Linkage: linkage.AnyRole()})
		_, _, err = modified.LinkagePseudonyms(context.Background(), policy.PurposeStatistics, "2026")
		if !errors.As(err, &refused) || refused.Reason != linkage.RefuseRole {
			t.Fatalf("a modified center asking: %v, want the evaluator's refusal %s", err, linkage.RefuseRole)
		}
		if !strings.Contains(nodetest.Scrape(t, e), `eduspace_linkage_refused_total{reason="role"} 1`) {
			t.Error("the evaluator did not count the refusal")
		}
		if k := nodetest.Count(t, ce, `SELECT count(*) FROM linkage_chunks`); k != 0 {
			t.Errorf("the evaluator answered %d chunks for the center", k)
		}
	})
}
