package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

func TestParseAgreementFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/agreements/*.json")
	if len(files) == 0 {
		t.Fatal("no agreement testdata")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ParseAgreement(b, schema.Default())
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		// Canonical bytes parse back to an agreement with the same bytes.
		c := a.Canonical()
		again, err := ParseAgreement(c, schema.Default())
		if err != nil || !bytes.Equal(again.Canonical(), c) {
			t.Errorf("%s: canonical round trip: %v\n%s\n%s", f, err, c, again.Canonical())
		}
	}
}

func TestCanonical(t *testing.T) {
	a := agreement()
	b := agreement()
	// Same content, other field order, other time zone, revoked: same bytes.
	b.RecordTypes["student"] = []string{"health_status", "birth_date", "name", "student_id"}
	cst := time.FixedZone("CST", 8*3600)
	b.ValidFrom, b.ValidUntil = b.ValidFrom.In(cst), b.ValidUntil.In(cst)
	b.Revoked = true
	if !bytes.Equal(a.Canonical(), b.Canonical()) {
		t.Errorf("equal agreements, different canonical bytes:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	if strings.Contains(string(a.Canonical()), "revoked") {
		t.Errorf("canonical form carries revocation state: %s", a.Canonical())
	}
	if b.RecordTypes["student"][0] != "health_status" {
		t.Error("Canonical modified the agreement")
	}
	b.RetentionDays = 31
	if bytes.Equal(a.Canonical(), b.Canonical()) {
		t.Error("different agreements, same canonical bytes")
	}
	// allow_microdata is left out unless set, so that agreements signed
	// before it existed keep their bytes; set, it is signed.
	if strings.Contains(string(a.Canonical()), "allow_microdata") {
		t.Errorf("canonical form of an agreement without allow_microdata names it: %s", a.Canonical())
	}
	c := agreement()
	c.AllowMicrodata = true
	if !strings.Contains(string(c.Canonical()), `"allow_microdata":true`) {
		t.Errorf("canonical form of an agreement that allows microdata: %s", c.Canonical())
	}
	m := a.SigningMessage()
	if !bytes.HasPrefix(m, []byte(AgreementSignatureLabel+"\x00")) || !bytes.HasSuffix(m, a.Canonical()) {
		t.Errorf("signing message: %q", m)
	}
	a.MaxLevel = schema.Level(200)
	if a.Canonical() != nil || a.SigningMessage() != nil {
		t.Error("an unencodable agreement must give no bytes to sign")
	}
}

func TestSignedAgreementLifecycle(t *testing.T) {
	t0 := now.Add(-time.Hour)
	a := *agreement()
	if _, err := Propose(a, "uni-z", []byte("sig"), t0); err == nil {
		t.Error("a stranger proposed")
	}
	if _, err := Propose(a, "uni-a", nil, t0); err == nil {
		t.Error("proposal without signature")
	}
	s, err := Propose(a, "uni-a", []byte("sig-a"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if st := s.State(now); st != StateProposed {
		t.Errorf("state %s, want proposed", st)
	}
	if s.Effective(now) != nil {
		t.Error("a proposal is effective")
	}
	if err := s.Accept("uni-a", []byte("again"), now); err == nil {
		t.Error("the proposer accepted its own proposal")
	}
	if err := s.Accept("uni-b", []byte("sig-b"), t0.Add(-time.Minute)); err == nil {
		t.Error("accepted before proposed")
	}
	if err := s.Accept("uni-b", []byte("sig-b"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if st := s.State(now); st != StateActive {
		t.Errorf("state %s, want active", st)
	}
	if err := s.Accept("uni-b", []byte("sig-b"), now); err == nil {
		t.Error("accepted twice")
	}
	if e := s.Effective(now); e == nil || e.Revoked {
		t.Errorf("active agreement not effective: %+v", e)
	}
	if st := s.State(a.ValidUntil); st != StateExpired {
		t.Errorf("state at valid_until %s, want expired", st)
	}

	// JSON round trip keeps signatures and history.
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back SignedAgreement
	if err := json.Unmarshal(js, &back); err != nil || !bytes.Equal(back.RecipientSig, []byte("sig-b")) ||
		!back.AcceptedAt.Equal(s.AcceptedAt) || !bytes.Equal(back.Canonical(), s.Canonical()) {
		t.Errorf("round trip: %v\n%s", err, js)
	}

	if err := s.Revoke("uni-z", now); err == nil {
		t.Error("a stranger revoked")
	}
	if err := s.Revoke("uni-b", now); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke("uni-a", now); err == nil {
		t.Error("revoked twice")
	}
	if st := s.State(now.Add(-time.Second)); st != StateActive {
		t.Errorf("before the revocation: %s, want active", st)
	}
	if st := s.State(now); st != StateRevoked {
		t.Errorf("state %s, want revoked", st)
	}
	e := s.Effective(now)
	if e == nil || !e.Revoked || s.Agreement.Revoked {
		t.Fatalf("revoked agreement as Decide sees it: %+v", e)
	}
	d := Decide(DefaultRulebook(), Input{Provider: "uni-a", Recipient: "uni-b", RecipientRole: "university", Agreement: e, Now: now,
		Labels: schema.Labels{Type: "student", Subject: "S1", SubjectKey: "student_id", Fields: adult}})
	if d.Reason != ReasonAgreementRevoked {
		t.Errorf("decision under a revoked agreement: %+v", d)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := s.Accept("uni-b", []byte("x"), now); err == nil {
		t.Error("accepted a revoked agreement")
	}
}

func TestSignedAgreementValidate(t *testing.T) {
	base := func() SignedAgreement {
		s, err := Propose(*agreement(), "uni-b", []byte("sig-b"), now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		want string
		edit func(*SignedAgreement)
	}{
		{"proposed_by", func(s *SignedAgreement) { s.ProposedBy = "uni-z" }},
		{"proposed_at", func(s *SignedAgreement) { s.ProposedAt = time.Time{} }},
		{"recipient_sig", func(s *SignedAgreement) { s.RecipientSig = nil }},
		{"accepted_at", func(s *SignedAgreement) { s.AcceptedAt = now }},
		{"accepted_at", func(s *SignedAgreement) { s.ProviderSig = []byte("x") }},
		{"accepted_at", func(s *SignedAgreement) { s.ProviderSig, s.AcceptedAt = []byte("x"), now.Add(-time.Hour) }},
		{"revoked_by and revoked_at", func(s *SignedAgreement) { s.RevokedBy = "uni-a" }},
		{"revoked_by", func(s *SignedAgreement) { s.RevokedBy, s.RevokedAt = "uni-z", now }},
		{"revoked_at", func(s *SignedAgreement) { s.RevokedBy, s.RevokedAt = "uni-a", now.Add(-time.Hour) }},
	} {
		s := base()
		tc.edit(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
}

func TestRetention(t *testing.T) {
	a := agreement() // 30 days
	received := time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)
	if got, want := a.RetentionDeadline(received), time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("deadline %v, want %v", got, want)
	}
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{received, false},
		{time.Date(2026, 3, 2, 9, 59, 59, 0, time.UTC), false},
		{time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC), true},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		if got := a.RetentionExpired(received, tc.at); got != tc.want {
			t.Errorf("at %v: expired=%v, want %v", tc.at, got, tc.want)
		}
	}
}
