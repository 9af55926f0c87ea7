package linkage

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/schema"
)

// TestHandleRefusesMalformed: a linkage message that does not parse, of an
// unknown type, or a request out of bounds is refused as bad content before
// anything is read or written, and counted as malformed.
func TestHandleRefusesMalformed(t *testing.T) {
	m := metrics.New(schema.Default(), metrics.Labels{LinkageRefused: Reasons})
	s := New(Deps{NodeID: "uni-e", Role: crypto.RoleUniversity, Metrics: m})
	req := func(edit func(*message)) []byte {
		msg := message{V: 1, Type: msgRequest, Request: "0123456789abcdef0123456789abcdef", Chunk: 0, Chunks: 1, Total: 2,
			Purpose: "statistics", Epoch: "2026", KeyID: "l-0000000000000000", Part: 1024, Elements: make([]byte, 2*ElementSize)}
		edit(&msg)
		b, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string][]byte{
		"not JSON":          []byte("{"),
		"version 2":         req(func(m *message) { m.V = 2 }),
		"short request id":  req(func(m *message) { m.Request = "abc" }),
		"unknown type":      req(func(m *message) { m.Type = "gossip" }),
		"no elements":       req(func(m *message) { m.Elements = nil }),
		"ragged elements":   req(func(m *message) { m.Elements = make([]byte, 33) }),
		"too many elements": req(func(m *message) { m.Elements = make([]byte, (MaxChunk+1)*ElementSize); m.Total = MaxChunk + 1 }),
		"part 0":            req(func(m *message) { m.Part = 0 }),
		"part too large":    req(func(m *message) { m.Part = MaxPart + 1 }),
		"part too small": req(func(m *message) {
			m.Elements, m.Total, m.Part = make([]byte, 2*MinPart*ElementSize), 2*MinPart, MinPart-1
		}),
		"chunk past chunks": req(func(m *message) { m.Chunk = 1 }),
		"total below chunk": req(func(m *message) { m.Total = 1 }),
		"negative chunk":    req(func(m *message) { m.Chunk = -1 }),
		"no chunks":         req(func(m *message) { m.Chunks = 0 }),
	}
	sender := &crypto.Credential{NodeID: "uni-a", Role: crypto.RoleUniversity}
	for name, plain := range cases {
		err := s.Handle(context.Background(), crypto.Header{Sender: "uni-a"}, sender, plain)
		var ref *envelope.Refusal
		if !errors.As(err, &ref) || ref.Reason != envelope.RefuseContent {
			t.Errorf("%s: %v, want a refusal %s", name, err, envelope.RefuseContent)
		}
	}
	if got := testutil.ToFloat64(m.Linkage.Refused.WithLabelValues(RefuseMalformed)); got != float64(len(cases)) {
		t.Errorf("malformed refusals counted: %v, want %d", got, len(cases))
	}
}

// TestDecodePoint: only canonical encodings of group elements other
// than the identity pass.
func TestDecodePoint(t *testing.T) {
	g := Suite.Group()
	e := g.Generator()
	good, err := e.MarshalBinaryCompress()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodePoint(good, 0); err != nil {
		t.Errorf("the generator: %v", err)
	}
	identity := make([]byte, ElementSize)
	if _, err := decodePoint(identity, 0); err == nil {
		t.Error("the identity decoded")
	}
	bad := append([]byte(nil), good...)
	bad[31] |= 0x80 // not canonical
	if _, err := decodePoint(bad, 0); err == nil {
		t.Error("a non-canonical encoding decoded")
	}
}
