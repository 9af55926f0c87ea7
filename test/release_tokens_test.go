package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/release"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// receivedLines are the record lines a node stores, per envelope id, in
// the order received (receivedBodies, each body's records as NDJSON).
func receivedLines(t *testing.T, dir string) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	for eid, body := range receivedBodies(t, dir) {
		plain, err := envelope.ReceivedNDJSON(body)
		if err != nil {
			t.Fatal(err)
		}
		out[eid] = nil
		for line := range bytes.SplitSeq(bytes.TrimSpace(plain), []byte("\n")) {
			if len(line) > 0 {
				out[eid] = append(out[eid], line)
			}
		}
	}
	return out
}

// tokensIn are the student_id values of the lines of the envelopes eids
// in lines, each counted.
func tokensIn(t *testing.T, lines map[string][][]byte, eids []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, eid := range eids {
		for _, line := range lines[eid] {
			var rec struct {
				StudentID string `json:"student_id"`
			}
			if err := json.Unmarshal(line, &rec); err != nil || rec.StudentID == "" {
				t.Fatalf("a received line without a student_id token (%v)", err)
			}
			out[rec.StudentID]++
		}
	}
	return out
}

// TestReleaseTokensPerRelease: two k-anonymous releases to one AI service
// give each student a token of its own in each release, and neither is the
// AI service's recipient token of the student that a share carries, so the
// AI service cannot join the releases (or a release and a share) on the
// tokens; the rows as received hash to each release's digest, as its
// manifest and a provenance declaration name it. When a student included
// in both withdraws, the one erasure request reaches her shared row and
// her row in each release, the AI service confirms, and the subject
// report at the university still lists both releases, each with its model
// use.
func TestReleaseTokensPerRelease(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	uni := s.member("uni-a", crypto.SuiteX25519)
	ai := s.memberAs("ai-1", crypto.RoleAIService, crypto.SuiteX25519, node.Env{})
	const n = 60
	if _, err := uni.Ingest(ctx, strings.NewReader(releaseStudents(s.now, n)), ""); err != nil {
		t.Fatal(err)
	}
	ag := &policy.Agreement{ID: "train", Provider: "uni-a", Recipient: "ai-1", Purpose: policy.PurposeModelTraining,
		LegalBasis: policy.BasisContract, RecordTypes: map[string][]string{"student": {"student_id", "gender", "birth_date"}},
		MaxLevel: schema.L3, Transforms: map[string]policy.Transform{"student_id": policy.TransformTokenise},
		RetentionDays: 30, ValidFrom: s.now.Add(-time.Hour), ValidUntil: s.now.Add(time.Hour)}
	for _, nd := range []*node.Node{uni, ai} {
		if err := nd.AddAgreement(ctx, ag); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		id := fmt.Sprintf("R%04d", i)
		if _, err := uni.GrantConsent(ctx, policy.ConsentRecord{ID: "c-" + id, Subject: id, Purpose: policy.PurposeModelTraining,
			Recipients: []string{"ai-1"}, Granted: s.now.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// A share under the agreement: its rows carry ai-1's token of each
	// student.
	sh, err := uni.Share(ctx, "train")
	if err != nil || sh.Permitted != n {
		t.Fatalf("share: %+v, %v; want %d records permitted", sh, err, n)
	}
	rel1, err := uni.Release(ctx, release.Request{Agreement: "train", K: 5})
	if err != nil {
		t.Fatal(err)
	}
	rel2, err := uni.Release(ctx, release.Request{Agreement: "train", K: 5})
	if err != nil {
		t.Fatal(err)
	}
	total := n + rel1.Records + rel2.Records
	wait.Until(t, 30*time.Second, "the share and both releases at ai-1", func() bool {
		st, err := ai.Status(ctx)
		return err == nil && st.Received == int64(total)
	})

	lines := receivedLines(t, s.conf["ai-1"].DataDir)
	var shared []string
	for eid := range lines {
		if !slices.Contains(rel1.Envelopes, eid) && !slices.Contains(rel2.Envelopes, eid) {
			shared = append(shared, eid)
		}
	}
	sets := map[string]map[string]int{"share": tokensIn(t, lines, shared),
		rel1.ID: tokensIn(t, lines, rel1.Envelopes), rel2.ID: tokensIn(t, lines, rel2.Envelopes)}
	want := map[string]int{"share": n, rel1.ID: rel1.Records, rel2.ID: rel2.Records}
	// (a) One token per student in each, and no token in two of them: the
	// same student's tokens differ between the releases and from the
	// share's.
	for name, set := range sets {
		if len(set) != want[name] {
			t.Errorf("%s: %d distinct tokens at ai-1, want %d (one row, one token per student)", name, len(set), want[name])
		}
		joined := map[string]int{}
		for tok, c := range set {
			if c != 1 || !strings.HasPrefix(tok, "tk_") {
				t.Errorf("%s: a value %d characters long on %d rows; want a token on one row", name, len(tok), c)
			}
			for other, os := range sets {
				if other != name && os[tok] > 0 {
					joined[other]++
				}
			}
		}
		for other, c := range joined {
			t.Errorf("%d tokens of %s are in %s too: the two can be joined on them", c, name, other)
		}
	}
	// What ai-1 holds of each release hashes to the digest its manifest
	// and the evidence name, tokens as received.
	for _, rel := range []*release.Release{rel1, rel2} {
		h := sha256.New()
		for _, eid := range rel.Envelopes {
			for _, line := range lines[eid] {
				h.Write(line)
				h.Write([]byte{'\n'})
			}
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != rel.Digest {
			t.Errorf("release %s as received hashes to %s, its digest is %s", rel.ID, got, rel.Digest)
		}
	}
	wait.Until(t, 30*time.Second, "both manifests at ai-1", func() bool {
		ms, err := ai.Releases().Received(ctx)
		return err == nil && len(ms) == 2
	})
	decl, err := ai.DeclareProvenance(ctx, release.DeclareRequest{Model: "tutor", Version: "2.0",
		Releases: []string{rel1.ID, rel2.ID}, Use: release.UseTraining})
	if err != nil {
		t.Fatal(err)
	}

	// A student the two releases both carry.
	subject := ""
	for i := range n {
		id := fmt.Sprintf("R%04d", i)
		in, err := uni.SubjectReleases(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(in) == 2 && in[0].How == "row" && in[1].How == "row" {
			subject = id
			break
		}
	}
	if subject == "" {
		t.Fatal("no student is in both releases")
	}
	wait.Until(t, 30*time.Second, "the model uses in the subject report", func() bool {
		in, err := uni.SubjectReleases(ctx, subject)
		return err == nil && len(in) == 2 && len(in[0].ModelUses) == 1 && len(in[1].ModelUses) == 1 &&
			in[0].ModelUses[0].Declaration == decl.ID && in[1].ModelUses[0].Declaration == decl.ID
	})

	// (b) She withdraws: one erasure request to ai-1 under the agreement,
	// which erases her shared row and her row in each release.
	if wr, err := uni.WithdrawConsent(ctx, "c-"+subject); err != nil || wr.Requests != 1 {
		t.Fatalf("withdraw: %+v, %v; want one erasure request to ai-1", wr, err)
	}
	wait.Until(t, 30*time.Second, "the erasure confirmed", func() bool {
		rep, err := uni.SubjectReport(ctx, subject)
		if err != nil || len(rep.Deliveries) == 0 {
			return false
		}
		for _, d := range rep.Deliveries {
			if d.Agreement != "train" || d.Erasure != "confirmed" {
				return false
			}
		}
		return true
	})
	if st, _ := ai.Status(ctx); st.Received != int64(total-3) {
		t.Errorf("ai-1 holds %d records after the erasure, want %d: the shared row and one row of each release gone", st.Received, total-3)
	}
	after := receivedLines(t, s.conf["ai-1"].DataDir)
	gone := map[string][]string{}
	for name, eids := range map[string][]string{"share": shared, rel1.ID: rel1.Envelopes, rel2.ID: rel2.Envelopes} {
		left := tokensIn(t, after, eids)
		for tok := range sets[name] {
			if left[tok] == 0 {
				gone[name] = append(gone[name], tok)
			}
		}
	}
	for name := range sets {
		if len(gone[name]) != 1 {
			t.Errorf("%s: %d tokens erased at ai-1, want the student's one", name, len(gone[name]))
		}
	}

	// (c) The subject report still lists both releases and their uses.
	in, err := uni.SubjectReleases(ctx, subject)
	if err != nil || len(in) != 2 || in[0].Release == in[1].Release ||
		!slices.Contains([]string{rel1.ID, rel2.ID}, in[0].Release) || !slices.Contains([]string{rel1.ID, rel2.ID}, in[1].Release) ||
		len(in[0].ModelUses) != 1 || len(in[1].ModelUses) != 1 {
		t.Errorf("subject report's releases after the withdrawal: %+v, %v; want both releases with the model use", in, err)
	}
	for name, nd := range map[string]*node.Node{"uni-a": uni, "ai-1": ai} {
		if _, err := nd.VerifyEvidence(ctx); err != nil {
			t.Errorf("%s evidence: %v", name, err)
		}
	}
}
