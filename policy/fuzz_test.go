package policy

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// seeds returns the files matching glob and, from the decision vectors,
// what pick extracts from each of them.
func seeds(f *testing.F, glob string, pick func(vf *vectorFile, v *vector) [][]byte) {
	files, _ := filepath.Glob(glob)
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	_, vfs := loadVectors(f)
	for i := range vfs {
		for j := range vfs[i].Vectors {
			for _, b := range pick(&vfs[i], &vfs[i].Vectors[j]) {
				f.Add(b)
			}
		}
	}
}

// fuzzLabels are a few records to decide on with whatever was parsed.
var fuzzLabels = []schema.Labels{
	{Type: "student", Subject: "S1", SubjectKey: "student_id", Level: schema.L4, Fields: adult},
	{Type: "student", Subject: "S1", SubjectKey: "student_id", Level: schema.L4, Flags: []string{"minor"}, Fields: map[string]schema.FieldLabel{
		"student_id": {Category: "ID", Level: schema.L4, DirectID: true}, "health_status": {Category: "HL", Level: schema.L4}}},
	{Type: "course", Level: schema.L1, Fields: map[string]schema.FieldLabel{"course_code": {Category: "AC", Level: schema.L1}}},
}

func checkDecision(t *testing.T, d Decision) {
	if !slices.Contains(Reasons(), d.Reason) || !slices.Contains(Rules(), d.Rule) {
		t.Fatalf("decision outside the tables: %+v", d)
	}
	if d.Permit != (d.Reason == ReasonPermit) {
		t.Fatalf("permit and reason disagree: %+v", d)
	}
}

func FuzzParseAgreement(f *testing.F) {
	seeds(f, "testdata/agreements/*.json", func(vf *vectorFile, v *vector) [][]byte {
		var base map[string]json.RawMessage
		if json.Unmarshal(vf.Base.Agreement, &base) != nil {
			return nil
		}
		maps.Copy(base, v.Agreement)
		b, _ := json.Marshal(base)
		return [][]byte{b}
	})
	std := schema.Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAgreement(data, std)
		if err != nil {
			return
		}
		if err := a.Validate(std); err != nil {
			t.Fatalf("parsed agreement does not validate: %v", err)
		}
		c := a.Canonical()
		if c == nil {
			t.Fatalf("valid agreement has no canonical form: %+v", a)
		}
		again, err := ParseAgreement(c, std)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, c)
		}
		if !bytes.Equal(again.Canonical(), c) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c, again.Canonical())
		}
		for _, l := range fuzzLabels {
			in := Input{Provider: a.Provider, Recipient: a.Recipient, RecipientRole: "university", Agreement: a,
				Labels: l, Now: a.ValidFrom, Consent: Consent{Granted: true, Guardian: true}}
			checkDecision(t, Decide(DefaultRulebook(), in))
		}
	})
}

func FuzzParseConsent(f *testing.F) {
	seeds(f, "testdata/consent/*.json", func(_ *vectorFile, v *vector) [][]byte {
		var out [][]byte
		for _, r := range v.ConsentRecords {
			out = append(out, r)
		}
		return out
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConsent(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := ParseConsent(b)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, c)
		}
		r := c.Receipt("tk_AAAAAAAAAAAAAAAAAAAAAA", "uni-a")
		if err := r.Validate(); err != nil {
			t.Fatalf("receipt of a valid consent does not validate: %v", err)
		}
		st := ConsentState([]ConsentRecord{c}, c.Subject, c.Purpose, "uni-b", c.Categories, c.Granted)
		want := c.ActiveAt(c.Granted) && (len(c.Recipients) == 0 || slices.Contains(c.Recipients, "uni-b"))
		if st.Granted != want || st.Guardian != (want && c.Guardian) {
			t.Fatalf("consent state at grant: %+v for %+v", st, c)
		}
		for _, l := range fuzzLabels {
			a := agreement()
			a.LegalBasis, a.MaxLevel, a.AllowRawL4 = BasisConsent, schema.L4, true
			checkDecision(t, Decide(DefaultRulebook(), Input{Provider: "uni-a", Recipient: "uni-b", RecipientRole: "university",
				Agreement: a, Labels: l, Now: now, Consent: ConsentState([]ConsentRecord{c}, "S1", c.Purpose, "uni-b", nil, now)}))
		}
	})
}

func FuzzParseRulebook(f *testing.F) {
	seeds(f, "testdata/rulebooks/*.json", func(_ *vectorFile, v *vector) [][]byte {
		if v.Rulebook == nil {
			return nil
		}
		return [][]byte{v.Rulebook}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		rb, err := ParseRulebook(data)
		if err != nil {
			return
		}
		if err := rb.Validate(); err != nil {
			t.Fatalf("parsed rulebook does not validate: %v", err)
		}
		b, err := json.Marshal(rb)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, err := ParseRulebook(b)
		if err != nil || !reflect.DeepEqual(again, rb) {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, rb)
		}
		for _, l := range fuzzLabels {
			for _, vol := range []int{0, 999, 9_999, 99_999, 999_999} {
				in := Input{Provider: "uni-a", Recipient: "uni-b", RecipientRole: "university", Agreement: agreement(), Labels: l, Now: now,
					VolumeSoFar: vol, SensitiveSoFar: vol, SubjectsSoFar: vol}
				checkDecision(t, Decide(rb, in))
			}
		}
	})
}

// FuzzParseErasure: an erasure request or receipt as a recipient or a
// provider reads it off the wire. What validates names tokens only (never
// a raw id) and survives a round trip with the same signing message.
func FuzzParseErasure(f *testing.F) {
	req := ErasureRequest{ID: "er-1", Provider: "uni-a", Recipient: "ai-1", Subject: "tk_0123456789abcdefABCDEF",
		ReleaseTokens: []string{"tk_0123456789abcdefABCDEG"}, Purpose: PurposeModelTraining, Agreement: "ag",
		Requested: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	for _, v := range []any{req, req.Receipt(2, req.Requested.Add(time.Minute))} {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"id":"x","provider":"a","recipient":"b","subject":"110105200001011234","release_tokens":["110105200001011234"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r ErasureRequest
		if json.Unmarshal(data, &r) == nil && r.Validate() == nil {
			if !isToken(r.Subject) || slices.ContainsFunc(r.ReleaseTokens, func(s string) bool { return !isToken(s) }) {
				t.Fatalf("a request naming something other than tokens validated: %+v", r)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var again ErasureRequest
			if err := json.Unmarshal(b, &again); err != nil || again.Validate() != nil ||
				!bytes.Equal(again.SigningMessage(), r.SigningMessage()) {
				t.Fatalf("request does not survive a round trip: %v", err)
			}
		}
		var rc ErasureReceipt
		if json.Unmarshal(data, &rc) == nil && rc.Validate() == nil {
			b, err := json.Marshal(rc)
			if err != nil {
				t.Fatal(err)
			}
			var again ErasureReceipt
			if err := json.Unmarshal(b, &again); err != nil || again.Validate() != nil ||
				!bytes.Equal(again.SigningMessage(), rc.SigningMessage()) {
				t.Fatalf("receipt does not survive a round trip: %v", err)
			}
		}
	})
}
