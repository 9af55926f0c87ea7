package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

func day(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }

func TestParseConsentFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/consent/*.json")
	if len(files) == 0 {
		t.Fatal("no consent testdata")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConsent(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		// Round trip: what the ledger stores parses back to the same record.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseConsent(out)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Errorf("%s: round trip: got %+v, %v; want %+v", f, again, err, c)
		}
	}
}

func TestParseConsentErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z"}`, "id"},
		{`{"id":"c","purpose":"research","granted":"2026-01-01T00:00:00Z"}`, "subject"},
		{`{"id":"c","subject":"S","purpose":"marketing","granted":"2026-01-01T00:00:00Z"}`, "purpose"},
		{`{"id":"c","subject":"S","purpose":"research"}`, "granted"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","expires":"2025-01-01T00:00:00Z"}`, "expires"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","withdrawn":"2025-01-01T00:00:00Z"}`, "withdrawn"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","categories":["XX"]}`, "categories[0]"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","categories":["HL","HL"]}`, "categories[1]"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","recipients":[""]}`, "recipients[0]"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z","scope":"all"}`, "scope"},
		{`{"id":"c","subject":"S","purpose":"research","granted":"2026-01-01T00:00:00Z"} x`, "trailing"},
	} {
		_, err := ParseConsent([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.in, err, tc.want)
		}
	}
}

func TestConsentState(t *testing.T) {
	recs := []ConsentRecord{
		{ID: "own-hl", Subject: "S1", Purpose: PurposeResearch, Categories: []schema.Category{"HL"}, Granted: day(1)},
		{ID: "guard-dm", Subject: "S1", Purpose: PurposeResearch, Categories: []schema.Category{"DM"}, Granted: day(1), Guardian: true},
		{ID: "other-rcpt", Subject: "S1", Purpose: PurposeResearch, Recipients: []string{"uni-c"}, Granted: day(1)},
		{ID: "expired", Subject: "S1", Purpose: PurposeResearch, Categories: []schema.Category{"AC"}, Granted: day(1), Expires: day(10)},
		{ID: "withdrawn", Subject: "S1", Purpose: PurposeResearch, Categories: []schema.Category{"FA"}, Granted: day(1), Withdrawn: day(10)},
		{ID: "other-subj", Subject: "S2", Purpose: PurposeResearch, Granted: day(1)},
		{ID: "other-purp", Subject: "S1", Purpose: PurposeStatistics, Granted: day(1)},
		{ID: "later", Subject: "S1", Purpose: PurposeResearch, Categories: []schema.Category{"EM"}, Granted: day(25)},
	}
	cats := func(c ...schema.Category) []schema.Category { return c }
	for _, tc := range []struct {
		name      string
		recipient string
		cats      []schema.Category
		at        time.Time
		want      Consent
	}{
		{"health covered by own consent", "uni-b", cats("HL"), day(20),
			Consent{Granted: true, Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"health and demographics together", "uni-b", cats("DM", "HL"), day(20),
			Consent{Granted: true, Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"demographics by the guardian", "uni-b", cats("DM"), day(20),
			Consent{Granted: true, Guardian: true, Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"academic: expired", "uni-b", cats("AC"), day(20),
			Consent{Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"academic before expiry", "uni-b", cats("AC"), day(5),
			Consent{Granted: true, Scope: cats("AC", "DM", "FA", "HL"), Records: []string{"own-hl", "guard-dm", "expired", "withdrawn"}}},
		{"financial: withdrawn, and academic expired, at that instant", "uni-b", cats("FA"), day(10),
			Consent{Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"financial just before withdrawal", "uni-b", cats("FA"), day(10).Add(-time.Second),
			Consent{Granted: true, Scope: cats("AC", "DM", "FA", "HL"), Records: []string{"own-hl", "guard-dm", "expired", "withdrawn"}}},
		{"uni-c has an unscoped consent", "uni-c", cats("CT"), day(20),
			Consent{Granted: true, Records: []string{"own-hl", "guard-dm", "other-rcpt"}}},
		{"no categories asked: any standing consent", "uni-b", nil, day(20),
			Consent{Granted: true, Scope: cats("DM", "HL"), Records: []string{"own-hl", "guard-dm"}}},
		{"nothing before the grant", "uni-b", cats("HL"), day(1).Add(-time.Second), Consent{}},
		{"employment from its grant on", "uni-b", cats("EM"), day(25),
			Consent{Granted: true, Scope: cats("DM", "EM", "HL"), Records: []string{"own-hl", "guard-dm", "later"}}},
	} {
		got := ConsentState(recs, "S1", PurposeResearch, tc.recipient, tc.cats, tc.at)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}

func TestConsentReceipt(t *testing.T) {
	c := ConsentRecord{ID: "c1", Subject: "2023010001", Purpose: PurposeResearch, Categories: []schema.Category{"HL"},
		Granted: day(1), Expires: day(1).AddDate(1, 0, 0)}
	r := c.Receipt("tk_AAAAAAAAAAAAAAAAAAAAAA", "uni-a")
	if err := r.Validate(); err != nil || r.Action != ConsentGrant {
		t.Fatalf("grant receipt: %+v, %v", r, err)
	}
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), "2023010001") {
		t.Errorf("receipt carries the raw subject id: %s", b)
	}
	for _, claim := range []string{`"sub"`, `"iss"`, `"exp"`, `"iat"`, `"jti"`, `"withdrawn"`} {
		if strings.Contains(string(b), claim) {
			t.Errorf("grant receipt JSON has %s (registered JWT claims are the node's): %s", claim, b)
		}
	}
	c.Withdrawn = day(20)
	w := c.Receipt("tk_AAAAAAAAAAAAAAAAAAAAAA", "uni-a")
	if err := w.Validate(); err != nil || w.Action != ConsentWithdraw {
		t.Fatalf("withdrawal receipt: %+v, %v", w, err)
	}
	for _, tc := range []struct {
		want string
		edit func(*ConsentReceiptClaims)
	}{
		{"consent_id", func(r *ConsentReceiptClaims) { r.ConsentID = "" }},
		{"subject_token", func(r *ConsentReceiptClaims) { r.SubjectToken = "2023010001" }},
		{"subject_token", func(r *ConsentReceiptClaims) { r.SubjectToken = "张三张三张三张三张三张三" }},
		{"purpose", func(r *ConsentReceiptClaims) { r.Purpose = "" }},
		{"action", func(r *ConsentReceiptClaims) { r.Action = "maybe" }},
		{"withdrawn", func(r *ConsentReceiptClaims) { r.Action = ConsentGrant }},
		{"withdrawn", func(r *ConsentReceiptClaims) { r.Withdrawn = day(1).Add(-time.Hour) }},
		{"node", func(r *ConsentReceiptClaims) { r.Node = "" }},
		{"categories[0]", func(r *ConsentReceiptClaims) { r.Categories = []schema.Category{""} }},
		{"granted", func(r *ConsentReceiptClaims) { r.Granted = time.Time{} }},
	} {
		r := w
		tc.edit(&r)
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
	r2 := w
	r2.Action, r2.Withdrawn = ConsentWithdraw, time.Time{}
	if err := r2.Validate(); err == nil || !strings.Contains(err.Error(), "withdrawn") {
		t.Errorf("withdrawal without time: got %v", err)
	}
}
