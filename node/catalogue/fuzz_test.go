package catalogue

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// FuzzParseOffer: no offer file makes the parser panic, and what it
// accepts validates again and labels its fields.
func FuzzParseOffer(f *testing.F) {
	good, err := os.ReadFile("testdata/offer.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"id":"x","fields":{"student":["name"]}}`))
	f.Add([]byte(`{}`))
	std := schema.Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseOffer(data, std)
		if err != nil {
			return
		}
		if err := o.Validate(std); err != nil {
			t.Fatalf("accepted offer fails validation: %v", err)
		}
		if len(o.fields(std)) == 0 {
			t.Fatal("accepted offer holds no field")
		}
	})
}

// FuzzParseMessage: no catalogue message makes the receiver's check
// panic; an accepted one names its sender as publisher of every dataset,
// which passes check.
func FuzzParseMessage(f *testing.F) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	valid, err := json.Marshal(Message{Publisher: "uni-a", Published: now, Datasets: []Dataset{{ID: "d1", Publisher: "uni-a", Title: "t",
		RecordTypes: []string{"course_grade"}, Fields: []Field{{RecordType: "course_grade", Name: "score", Category: "AC", Level: "L3"}},
		Level: "L3", Rows: Rows{Noised: 3, Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw},
		Purposes: []policy.Purpose{policy.PurposeResearch}, Licence: "CC0", RetentionDays: 30, Contact: "a@b.example"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"publisher":"uni-a","published":"2026-12-04T00:00:00Z","datasets":[]}`))
	f.Add([]byte(`{"publisher":"uni-b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, reason, err := ParseMessage(data, "uni-a", now.Add(time.Minute))
		if err != nil {
			if reason != "publisher_mismatch" && reason != "invalid" {
				t.Fatalf("refusal reason %q outside the closed set", reason)
			}
			return
		}
		for _, d := range m.Datasets {
			if d.Publisher != "uni-a" || d.check() != nil {
				t.Fatalf("accepted dataset %+v", d)
			}
		}
	})
}

// FuzzParseCatalogRequest: no request body makes the DSP request check
// panic, and the specification's request passes.
func FuzzParseCatalogRequest(f *testing.F) {
	req := `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:CatalogRequestMessage","dspace:filter":["x"]}`
	if err := parseCatalogRequest([]byte(req)); err != nil {
		f.Fatalf("the specification's request: %v", err)
	}
	f.Add([]byte(req))
	f.Add([]byte(`{"@context":["https://w3id.org/dspace/2024/1/context.json",{"x":"y"}],"@type":"CatalogRequestMessage"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = parseCatalogRequest(data)
	})
}
