package crypto

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseEnvelope feeds arbitrary bytes through every entry point. A parsed
// envelope must re-encode to the same header bytes, and nothing may panic.
func FuzzParseEnvelope(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.vec")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		v, err := parseVector(data)
		if err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		f.Add(v.envelope)
	}
	xw := newFixture(f, SuiteXWing)
	x := newFixture(f, SuiteX25519)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEnvelope(b)
		if err != nil {
			if e != nil {
				t.Fatal("envelope and error both returned")
			}
			return
		}
		if e.Size() != len(b) {
			t.Fatalf("Size() = %d, want %d", e.Size(), len(b))
		}
		if got := e.Header.appendTo(nil); !bytes.Equal(got, e.header) {
			t.Fatalf("header does not re-encode to the parsed bytes:\ngot  %x\nwant %x", got, e.header)
		}
		for _, fx := range []fixture{xw, x} {
			_ = e.Verify(fx.signer.Public())
			_, _ = e.Open(fx.kem)
		}
	})
}
