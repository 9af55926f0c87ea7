package outbox

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// TestEnvelopeCache: the cache's byte bound evicts oldest first, replacing
// an envelope's entry counts it once, an envelope larger than the bound is
// not kept, and removing frees its bytes.
func TestEnvelopeCache(t *testing.T) {
	var c envelopeCache
	c.setLimit(10)
	check := func(step string, want ...string) {
		t.Helper()
		size := 0
		for _, eid := range want {
			data, ok := c.get(eid)
			if !ok {
				t.Errorf("%s: %s not held", step, eid)
			}
			size += len(data)
		}
		if k, got := c.held(); k != len(want) || got != size {
			t.Errorf("%s: holds %d envelopes, %d bytes; want %d, %d", step, k, got, len(want), size)
		}
	}
	c.put("a", []byte("aaaa"))
	c.put("b", []byte("bbbb"))
	check("two put", "a", "b")
	c.put("c", []byte("cccc"))
	check("third put evicts the oldest", "b", "c")
	if _, ok := c.get("a"); ok {
		t.Error("a held after its eviction")
	}
	c.put("b", []byte("BB"))
	check("b replaced", "b", "c")
	if data, _ := c.get("b"); !bytes.Equal(data, []byte("BB")) {
		t.Errorf("b holds %q, want the replacement", data)
	}
	c.put("big", make([]byte, 11))
	check("larger than the bound: not kept, nothing evicted", "b", "c")
	c.put("d", []byte("dddd")) // 2+4+4 = 10: fits
	check("fits exactly", "b", "c", "d")
	c.remove("c", "unknown")
	check("c removed", "b", "d")
	c.setLimit(4)
	check("bound lowered", "d")

	var zero envelopeCache
	zero.put("x", make([]byte, 1<<20))
	if k, size := zero.held(); k != 1 || size != 1<<20 {
		t.Errorf("zero cache holds %d envelopes, %d bytes; want 1, %d", k, size, 1<<20)
	}
}

// TestRelayPageBytes: the relay holds at most relayPageBytes of envelopes
// per page (one envelope at least), the rest waiting for the next page.
func TestRelayPageBytes(t *testing.T) {
	o := &Outbox{}
	o.cache.setLimit(4 * relayPageBytes)
	big := make([]byte, relayPageBytes*5/8) // shared by the entries: memory for one
	page := make([]outboxRow, 3)
	for i := range page {
		page[i] = outboxRow{id: int64(i + 1), eid: fmt.Sprintf("env-%d", i)}
		o.cache.put(page[i].eid, big)
	}
	loaded, err := o.loadEnvelopes(context.Background(), page)
	if err != nil || loaded != 2 {
		t.Fatalf("loaded %d of 3 envelopes of %d bytes each (%v), want 2: the second passes %d bytes", loaded, len(big), err, relayPageBytes)
	}
	loaded, err = o.loadEnvelopes(context.Background(), page[2:])
	if err != nil || loaded != 1 {
		t.Fatalf("loaded %d (%v), want the one envelope left", loaded, err)
	}
}
