package share

import "testing"

// TestEnvelopePlaintextFor: envelopes close at half the server's maximum
// message size, at most 4 MiB.
func TestEnvelopePlaintextFor(t *testing.T) {
	for _, c := range []struct {
		maxPayload int64
		want       int
	}{
		{1 << 20, 512 << 10}, // NATS's default
		{8 << 20, 4 << 20},
		{64 << 20, 4 << 20},
		{1, 1}, // an envelope holds a record whatever the server says
		{0, 512 << 10},
	} {
		if got := envelopePlaintextFor(c.maxPayload); got != c.want {
			t.Errorf("max payload %d: envelopes close at %d bytes, want %d", c.maxPayload, got, c.want)
		}
	}
}
