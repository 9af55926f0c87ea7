package linkage

import (
	"crypto/rand"
	"sync"

	"github.com/cloudflare/circl/oprf"
)

// Opened is Options recording the plaintext of every linkage message the
// node opens into a slice, read through the returned function.
func Opened() (Options, func() [][]byte) {
	var mu sync.Mutex
	var seen [][]byte
	o := Options{opened: func(plain []byte) {
		mu.Lock()
		seen = append(seen, append([]byte(nil), plain...))
		mu.Unlock()
	}}
	return o, func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), seen...)
	}
}

// WrongKey is Options of an evaluator that answers under another key than
// the space policy's, with proofs valid for that other key.
func WrongKey() Options {
	priv, err := oprf.GenerateKey(Suite, rand.Reader)
	if err != nil {
		panic(err)
	}
	other, err := newEvalKey(priv)
	if err != nil {
		panic(err)
	}
	return Options{answer: func(req, ans *message) {
		forged, err := evaluateChunk(other, *req)
		if err != nil {
			panic(err)
		}
		*ans = forged
	}}
}

// ForgedProof is Options of an evaluator whose answers carry a proof with
// one byte changed.
func ForgedProof() Options {
	return Options{answer: func(_, ans *message) {
		ans.Proofs[0][5] ^= 1
	}}
}

// AnyRole is Options of a node that sends linkage requests whatever its
// role, as a modified node would.
func AnyRole() Options { return Options{anyRole: true} }

// Relabelled is Options of an evaluator that evaluates a request as asked
// but labels its answers with purpose and epoch (each when not empty), as
// if they answered another request.
func Relabelled(purpose, epoch string) Options {
	return Options{answer: func(_, ans *message) {
		if purpose != "" {
			ans.Purpose = purpose
		}
		if epoch != "" {
			ans.Epoch = epoch
		}
	}}
}
