package linkage

import (
	"bytes"
	stdcrypto "crypto"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	r255 "github.com/bwesterb/go-ristretto"
	"github.com/cloudflare/circl/expander"
	"github.com/cloudflare/circl/oprf"
)

// This file is the POPRF of RFC 9497 (mode 0x02, suite ristretto255-SHA512)
// for whole batches: blind, evaluate with a batched DLEQ proof, verify
// and finalize. Its messages and outputs are byte for byte those of circl's
// oprf.PartialObliviousClient and PartialObliviousServer, on the same
// ristretto255 arithmetic (go-ristretto, which circl's group wraps); the
// tests check that each side interoperates with circl's. What differs is
// the cost of a batch of n:
//
//   - The proof's composite sums (M = Σ dᵢ·Zᵢ, and the verifier's
//     Z = Σ dᵢ·Bᵢ) are multi-scalar multiplications (Pippenger's bucket
//     method, variable time: every input is public) instead of n full
//     scalar multiplications each. A term costs ≈ 8 µs instead of ≈ 48.
//   - The client inverts its n blinds with one inversion (Montgomery's
//     trick) instead of n.
//   - Hashes and encodings are done once per element, from the bytes on
//     the wire (RFC 9496 encodings are canonical, so they are the
//     serialisation the transcripts need).
//
// Multiplications by a secret (a blind, the key, the proof's nonce) stay
// constant time.

// scalarSize is the size of a serialised scalar; a proof is two.
const scalarSize = 32

// The RFC 9497 context string of this suite in POPRF mode, and the domain
// separation tags built on it.
var (
	contextString   = append([]byte("OPRFV1-\x02-"), oprf.SuiteRistretto255.Identifier()...)
	dstHashToGroup  = concat("HashToGroup-", contextString)
	dstHashToScalar = concat("HashToScalar-", contextString)
	dstSeed         = concat("Seed-", contextString)
)

func concat(label string, ctx []byte) []byte { return append([]byte(label), ctx...) }

// errProof is the error of a proof that does not verify.
var errProof = errors.New("linkage proof does not verify")

// hashToScalar is RFC 9497's HashToScalar: expand_message_xmd(SHA-512) to
// 64 bytes, reduced modulo the group order.
func hashToScalar(msg []byte) r255.Scalar {
	var wide [64]byte
	copy(wide[:], expander.NewExpanderMD(stdcrypto.SHA512, dstHashToScalar).Expand(msg, 64))
	var s r255.Scalar
	s.SetReduced(&wide)
	return s
}

// hashToGroup is RFC 9497's HashToGroup for ristretto255 (RFC 9380
// appendix B): two Elligator maps of 64 expanded bytes, added.
func hashToGroup(input []byte) r255.Point {
	wide := expander.NewExpanderMD(stdcrypto.SHA512, dstHashToGroup).Expand(input, 64)
	var half [32]byte
	var p, q r255.Point
	copy(half[:], wide[:32])
	p.SetElligator(&half)
	copy(half[:], wide[32:])
	q.SetElligator(&half)
	return *p.Add(&p, &q)
}

// infoScalar is m = HashToScalar("Info" ‖ I2OSP(len(info), 2) ‖ info).
func infoScalar(info []byte) (r255.Scalar, error) {
	if len(info) > 0xffff {
		return r255.Scalar{}, errors.New("linkage info longer than 65535 bytes")
	}
	framed := binary.BigEndian.AppendUint16([]byte("Info"), uint16(len(info)))
	return hashToScalar(append(framed, info...)), nil
}

// isIdentity says whether p is the group's identity.
func isIdentity(p *r255.Point) bool {
	var zero r255.Point
	zero.SetZero()
	return p.Equals(&zero)
}

// decodePoint parses a canonical encoding of an element other than the
// identity.
func decodePoint(b []byte, i int) (r255.Point, error) {
	var buf [32]byte
	copy(buf[:], b)
	var p r255.Point
	if !p.SetBytes(&buf) {
		return p, fmt.Errorf("element %d: not a group element", i)
	}
	if isIdentity(&p) {
		return p, fmt.Errorf("element %d: the identity", i)
	}
	return p, nil
}

// appendFramed appends I2OSP(len(b), 2) ‖ b.
func appendFramed(dst, b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(dst, uint16(len(b))), b...)
}

