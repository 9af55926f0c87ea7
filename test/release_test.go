package test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/admin"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/release"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// releaseStudents are n adult students of uni-a: birth dates over nine
// years, two genders, addresses in six districts of two cities; every
// one with a religion (L4) and a name, which no release carries.
func releaseStudents(now time.Time, n int) string {
	cities := []string{"北京市", "天津市"}
	districts := []string{"海淀区", "朝阳区", "东城区"}
	var b strings.Builder
	for i := range n {
		birth := time.Date(1997+i%9, time.Month(1+i%12), 1+i%27, 0, 0, 0, 0, time.UTC)
		gender := []string{"男", "女"}[i%2]
		addr := fmt.Sprintf("%s%s学院路%d号", cities[i%2], districts[(i/2)%3], i+1)
		fmt.Fprintf(&b, `{"type":"student","student_id":"R%04d","name":"李%d","gender":%q,"birth_date":%q,"address":%q,"religion":"none"}`+"\n",
			i, i, gender, birth.Format("2006-01-02"), addr)
	}
	return b.String()
}

// TestDatasetRelease: uni-a releases its students to an AI service for
// learning analytics, de-identified to k = 5: the AI service stores rows
// in classes of at least 5 on the quasi-identifiers, with no name, no
// religion and the student id only as its token, and exports them under
// the agreement; the subject report at uni-a shows the release. A k the
// data cannot meet is refused before anything is sent; a --dp release
// is synthetic with its ε. For model training, a release goes out while
// every student consented; after one withdraws, the AI service erases
// her row and confirms, and a new release leaves her out (a known gap of
// its data card); with two minors who consented
// without their guardians it is refused (training_minor_needs_guardian),
// and with an L4 field in the agreement (training_no_l4); for learning
// analytics too, the minors refuse it (minor_needs_guardian). The AI
// service declares which release fed its model; the provider verifies the
// signed declaration, refuses a forged one, and the subject report shows
// each student's releases and their model uses, through the admin API too.
func TestDatasetRelease(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	uni := s.member("uni-a", crypto.SuiteX25519)
	ai := s.memberAs("ai-1", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	const n = 60
	if _, err := uni.Ingest(ctx, strings.NewReader(releaseStudents(s.now, n)), ""); err != nil {
		t.Fatal(err)
	}
	agree := func(id string, purpose policy.Purpose, fields []string) {
		t.Helper()
		ag := &policy.Agreement{ID: id, Provider: "uni-a", Recipient: "ai-1", Purpose: purpose, LegalBasis: policy.BasisContract,
			RecordTypes: map[string][]string{"student": fields}, MaxLevel: schema.L3,
			Transforms:    map[string]policy.Transform{"student_id": policy.TransformTokenise},
			RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
		if slices.Contains(fields, "name") {
			ag.Transforms["name"] = policy.TransformDrop
		}
		for _, nd := range []*node.Node{uni, ai} {
			if err := nd.AddAgreement(ctx, ag); err != nil {
				t.Fatalf("add agreement %s: %v", id, err)
			}
		}
	}
	agree("la", policy.PurposeLearningAnalytics, []string{"student_id", "name", "gender", "birth_date", "address", "religion"})

	// A k the 60 records cannot meet: refused, nothing sent.
	_, err := uni.Release(ctx, release.Request{Agreement: "la", K: 100})
	var ref *release.Refusal
	if !errors.As(err, &ref) || ref.Reason != release.ReasonKUnmet || ref.Clause == "" {
		t.Fatalf("release with k = 100 of %d records: %v; want refused %s with its clause", n, err, release.ReasonKUnmet)
	}

	rel, err := uni.Release(ctx, release.Request{Agreement: "la", K: 5})
	if err != nil {
		t.Fatal(err)
	}
	tr := rel.Report.Types[0]
	t.Logf("k = 5: before %+v, after %+v, suppressed %d, generalised %v", tr.Before, tr.After, tr.Suppressed, tr.Generalised)
	if rel.Method != release.MethodK || tr.After.Smallest < 5 || tr.Before.Unique == 0 || tr.After.Unique != 0 ||
		tr.Suppressed > n*5/100 || rel.Records != n-tr.Suppressed || len(rel.Digest) != 64 {
		t.Fatalf("release: %+v", rel)
	}
	wait.Until(t, 30*time.Second, "the release at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == int64(rel.Records)
	})
	// The node's one screen counts it.
	if o := readOverview(t, uni); o.Releases.Count != 1 || o.Releases.Records != rel.Records || o.Releases.Last.Sub(rel.Created).Abs() >= time.Millisecond {
		t.Errorf("overview releases %+v, want the one release of %d records made at %s", o.Releases, rel.Records, rel.Created)
	}
	got := received(t, s.conf["ai-1"].DataDir)
	class := map[string]int{}
	for _, r := range got {
		for _, f := range []string{"name", "religion"} {
			if _, ok := r[f]; ok {
				t.Errorf("ai-1 received %s: %v", f, r)
			}
		}
		if id, _ := r["student_id"].(string); id == "" || strings.HasPrefix(id, "R0") {
			t.Errorf("ai-1 received student_id %q: want uni-a's token for it", id)
		}
		class[fmt.Sprint(r["gender"], "|", r["birth_date"], "|", r["address"])]++
	}
	unique := 0
	for key, c := range class {
		if c < 5 {
			t.Errorf("class %q at ai-1 has %d records, want ≥ 5", key, c)
		}
		if c == 1 {
			unique++
		}
	}
	if len(got) != rel.Records || unique != 0 {
		t.Errorf("ai-1 holds %d rows (%d unique), want the release's %d, none unique", len(got), unique, rel.Records)
	}
	// The recipient exports the release under its agreement.
	var buf bytes.Buffer
	if res, err := ai.ExportReceived(ctx, receive.ExportOptions{Agreement: "la"}, &buf); err != nil || bytes.Count(buf.Bytes(), []byte("\n")) != rel.Records {
		t.Errorf("export at ai-1: %+v, %v, %d lines; want %d", res, err, bytes.Count(buf.Bytes(), []byte("\n")), rel.Records)
	}
	// The subject report shows the release for those it included.
	inRelease := 0
	for i := range n {
		in, err := uni.SubjectReleases(ctx, fmt.Sprintf("R%04d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(in) == 1 && in[0].Release == rel.ID && in[0].How == "row" && in[0].Recipient == "ai-1" {
			inRelease++
		}
	}
	if inRelease != rel.Records {
		t.Errorf("%d subject reports show the release, want %d", inRelease, rel.Records)
	}

	// A differentially private synthetic release, with its ε.
	dp, err := uni.Release(ctx, release.Request{Agreement: "la", DP: true, Epsilon: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := dp.Report.DP["student"]
	t.Logf("dp: %d rows, ε = %v, δ = %v, ρ = %v, σ² = %s, marginals %v", dp.Records, st.Epsilon, st.Delta, st.Rho, st.Sigma2, st.Marginals)
	if dp.Method != release.MethodDP || !(st.Epsilon > 0 && st.Epsilon <= 1) || st.Delta != release.DefaultDelta ||
		len(st.Marginals) != 2 { // gender and birth_date have public domains; address has none
		t.Fatalf("dp release: %+v", dp)
	}
	wait.Until(t, 30*time.Second, "the dp release at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == int64(rel.Records+dp.Records)
	})

	// Model training: every student consents to training by ai-1.
	agree("train", policy.PurposeModelTraining, []string{"student_id", "gender", "birth_date"})
	for i := range n {
		id := fmt.Sprintf("R%04d", i)
		if _, err := uni.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeModelTraining,
			Recipients: []string{"ai-1"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	train, err := uni.Release(ctx, release.Request{Agreement: "train", K: 5})
	if err != nil {
		t.Fatal(err)
	}
	before := rel.Records + dp.Records + train.Records
	wait.Until(t, 30*time.Second, "the training release at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == int64(before)
	})
	// ai-1 holds the manifests of the three releases and declares that the
	// training release fed tutor 1.0; uni-a verifies the declaration and
	// the subject report of every student it included shows the use.
	wait.Until(t, 30*time.Second, "the manifests at ai-1", func() bool {
		ms, err := ai.Releases().Received(ctx)
		return err == nil && len(ms) == 3
	})
	if _, err := ai.DeclareProvenance(ctx, release.DeclareRequest{Model: "tutor", Version: "1.0", Releases: []string{rel.ID}}); err == nil {
		t.Errorf("ai-1 declared training on a learning_analytics release")
	}
	if _, err := ai.DeclareProvenance(ctx, release.DeclareRequest{Model: "tutor", Version: "1.0", Releases: []string{"rel-0000"}}); err == nil {
		t.Errorf("ai-1 declared a release it never received")
	}
	if _, err := uni.DeclareProvenance(ctx, release.DeclareRequest{Model: "tutor", Version: "1.0", Releases: []string{train.ID}}); err == nil {
		t.Errorf("uni-a, a university, declared a model use")
	}
	decl, err := ai.DeclareProvenance(ctx, release.DeclareRequest{Model: "tutor", Version: "1.0", Releases: []string{train.ID}, Use: release.UseTraining})
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the model use in R0001's subject report", func() bool {
		in, err := uni.SubjectReleases(ctx, "R0001")
		for _, r := range in {
			if r.Release == train.ID && len(r.ModelUses) == 1 && r.ModelUses[0].Declaration == decl.ID &&
				r.ModelUses[0].Model == "tutor" && r.ModelUses[0].Version == "1.0" && r.ModelUses[0].Declarer == "ai-1" {
				return err == nil
			}
		}
		return false
	})
	withUse := 0
	for i := range n {
		in, _ := uni.SubjectReleases(ctx, fmt.Sprintf("R%04d", i))
		for _, r := range in {
			if len(r.ModelUses) > 0 {
				withUse++
			}
		}
	}
	if withUse != train.Records {
		t.Errorf("%d subject reports show a model use, want the %d the training release included", withUse, train.Records)
	}

	// Another AI service claims a use of ai-1's release: it forges the
	// manifest in its own database and declares. uni-a checks the
	// declaration against its own record of the release and refuses it.
	ai2 := s.memberAs("ai-2", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	forge, err := sql.Open("sqlite3", "file:"+filepath.Join(s.conf["ai-2"].DataDir, "node.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := forge.Exec(`INSERT INTO releases_received(id, provider, agreement, purpose, method, records, digest, received_ms, manifest)
		VALUES (?, 'uni-a', 'train', 'model_training', ?, ?, ?, 0, '{}')`, train.ID, train.Method, train.Records, train.Digest); err != nil {
		t.Fatal(err)
	}
	forge.Close()
	if _, err := ai2.DeclareProvenance(ctx, release.DeclareRequest{Model: "other", Version: "9", Releases: []string{train.ID}}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "uni-a refuses ai-2's declaration", func() bool {
		return strings.Contains(nodetest.Scrape(t, uni), `eduspace_envelopes_refused_total{reason="bad_content"} 1`)
	})
	if in, _ := uni.SubjectReleases(ctx, "R0001"); len(in) != 3 || len(in[2].ModelUses) != 1 {
		t.Errorf("R0001's releases after a forged declaration: %+v; want ai-1's one use only", in)
	}

	// R0003 withdraws: ai-1 erases her training row and confirms.
	in, _ := uni.SubjectReleases(ctx, "R0003")
	if len(in) != 3 {
		t.Fatalf("R0003's releases: %+v; want la, its dp and train", in)
	}
	if wr, err := uni.WithdrawConsent(ctx, "c-R0003"); err != nil || wr.Requests != 1 {
		t.Fatalf("withdraw c-R0003: %+v, %v; want an erasure request to ai-1", wr, err)
	}
	wait.Until(t, 30*time.Second, "R0003's erasure confirmed", func() bool {
		rep, err := uni.SubjectReport(ctx, "R0003")
		if err != nil {
			return false
		}
		for _, d := range rep.Deliveries {
			if d.Agreement == "train" && d.Erasure == "confirmed" {
				return true
			}
		}
		return false
	})
	if st, _ := ai.Status(ctx); st.Received != int64(before-1) {
		t.Errorf("ai-1 holds %d records after R0003's erasure, want %d", st.Received, before-1)
	}
	// A new release leaves her out, and its data card says why.
	again, err := uni.Release(ctx, release.Request{Agreement: "train", K: 5})
	if err != nil {
		t.Fatalf("training release after a withdrawal: %v; want it made without the student who withdrew", err)
	}
	if in, _ := uni.SubjectReleases(ctx, "R0003"); len(in) != 3 {
		t.Errorf("R0003's releases after her withdrawal: %+v; want the three before it only", in)
	}
	if gaps := strings.Join(again.Card.KnownGaps, "\n"); !strings.Contains(gaps, "1 records left out: their subjects withdrew") {
		t.Errorf("data card known gaps after a withdrawal: %q; want the withdrawn record counted", gaps)
	}
	if _, err := uni.GrantConsent(ctx, policy.ConsentRecord{ID: "c-R0003-again", Subject: "R0003", Purpose: policy.PurposeModelTraining,
		Recipients: []string{"ai-1"}, Granted: s.now}); err != nil {
		t.Fatal(err)
	}

	// Two minors consent themselves, without their guardians.
	minors := ""
	for i := range 2 {
		id := fmt.Sprintf("M%04d", i)
		minors += fmt.Sprintf(`{"type":"student","student_id":%q,"name":"王%d","gender":"女","birth_date":%q}`+"\n", id, i, s.now.AddDate(-12, 0, -i).Format("2006-01-02"))
		if _, err := uni.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeModelTraining,
			Recipients: []string{"ai-1"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := uni.Ingest(ctx, strings.NewReader(minors), ""); err != nil {
		t.Fatal(err)
	}
	_, err = uni.Release(ctx, release.Request{Agreement: "train", K: 5})
	if !errors.As(err, &ref) || ref.Reason != string(policy.ReasonTrainingMinor) || ref.Records != 2 || ref.Clause != policy.ReasonTrainingMinor.Clause() {
		t.Errorf("training release with two minors: %v; want refused %s for 2 records", err, policy.ReasonTrainingMinor)
	}
	agree("train-l4", policy.PurposeModelTraining, []string{"student_id", "gender", "religion"})
	_, err = uni.Release(ctx, release.Request{Agreement: "train-l4", K: 5})
	if !errors.As(err, &ref) || ref.Reason != string(policy.ReasonTrainingSensitive) || ref.Rule != policy.RuleRulebookTrainingL4 {
		t.Errorf("training release with an L4 field: %v; want refused %s", err, policy.ReasonTrainingSensitive)
	}
	// ai-1 holds the first training release but R0003's row, and the
	// second; the refused ones sent nothing.
	wait.Until(t, 30*time.Second, "the second training release at ai-1", func() bool {
		st, _ := ai.Status(ctx)
		return st.Received >= int64(before-1+again.Records)
	})
	if st, _ := ai.Status(ctx); st.Received != int64(before-1+again.Records) {
		t.Errorf("ai-1 holds %d records after the refusals, want %d: a refused release sends nothing", st.Received, before-1+again.Records)
	}
	// The same through the admin API: a release streamed as NDJSON (for
	// learning analytics too, now that uni-a holds two minors without
	// their guardians' consent, refused), the subject report with the
	// releases and their model uses, the manifests at the AI service.
	resp, data := adminRaw(t, uni, s.conf["uni-a"].DataDir, "POST", "/v1/releases", `{"agreement":"la","k":3}`)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var last admin.ReleaseLine
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || resp.StatusCode != 200 || len(lines) < 3 ||
		last.Refusal == nil || last.Refusal.Reason != string(policy.ReasonMinorNeedsGuardian) || last.Refusal.Records != 2 ||
		!strings.Contains(lines[0], "progress") {
		t.Errorf("POST /v1/releases: %d %s", resp.StatusCode, data)
	}
	var rep struct {
		Deliveries []map[string]any    `json:"deliveries"`
		Releases   []release.Inclusion `json:"releases"`
	}
	adminCall(t, uni, s.conf["uni-a"].DataDir, "POST", "/v1/subjects/report", `{"subject":"R0001"}`, &rep)
	if len(rep.Releases) != 4 || len(rep.Releases[2].ModelUses) != 1 || rep.Releases[2].ModelUses[0].Model != "tutor" || len(rep.Deliveries) == 0 {
		t.Errorf("subject report of R0001: %+v", rep)
	}
	var manifests []release.Manifest
	adminCall(t, ai, s.conf["ai-1"].DataDir, "GET", "/v1/releases/received", "", &manifests)
	if len(manifests) < 3 || manifests[0].Card.Purpose == "" || len(manifests[0].Card.ProhibitedUses) == 0 {
		t.Errorf("manifests at ai-1: %+v", manifests)
	}

	m := nodetest.Scrape(t, uni)
	for _, r := range []string{release.ReasonKUnmet, string(policy.ReasonTrainingMinor), string(policy.ReasonTrainingSensitive), string(policy.ReasonMinorNeedsGuardian)} {
		if !strings.Contains(m, `eduspace_release_refusals_total{reason="`+r+`"} 1`) {
			t.Errorf("uni-a's metrics count no %s release refusal", r)
		}
	}
	for name, nd := range map[string]*node.Node{"uni-a": uni, "ai-1": ai} {
		if _, err := nd.VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", name, err)
		}
	}
}
