package outbox

import (
	"container/list"
	"sync"
	"sync/atomic"
)

// envelopeCacheBytes bounds the envelopes an [envelopeCache] holds: a few
// hundred envelopes of the default batch size, far more than the relay has
// in flight when it keeps up.
const envelopeCacheBytes = 64 << 20

// envelopeCache holds the envelopes most recently written to the outbox, by
// envelope id, so that the relay publishes them without reading them back
// from outbox_data. The outbox stays the truth: the relay takes from the
// cache only the bytes of a row it has read from the outbox and marked
// attempted, and reads the database for whatever the cache lacks (after a
// restart, or evicted).
//
// Entries are keyed by envelope id, never by outbox row id: SQLite may give
// a rolled-back row's id to the next row, while envelope ids are random. An
// entry whose transaction rolled back, or whose row was dropped before the
// relay saw it, is never asked for; it ages out, oldest first, as the byte
// bound is reached.
//
// The zero value is an empty cache bounded by envelopeCacheBytes; it is
// safe for concurrent use.
type envelopeCache struct {
	mu    sync.Mutex
	limit int                      // bytes; 0 means envelopeCacheBytes
	size  int                      // bytes held
	byID  map[string]*list.Element // of *cachedEnvelope
	order list.List                // of *cachedEnvelope, oldest first

	// hits and reads count envelopes the relay took from the cache and
	// read from the database, for tests.
	hits, reads atomic.Int64
}

// cachedEnvelope is one entry of an envelopeCache.
type cachedEnvelope struct {
	eid  string
	data []byte
}

// setLimit bounds the cache to limit bytes, evicting what does not fit.
func (c *envelopeCache) setLimit(limit int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit = limit
	c.evict(0)
}

// put keeps data as envelope eid's, replacing what eid had; the cache keeps
// data itself, which nobody may modify afterwards. An envelope larger than
// the whole bound is not kept.
func (c *envelopeCache) put(eid string, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removeLocked(eid)
	if len(data) > c.max() {
		return
	}
	c.evict(len(data))
	if c.byID == nil {
		c.byID = map[string]*list.Element{}
	}
	c.byID[eid] = c.order.PushBack(&cachedEnvelope{eid: eid, data: data})
	c.size += len(data)
}

// get returns envelope eid's bytes, if the cache holds them.
func (c *envelopeCache) get(eid string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[eid]
	if !ok {
		return nil, false
	}
	return e.Value.(*cachedEnvelope).data, true
}

// remove forgets the envelopes eids, once sent or dropped.
func (c *envelopeCache) remove(eids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, eid := range eids {
		c.removeLocked(eid)
	}
}

// held reports how many envelopes and bytes the cache holds.
func (c *envelopeCache) held() (envelopes, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID), c.size
}

func (c *envelopeCache) max() int {
	if c.limit > 0 {
		return c.limit
	}
	return envelopeCacheBytes
}

func (c *envelopeCache) removeLocked(eid string) {
	e, ok := c.byID[eid]
	if !ok {
		return
	}
	c.order.Remove(e)
	delete(c.byID, eid)
	c.size -= len(e.Value.(*cachedEnvelope).data)
}

// evict drops the oldest entries until room more bytes fit.
func (c *envelopeCache) evict(room int) {
	for c.size+room > c.max() {
		oldest := c.order.Front()
		if oldest == nil {
			return
		}
		c.removeLocked(oldest.Value.(*cachedEnvelope).eid)
	}
}
