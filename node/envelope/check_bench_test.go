package envelope

import (
	"testing"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/schema"
)

// BenchmarkReceiverCheck: check one envelope's plaintext (per record).
func BenchmarkReceiverCheck(b *testing.B) {
	const records = 100
	plain := wirePayload(b, records)
	codec := &Codec{Std: schema.Default()}
	h := crypto.Header{RecordType: "student", Count: records, Level: "L3"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := codec.CheckRecords(plain, h, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
}
