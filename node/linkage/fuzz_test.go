package linkage

import (
	"bytes"
	"testing"

	"github.com/cloudflare/circl/oprf"
)

// fuzzBatch is a batch of four identifiers, blinded and honestly
// evaluated, for the fuzz targets.
type fuzzBatch struct {
	tw                        *serverTweak
	tk                        tweakedKey
	batch                     *blindBatch
	blinded, evaluated, proof []byte
	outputs                   [][]byte
}

func newFuzzBatch(f *testing.F) fuzzBatch {
	f.Helper()
	priv, err := oprf.DeriveKey(Suite, oprf.PartialObliviousMode, bytes.Repeat([]byte{7}, 32), nil)
	if err != nil {
		f.Fatal(err)
	}
	ek, err := newEvalKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	ck, err := newClientKey(priv.Public())
	if err != nil {
		f.Fatal(err)
	}
	info := Info("statistics", "2026")
	fb := fuzzBatch{}
	if fb.tw, err = ek.tweak(info); err != nil {
		f.Fatal(err)
	}
	if fb.tk, err = ck.tweaked(info); err != nil {
		f.Fatal(err)
	}
	inputs := testInputs(4)
	fb.blinded = make([]byte, len(inputs)*ElementSize)
	if fb.batch, err = blind(inputs, fb.blinded); err != nil {
		f.Fatal(err)
	}
	fb.evaluated = make([]byte, len(fb.blinded))
	if fb.proof, err = fb.tw.evaluate(fb.blinded, fb.evaluated); err != nil {
		f.Fatal(err)
	}
	if fb.outputs, err = fb.batch.finalize(fb.tk, fb.evaluated, fb.proof); err != nil {
		f.Fatal(err)
	}
	return fb
}

// FuzzFinalize: whatever an evaluator answers, finalize never panics, and
// accepts nothing but the honest evaluation: an answer it accepts gives
// the honest outputs.
func FuzzFinalize(f *testing.F) {
	fb := newFuzzBatch(f)
	f.Add(fb.evaluated, fb.proof)
	f.Add(fb.evaluated[:ElementSize], fb.proof)
	f.Add(make([]byte, len(fb.evaluated)), make([]byte, 2*scalarSize))
	f.Add(fb.blinded, fb.proof)
	f.Fuzz(func(t *testing.T, evaluated, proof []byte) {
		outputs, err := fb.batch.finalize(fb.tk, evaluated, proof)
		if err != nil {
			return
		}
		for i := range outputs {
			if !bytes.Equal(outputs[i], fb.outputs[i]) {
				t.Fatalf("an answer other than the honest one was accepted: output %d differs", i)
			}
		}
	})
}

// FuzzEvaluate: whatever a requester sends, the evaluator never panics,
// and what it answers verifies under its key with the composites of
// exactly what was sent.
func FuzzEvaluate(f *testing.F) {
	fb := newFuzzBatch(f)
	f.Add(fb.blinded)
	f.Add(fb.blinded[:ElementSize+3])
	f.Add(make([]byte, 2*ElementSize))
	f.Add(bytes.Repeat([]byte{0xff}, ElementSize))
	f.Fuzz(func(t *testing.T, blinded []byte) {
		evaluated := make([]byte, len(blinded))
		proof, err := fb.tw.evaluate(blinded, evaluated)
		if err != nil {
			return
		}
		if len(proof) != 2*scalarSize || len(blinded)%ElementSize != 0 {
			t.Fatalf("evaluated %d bytes with a proof of %d", len(blinded), len(proof))
		}
	})
}
