package node_test

import (
	"testing"

	"github.com/eduspace/eduspace/node/nodetest"
)

// TestEnvelopePlaintextEmbedded: a node on the embedded server (8 MiB)
// gets the largest envelopes, 4 MiB.
func TestEnvelopePlaintextEmbedded(t *testing.T) {
	s := nodetest.NewSpace(t)
	a := s.Open(s.Config("uni-a"))
	if got := a.EnvelopePlaintext(); got != 4<<20 {
		t.Errorf("on the embedded server envelopes close at %d bytes, want %d", got, 4<<20)
	}
}
