package envelope

import (
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// BenchmarkReceiverCheck: check one envelope's plaintext (per record).
func BenchmarkReceiverCheck(b *testing.B) {
	const records = 100
	plain := wirePayload(b, records)
	codec := &Codec{Std: schema.Default()}
	h := crypto.Header{RecordType: "student", Count: records, Level: "L3"}
	now := time.Now()
	a := &policy.Agreement{ID: "bench", Purpose: policy.PurposeResearch, MaxLevel: schema.L3,
		RecordTypes: map[string][]string{"student": synth.StudentFields}, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := codec.CheckRecords(plain, h, a, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
}
