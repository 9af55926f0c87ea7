package crypto

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkSealOpen measures one envelope's full round (Seal, ParseEnvelope,
// Verify, Open) per iteration for batches of 600-byte records.
func BenchmarkSealOpen(b *testing.B) {
	record := bytes.Repeat([]byte("r"), 599)
	record = append(record, '\n')
	for _, s := range suites {
		f := newFixture(b, s)
		for _, n := range []int{1, 10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/records=%d", s, n), func(b *testing.B) {
				pt := bytes.Repeat(record, n)
				h := f.header()
				h.Count = uint32(n)
				b.SetBytes(int64(len(pt)))
				b.ReportAllocs()
				for b.Loop() {
					env, err := Seal(nil, h, f.kem.Public(), f.signer, pt)
					if err != nil {
						b.Fatal(err)
					}
					e, err := ParseEnvelope(env)
					if err != nil {
						b.Fatal(err)
					}
					if err := e.Verify(f.signer.Public()); err != nil {
						b.Fatal(err)
					}
					if _, err := e.Open(f.kem); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
