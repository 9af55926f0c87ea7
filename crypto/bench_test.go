package crypto

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkSealOpen measures the two halves of an envelope's round for
// batches of 600-byte records: "seal" is Seal (HPKE setup, AEAD, Ed25519
// signature), "open" is ParseEnvelope, Verify and Open. Both report
// records/s and ns/record; ENVELOPE.md §10 has the figures.
func BenchmarkSealOpen(b *testing.B) {
	record := bytes.Repeat([]byte("r"), 599)
	record = append(record, '\n')
	for _, s := range suites {
		f := newFixture(b, s)
		for _, n := range []int{1, 10, 100, 1000} {
			pt := bytes.Repeat(record, n)
			h := f.header()
			h.Count = uint32(n)
			report := func(b *testing.B) {
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n)/float64(b.N), "ns/record")
			}
			b.Run(fmt.Sprintf("%s/records=%d/seal", s, n), func(b *testing.B) {
				b.SetBytes(int64(len(pt)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Seal(nil, h, f.kem.Public(), f.signer, pt); err != nil {
						b.Fatal(err)
					}
				}
				report(b)
			})
			env, err := Seal(nil, h, f.kem.Public(), f.signer, pt)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/records=%d/open", s, n), func(b *testing.B) {
				b.SetBytes(int64(len(pt)))
				b.ReportAllocs()
				for b.Loop() {
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
				report(b)
			})
		}
	}
}