// composites are the batched proof's weights dᵢ (RFC 9497 §2.2.1,
// ComputeComposites): from a seed bound to the tweaked key's encoding,
// one per pair (evaluated Zᵢ, blinded Bᵢ), both given as their encodings.
func composites(tweaked []byte, evaluated, blinded []byte) []r255.Scalar {
	h := sha512.New()
	h.Write(appendFramed(nil, tweaked))
	h.Write(appendFramed(nil, dstSeed))
	seed := h.Sum(nil)
	n := len(evaluated) / ElementSize
	d := make([]r255.Scalar, n)
	msg := make([]byte, 0, 2+len(seed)+2+2*(2+ElementSize)+len("Composite"))
	for i := range n {
		msg = appendFramed(msg[:0], seed)
		msg = binary.BigEndian.AppendUint16(msg, uint16(i))
		msg = appendFramed(msg, evaluated[i*ElementSize:(i+1)*ElementSize])
		msg = appendFramed(msg, blinded[i*ElementSize:(i+1)*ElementSize])
		msg = append(msg, "Composite"...)
		d[i] = hashToScalar(msg)
	}
	return d
}

// challenge is RFC 9497's challenge scalar over the tweaked key and the
// four proof elements.
func challenge(tweaked []byte, m, z, t2, t3 *r255.Point) r255.Scalar {
	msg := appendFramed(nil, tweaked)
	var buf [32]byte
	for _, p := range []*r255.Point{m, z, t2, t3} {
		p.BytesInto(&buf)
		msg = appendFramed(msg, buf[:])
	}
	return hashToScalar(append(msg, "Challenge"...))
}

// msmMin is the fewest terms msm sums with buckets.
const msmMin = 48

// msm sets, for each set j of points, out[j] = Σᵢ d[i]·points[j][i], all
// sets sharing the scalars: Pippenger's method with 8-bit windows, in
// variable time (for public inputs only).
func msm(d []r255.Scalar, points ...[]r255.Point) []r255.Point {
	out := make([]r255.Point, len(points))
	if len(d) < msmMin {
		// The buckets cost ≈ 16,000 additions whatever n: below msmMin
		// terms, a multiplication each is cheaper.
		var x r255.Point
		for j, ps := range points {
			out[j].SetZero()
			for i := range ps {
				out[j].Add(&out[j], x.PublicScalarMult(&ps[i], &d[i]))
			}
		}
		return out
	}
	const window = 8
	digits := make([][32]byte, len(d))
	for i := range d {
		d[i].BytesInto(&digits[i])
	}
	var buckets [1 << window]r255.Point
	var used [1 << window]bool
	for j, ps := range points {
		acc := &out[j]
		acc.SetZero()
		for w := 31; w >= 0; w-- {
			for range window {
				acc.Double(acc)
			}
			clear(used[:])
			for i := range ps {
				v := digits[i][w]
				if v == 0 {
					continue
				}
				if used[v] {
					buckets[v].Add(&buckets[v], &ps[i])
				} else {
					buckets[v].Set(&ps[i])
					used[v] = true
				}
			}
			// Σ v·bucket[v] as the running sums of the buckets from the top.
			var run, sum r255.Point
			run.SetZero()
			sum.SetZero()
			for v := len(buckets) - 1; v > 0; v-- {
				if used[v] {
					run.Add(&run, &buckets[v])
				}
				sum.Add(&sum, &run)
			}
			acc.Add(acc, &sum)
		}
	}
	return out
}

// evalKey is the evaluator's key in the arithmetic of this file.
type evalKey struct{ k r255.Scalar }

// newEvalKey converts circl's private key.
func newEvalKey(priv *oprf.PrivateKey) (*evalKey, error) {
	b, err := priv.MarshalBinary()
	if err != nil || len(b) != scalarSize {
		return nil, errors.New("linkage key: not a ristretto255 scalar")
	}
	var buf [32]byte
	copy(buf[:], b)
	var k evalKey
	if !k.k.SetBytesStrict(&buf) {
		return nil, errors.New("linkage key: not a reduced scalar")
	}
	return &k, nil
}

// serverTweak is the evaluator's secret for one info: t = k + m, its
// inverse, and the encoding of the tweaked key T = t·G the proofs are
// bound to.
type serverTweak struct {
	t, tInv r255.Scalar
	tweaked [32]byte
}

// tweak derives the evaluation secret for info.
func (k *evalKey) tweak(info []byte) (*serverTweak, error) {
	m, err := infoScalar(info)
	if err != nil {
		return nil, err
	}
	var tw serverTweak
	tw.t.Add(&m, &k.k)
	if tw.t.IsNonZeroI() == 0 {
		return nil, errors.New("linkage key and info give a zero tweak, which makes the key public: rotate the linkage key (eduspace linkage keygen)")
	}
	tw.tInv.Inverse(&tw.t)
	var T r255.Point
	T.ScalarMultBase(&tw.t)
	T.BytesInto(&tw.tweaked)
	return &tw, nil
}

