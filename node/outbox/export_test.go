package outbox

// Observe is Options that hand the outbox to *out when the node builds it.
func Observe(out **Outbox) Options {
	return Options{observe: func(o *Outbox) { *out = o }}
}

// OnPageRead makes f run between the relay's read of a page and its marks.
// Set it before the relay reads anything.
func (o *Outbox) OnPageRead(f func()) { o.opts.pageRead = f }

// CacheReads and CacheHits count the envelopes the relay read from the
// database and took from the cache.
func (o *Outbox) CacheReads() int64 { return o.cache.reads.Load() }
func (o *Outbox) CacheHits() int64  { return o.cache.hits.Load() }

// CacheHeld is how many envelopes, and bytes, the cache holds.
func (o *Outbox) CacheHeld() (envelopes, bytes int) { return o.cache.held() }

// SetCacheLimit sets the cache's byte bound.
func (o *Outbox) SetCacheLimit(limit int) { o.cache.setLimit(limit) }
