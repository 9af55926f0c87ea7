package catalogue

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// benchDatasets are n datasets of the example offer, as this node would
// hold them.
func benchDatasets(b *testing.B, n int) []Dataset {
	std := schema.Default()
	o := Offer{Title: "Course grades", RecordTypes: []string{"course_grade", "student"}, Purposes: []policy.Purpose{"research"},
		Licence: "CC0", RetentionDays: 30, Contact: "a@b.example"}
	out := make([]Dataset, n)
	for i := range out {
		o.ID = fmt.Sprintf("d-%d", i)
		out[i] = Dataset{ID: o.ID, Publisher: "uni-a", Title: o.Title, RecordTypes: o.RecordTypes, Fields: o.fields(std), Level: "L4",
			Standard: std.Ref(), Rows: Rows{Noised: 1000, Day: "2026-12-04", Mechanism: Mechanism, Sigma2: Sigma2, Rho: RhoPerDraw},
			Purposes: o.Purposes, Licence: o.Licence, RetentionDays: 30, Contact: o.Contact, Updated: time.Now()}
	}
	return out
}

// BenchmarkDCATCatalog: a full catalogue of 200 datasets (the most a node
// offers), each of two record types with every field, rendered as DSP
// JSON-LD and encoded: the work of one catalogue request besides reading
// the offers.
func BenchmarkDCATCatalog(b *testing.B) {
	c := &Catalogue{c: Config{NodeID: "uni-a", Institution: "Example University", Endpoint: "https://dsp.uni-a.example"}}
	ds := benchDatasets(b, maxOffers)
	b.ReportAllocs()
	for b.Loop() {
		if err := json.NewEncoder(io.Discard).Encode(c.dcatCatalog(ds)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "catalogues/s")
}

// BenchmarkParseMessage: a member's catalogue of 200 datasets checked as
// it arrives.
func BenchmarkParseMessage(b *testing.B) {
	now := time.Now()
	data, err := json.Marshal(Message{Publisher: "uni-a", Published: now, Datasets: benchDatasets(b, maxOffers)})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := ParseMessage(data, "uni-a", now.Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}