// evaluate is BlindEvaluate of a batch: blinded holds the encodings of
// the blinded elements Bᵢ; it writes Zᵢ = t⁻¹·Bᵢ into evaluated (the same
// size) and returns the batch's proof (c ‖ s).
func (tw *serverTweak) evaluate(blinded, evaluated []byte) ([]byte, error) {
	n := len(blinded) / ElementSize
	if n == 0 || len(blinded) != n*ElementSize || len(evaluated) != len(blinded) {
		return nil, errors.New("linkage batch: want a whole, non-empty number of elements")
	}
	if n > 0xffff {
		return nil, errors.New("linkage batch: more than 65535 elements under one proof")
	}
	zs := make([]r255.Point, n)
	var buf [32]byte
	for i := range n {
		b, err := decodePoint(blinded[i*ElementSize:(i+1)*ElementSize], i)
		if err != nil {
			return nil, err
		}
		zs[i].ScalarMult(&b, &tw.tInv)
		zs[i].BytesInto(&buf)
		copy(evaluated[i*ElementSize:], buf[:])
	}
	// The proof that Bᵢ = t·Zᵢ for the t of T = t·G: M = Σ dᵢ·Zᵢ, Z = t·M.
	d := composites(tw.tweaked[:], evaluated, blinded)
	m := msm(d, zs)[0]
	var z, t2, t3 r255.Point
	z.ScalarMult(&m, &tw.t)
	r := tw.nonce(&m)
	t2.ScalarMultBase(&r)
	t3.ScalarMult(&m, &r)
	c := challenge(tw.tweaked[:], &m, &z, &t2, &t3)
	var s r255.Scalar
	s.MulSub(&c, &tw.t, &r) // s = r − c·t
	s.Neg(&s)
	proof := make([]byte, 0, 2*scalarSize)
	proof = append(proof, c.Bytes()...)
	return append(proof, s.Bytes()...), nil
}

