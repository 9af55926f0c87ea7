package linkage

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	r255 "github.com/bwesterb/go-ristretto"
	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
)

// The batch POPRF of poprf.go against circl's oprf, the reference: the
// same key and info give the same evaluated elements and outputs, each
// side's proofs verify at the other, and tampered answers are refused.

func testKeys(t *testing.T) (*oprf.PrivateKey, *evalKey, *clientKey) {
	t.Helper()
	priv, err := oprf.GenerateKey(Suite, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := newEvalKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := newClientKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return priv, ek, ck
}

func testInputs(n int) [][]byte {
	in := make([][]byte, n)
	for i := range in {
		in[i] = fmt.Appendf(nil, "11010520%02d0101%04d", i%90, i)
	}
	return in
}

func encodeCircl(t *testing.T, elems []oprf.Evaluated) []byte {
	t.Helper()
	var out []byte
	for _, e := range elems {
		b, err := e.MarshalBinaryCompress()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func decodeCircl(t *testing.T, b []byte) []oprf.Blinded {
	t.Helper()
	g := Suite.Group()
	var out []oprf.Blinded
	for i := 0; i < len(b); i += ElementSize {
		e := g.NewElement()
		if err := e.UnmarshalBinary(b[i : i+ElementSize]); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestHashToGroupMatchesCircl(t *testing.T) {
	g := Suite.Group()
	for i, in := range testInputs(50) {
		want, _ := g.HashToElement(in, dstHashToGroup).MarshalBinaryCompress()
		p := hashToGroup(in)
		if got := p.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("input %d: %x, circl %x", i, got, want)
		}
	}
	info := Info("statistics", "2026")
	m, err := infoScalar(info)
	if err != nil {
		t.Fatal(err)
	}
	framed := append([]byte("Info\x00"), byte(len(info)))
	want, _ := g.HashToScalar(append(framed, info...), dstHashToScalar).MarshalBinary()
	if !bytes.Equal(m.Bytes(), want) {
		t.Fatalf("info scalar %x, circl %x", m.Bytes(), want)
	}
}

// TestEvaluateInteroperates: circl's client blinds, this file's evaluator
// answers, and circl's client verifies the proof and finalizes to circl's
// server's outputs; the evaluated elements are circl's server's.
func TestEvaluateInteroperates(t *testing.T) {
	priv, ek, _ := testKeys(t)
	info := Info("statistics", "2026")
	inputs := testInputs(300)
	client := oprf.NewPartialObliviousClient(Suite, priv.Public())
	fd, req, err := client.Blind(inputs)
	if err != nil {
		t.Fatal(err)
	}
	blinded := encodeCircl(t, req.Elements)
	tw, err := ek.tweak(info)
	if err != nil {
		t.Fatal(err)
	}
	evaluated := make([]byte, len(blinded))
	proof, err := tw.evaluate(blinded, evaluated)
	if err != nil {
		t.Fatal(err)
	}
	server := oprf.NewPartialObliviousServer(Suite, priv)
	ref, err := server.Evaluate(req, info)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(evaluated, encodeCircl(t, ref.Elements)) {
		t.Fatal("evaluated elements differ from circl's")
	}
	p := new(dleq.Proof)
	if err := p.UnmarshalBinary(Suite.Group(), proof); err != nil {
		t.Fatal(err)
	}
	outputs, err := client.Finalize(fd, &oprf.Evaluation{Elements: decodeCircl(t, evaluated), Proof: p}, info)
	if err != nil {
		t.Fatalf("circl refuses the proof: %v", err)
	}
	for i, in := range inputs {
		want, err := server.FullEvaluate(in, info)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(outputs[i], want) {
			t.Fatalf("output %d differs from circl's", i)
		}
	}
}

// TestFinalizeInteroperates: this file's client blinds, circl's server
// answers, and this file's client verifies circl's proof and finalizes to
// circl's outputs; a tampered answer is refused.
func TestFinalizeInteroperates(t *testing.T) {
	priv, _, ck := testKeys(t)
	info := Info("statistics", "2026")
	inputs := testInputs(257)
	blinded := make([]byte, len(inputs)*ElementSize)
	b, err := blind(inputs, blinded)
	if err != nil {
		t.Fatal(err)
	}
	server := oprf.NewPartialObliviousServer(Suite, priv)
	ev, err := server.Evaluate(&oprf.EvaluationRequest{Elements: decodeCircl(t, blinded)}, info)
	if err != nil {
		t.Fatal(err)
	}
	evaluated := encodeCircl(t, ev.Elements)
	proof, err := ev.Proof.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ck.tweaked(info)
	if err != nil {
		t.Fatal(err)
	}
	outputs, err := b.finalize(tk, evaluated, proof)
	if err != nil {
		t.Fatalf("circl's proof refused: %v", err)
	}
	for i, in := range inputs {
		want, err := server.FullEvaluate(in, info)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(outputs[i], want) {
			t.Fatalf("output %d differs from circl's", i)
		}
	}

	other, _, _ := testKeys(t)
	otherEv, err := oprf.NewPartialObliviousServer(Suite, other).Evaluate(&oprf.EvaluationRequest{Elements: decodeCircl(t, blinded)}, info)
	if err != nil {
		t.Fatal(err)
	}
	otherProof, _ := otherEv.Proof.MarshalBinary()
	swapped := bytes.Clone(evaluated)
	copy(swapped[:ElementSize], evaluated[ElementSize:2*ElementSize])
	copy(swapped[ElementSize:2*ElementSize], evaluated[:ElementSize])
	l := [32]byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10} // the group order: not a reduced scalar
	unreduced := append(append([]byte(nil), proof[:scalarSize]...), l[:]...)
	wrongInfo, err := ck.tweaked(Info("statistics", "2025"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		tk        tweakedKey
		evaluated []byte
		proof     []byte
	}{
		"a flipped proof byte":       {tk, evaluated, flip(proof, 3)},
		"a flipped element":          {tk, flipElement(t, evaluated, 7), proof},
		"two elements swapped":       {tk, swapped, proof},
		"another key's answer":       {tk, encodeCircl(t, otherEv.Elements), otherProof},
		"another key's proof":        {tk, evaluated, otherProof},
		"another info":               {wrongInfo, evaluated, proof},
		"an unreduced scalar":        {tk, evaluated, unreduced},
		"a short proof":              {tk, evaluated, proof[:40]},
		"one element short":          {tk, evaluated[ElementSize:], proof},
		"the identity as an element": {tk, append(make([]byte, ElementSize), evaluated[ElementSize:]...), proof},
	} {
		if _, err := b.finalize(c.tk, c.evaluated, c.proof); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestBatchRoundTrip: this file's client and evaluator together, over
// several batch sizes, give circl's server's outputs.
func TestBatchRoundTrip(t *testing.T) {
	priv, ek, ck := testKeys(t)
	server := oprf.NewPartialObliviousServer(Suite, priv)
	info := Info("employment_outcomes", "spring-2026")
	tw, err := ek.tweak(info)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ck.tweaked(info)
	if err != nil {
		t.Fatal(err)
	}
	if tk.encoded != tw.tweaked {
		t.Fatal("the client's tweaked key differs from the evaluator's")
	}
	for _, n := range []int{1, 2, 31, 600} {
		inputs := testInputs(n)
		blinded := make([]byte, n*ElementSize)
		b, err := blind(inputs, blinded)
		if err != nil {
			t.Fatal(err)
		}
		evaluated := make([]byte, len(blinded))
		proof, err := tw.evaluate(blinded, evaluated)
		if err != nil {
			t.Fatal(err)
		}
		clear(blinded) // the sent buffer reused: the batch kept its own copy
		outputs, err := b.finalize(tk, evaluated, proof)
		if err != nil {
			t.Fatalf("%d elements: %v", n, err)
		}
		for i, in := range inputs {
			want, _ := server.FullEvaluate(in, info)
			if !bytes.Equal(outputs[i], want) {
				t.Fatalf("%d elements: output %d differs from circl's", n, i)
			}
		}
	}
	if _, err := tw.evaluate(nil, nil); err == nil {
		t.Error("an empty batch evaluated")
	}
	if _, err := blind(make([][]byte, 0x10000), make([]byte, 0x10000*ElementSize)); err == nil {
		t.Error("a batch of 65536 blinded: its composites' two-byte index would wrap")
	}
	bad := make([]byte, 2*ElementSize)
	if _, err := tw.evaluate(bad, make([]byte, len(bad))); err == nil {
		t.Error("the identity evaluated")
	}
}

// TestMSM: the sums agree with sums of products, on both sides of msmMin,
// including zero scalars, repeated points and digits of every byte value.
func TestMSM(t *testing.T) {
	for _, n := range []int{1, 5, msmMin - 1, msmMin, 700} {
		d := make([]r255.Scalar, n)
		ps := make([]r255.Point, n)
		qs := make([]r255.Point, n)
		for i := range n {
			switch i % 7 {
			case 0:
				d[i].SetZero()
			case 1:
				d[i].SetUint64(uint64(i))
			default:
				d[i].Rand()
			}
			ps[i].Rand()
			if i%5 == 0 && i > 0 {
				ps[i] = ps[i-1]
			}
			qs[i].Rand()
		}
		var wantP, wantQ, x r255.Point
		wantP.SetZero()
		wantQ.SetZero()
		for i := range n {
			wantP.Add(&wantP, x.ScalarMult(&ps[i], &d[i]))
			wantQ.Add(&wantQ, x.ScalarMult(&qs[i], &d[i]))
		}
		got := msm(d, ps, qs)
		if !got[0].Equals(&wantP) || !got[1].Equals(&wantQ) {
			t.Fatalf("%d terms: the multi-scalar multiplication differs from the sum of products", n)
		}
	}
}

func TestInvertAll(t *testing.T) {
	xs := make([]r255.Scalar, 33)
	for i := range xs {
		xs[i].Rand()
	}
	inv := invertAll(xs)
	var one, p r255.Scalar
	one.SetOne()
	for i := range xs {
		if !p.Mul(&xs[i], &inv[i]).Equals(&one) {
			t.Fatalf("inverse %d wrong", i)
		}
	}
	if len(invertAll(nil)) != 0 {
		t.Fatal("inverses of nothing")
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

// flipElement replaces element i by another valid element, so that the
// answer decodes and only the proof can catch it.
func flipElement(t *testing.T, evaluated []byte, i int) []byte {
	t.Helper()
	var p r255.Point
	p.Rand()
	c := bytes.Clone(evaluated)
	copy(c[i*ElementSize:], p.Bytes())
	return c
}

// BenchmarkPOPRF times each side's work on one proof's part of PartSize
// identifiers, per identifier (one core):
//
//	go test ./node/linkage/ -run '^$' -bench POPRF -benchtime 10x
func BenchmarkPOPRF(b *testing.B) {
	priv, err := oprf.GenerateKey(Suite, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ek, _ := newEvalKey(priv)
	ck, _ := newClientKey(priv.Public())
	info := Info("statistics", "2026")
	tw, _ := ek.tweak(info)
	tk, _ := ck.tweaked(info)
	inputs := testInputs(PartSize)
	blinded := make([]byte, PartSize*ElementSize)
	evaluated := make([]byte, len(blinded))
	// step times fn, per identifier of its part.
	step := func(name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*PartSize), "µs/id")
		})
	}
	step("blind", func() error { _, err := blind(inputs, blinded); return err })
	batch, err := blind(inputs, blinded)
	if err != nil {
		b.Fatal(err)
	}
	// The answer finalize checks, made here so that finalize runs alone
	// too (-bench POPRF/finalize).
	proof, err := tw.evaluate(blinded, evaluated)
	if err != nil {
		b.Fatal(err)
	}
	step("evaluate", func() error { _, err := tw.evaluate(blinded, evaluated); return err })
	step("finalize", func() error { _, err := batch.finalize(tk, evaluated, proof); return err })
	// circl's oprf doing the same, for comparison.
	client := oprf.NewPartialObliviousClient(Suite, priv.Public())
	server := oprf.NewPartialObliviousServer(Suite, priv)
	fd, req, err := client.Blind(inputs)
	if err != nil {
		b.Fatal(err)
	}
	ev, err := server.Evaluate(req, info)
	if err != nil {
		b.Fatal(err)
	}
	step("circl-evaluate", func() error { _, err := server.Evaluate(req, info); return err })
	step("circl-finalize", func() error { _, err := client.Finalize(fd, ev, info); return err })
}