// nonce is the proof's secret nonce, hedged: a hash of fresh randomness,
// the secret t and the batch's composite M, so that a weak random source
// alone does not repeat it (a repeated nonce would give t away, and the
// key with it). Zero is never returned.
func (tw *serverTweak) nonce(m *r255.Point) r255.Scalar {
	var seed [64]byte
	var tb, mb [32]byte
	tw.t.BytesInto(&tb)
	m.BytesInto(&mb)
	for {
		if _, err := rand.Read(seed[:]); err != nil {
			panic("linkage: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
		}
		h := sha512.New()
		h.Write([]byte("eduspace linkage proof nonce v1\x00"))
		h.Write(seed[:])
		h.Write(tb[:])
		h.Write(tw.tweaked[:])
		h.Write(mb[:])
		var wide [64]byte
		h.Sum(wide[:0])
		var r r255.Scalar
		r.SetReduced(&wide)
		if r.IsNonZeroI() == 1 {
			return r
		}
	}
}

// clientKey is what a requester knows of the evaluator: its public key.
type clientKey struct{ pub r255.Point }

// newClientKey converts circl's public key.
func newClientKey(pk *oprf.PublicKey) (*clientKey, error) {
	b, err := pk.MarshalBinary()
	if err != nil || len(b) != ElementSize {
		return nil, errors.New("linkage public key: not a ristretto255 element")
	}
	p, err := decodePoint(b, 0)
	if err != nil {
		return nil, fmt.Errorf("linkage public key: %w", err)
	}
	return &clientKey{pub: p}, nil
}

// tweakedKey is the evaluator's key tweaked by an info, T = m·G + pk, and
// its encoding: what a requester checks the proofs for that info against.
type tweakedKey struct {
	info    []byte
	point   r255.Point
	encoded [32]byte
}

// tweaked is the tweaked key for info.
func (ck *clientKey) tweaked(info []byte) (tweakedKey, error) {
	tk := tweakedKey{info: info}
	m, err := infoScalar(info)
	if err != nil {
		return tk, err
	}
	tk.point.ScalarMultBase(&m)
	tk.point.Add(&tk.point, &ck.pub)
	if isIdentity(&tk.point) {
		return tk, errors.New("linkage info gives the identity as tweaked key: use another purpose or epoch")
	}
	tk.point.BytesInto(&tk.encoded)
	return tk, nil
}

// blindBatch is a requester's batch between Blind and Finalize: the
// inputs, their blinds and blinded elements. It is secret (the blinds
// unlink the pseudonyms from the requests) and never leaves memory.
type blindBatch struct {
	inputs  [][]byte
	blinds  []r255.Scalar
	blinded []r255.Point
	encoded []byte // the blinded elements' encodings, as sent
}

// blind hashes each input to the group and multiplies it by a fresh
// random blind, writing the encodings into out (ElementSize each).
func blind(inputs [][]byte, out []byte) (*blindBatch, error) {
	n := len(inputs)
	if n == 0 || len(out) != n*ElementSize {
		return nil, errors.New("linkage batch: want one element per input")
	}
	if n > 0xffff {
		// The composites number the elements in two bytes, as evaluate
		// holds a batch to.
		return nil, errors.New("linkage batch: more than 65535 elements under one proof")
	}
	b := &blindBatch{inputs: inputs, blinds: make([]r255.Scalar, n), blinded: make([]r255.Point, n)}
	var buf [32]byte
	for i, in := range inputs {
		if len(in) > 0xffff {
			return nil, fmt.Errorf("input %d longer than 65535 bytes", i)
		}
		p := hashToGroup(in)
		if isIdentity(&p) {
			return nil, fmt.Errorf("input %d hashes to the identity", i)
		}
		for b.blinds[i].IsNonZeroI() == 0 {
			b.blinds[i].Rand()
		}
		b.blinded[i].ScalarMult(&p, &b.blinds[i])
		b.blinded[i].BytesInto(&buf)
		copy(out[i*ElementSize:], buf[:])
	}
	// A copy of what is sent, which the proof's composites hash: the
	// caller's buffer may change once sent.
	b.encoded = bytes.Clone(out)
	return b, nil
}

// finalize checks the evaluator's proof over the batch (evaluated holds
// the encodings of the Zᵢ, proof is c ‖ s) under the tweaked key tk, then
// unblinds each element and hashes it with its input and the key's info into the
// POPRF output. No output is returned unless the proof verifies.
func (b *blindBatch) finalize(tk tweakedKey, evaluated, proof []byte) ([][]byte, error) {
	n := len(b.inputs)
	if len(evaluated) != n*ElementSize || len(proof) != 2*scalarSize {
		return nil, errors.New("linkage answer does not match its request")
	}
	zs := make([]r255.Point, n)
	for i := range n {
		z, err := decodePoint(evaluated[i*ElementSize:(i+1)*ElementSize], i)
		if err != nil {
			return nil, err
		}
		zs[i] = z
	}
	var c, s r255.Scalar
	var buf [32]byte
	copy(buf[:], proof[:scalarSize])
	if !c.SetBytesStrict(&buf) {
		return nil, errProof
	}
	copy(buf[:], proof[scalarSize:])
	if !s.SetBytesStrict(&buf) {
		return nil, errProof
	}
	// M = Σ dᵢ·Zᵢ and Z = Σ dᵢ·Bᵢ; t2 = s·G + c·T, t3 = s·M + c·Z; the
	// proof holds when the challenge over them is c.
	d := composites(tk.encoded[:], evaluated, b.encoded)
	sums := msm(d, zs, b.blinded)
	m, z := &sums[0], &sums[1]
	var t2, t3, x r255.Point
	t2.PublicScalarMultBase(&s)
	t2.Add(&t2, x.PublicScalarMult(&tk.point, &c))
	t3.PublicScalarMult(m, &s)
	t3.Add(&t3, x.PublicScalarMult(z, &c))
	want := challenge(tk.encoded[:], m, z, &t2, &t3)
	var wb [32]byte
	want.BytesInto(&wb)
	if subtle.ConstantTimeCompare(wb[:], proof[:scalarSize]) != 1 {
		return nil, errProof
	}

	inv := invertAll(b.blinds)
	outputs := make([][]byte, n)
	h := sha512.New()
	var u r255.Point
	// The hash's message, one buffer for the batch: input ‖ info ‖
	// element ‖ "Finalize", each but the last framed.
	var msg []byte
	for i := range n {
		u.ScalarMult(&zs[i], &inv[i])
		u.BytesInto(&buf)
		msg = appendFramed(msg[:0], b.inputs[i])
		msg = appendFramed(msg, tk.info)
		msg = appendFramed(msg, buf[:])
		msg = append(msg, "Finalize"...)
		h.Reset()
		h.Write(msg)
		outputs[i] = h.Sum(nil)
	}
	return outputs, nil
}

// invertAll returns the inverses of xs (all non-zero) with one inversion:
// prefix products forward, then the inverse of the whole product walked
// back.
func invertAll(xs []r255.Scalar) []r255.Scalar {
	n := len(xs)
	out := make([]r255.Scalar, n)
	if n == 0 {
		return out
	}
	prefix := make([]r255.Scalar, n)
	prefix[0] = xs[0]
	for i := 1; i < n; i++ {
		prefix[i].Mul(&prefix[i-1], &xs[i])
	}
	var acc r255.Scalar
	acc.Inverse(&prefix[n-1])
	for i := n - 1; i > 0; i-- {
		out[i].Mul(&acc, &prefix[i-1])
		acc.Mul(&acc, &xs[i])
	}
	out[0] = acc
	return out
}
