package catalogue

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The DSP endpoint's rate limit (CATALOGUE.md §5): a token bucket per
// remote address, refilled at DSPRate requests a minute up to DSPBurst.
const (
	// DefaultDSPRate is the requests a minute one address may make.
	DefaultDSPRate = 120
	// DefaultDSPBurst is the requests one address may make at once.
	DefaultDSPBurst = 30
	// maxAddrs bounds the addresses the limiter remembers; past it (after
	// forgetting the idle ones), new addresses share one bucket, so that
	// no number of addresses grows the node's memory.
	maxAddrs = 1 << 16
	// overflow is the key of that shared bucket (no address is empty).
	overflow = ""
)

// limiter is a token bucket per remote address. An address whose bucket
// would be full again is forgotten, which changes nothing it may do: a
// full bucket and none are the same.
type limiter struct {
	rate  float64 // tokens a second
	burst float64
	now   func() time.Time

	mu    sync.Mutex
	addrs map[string]*bucket
	swept time.Time
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newLimiter(perMinute, burst int, now func() time.Time) *limiter {
	if perMinute <= 0 {
		perMinute = DefaultDSPRate
	}
	if burst <= 0 {
		burst = DefaultDSPBurst
	}
	return &limiter{rate: float64(perMinute) / 60, burst: float64(burst), now: now, addrs: map[string]*bucket{}}
}

// idle is how long a bucket takes to fill from empty: after it, an
// address is forgotten.
func (l *limiter) idle() time.Duration {
	return time.Duration(l.burst / l.rate * float64(time.Second))
}

// allow takes a token of key's bucket; when there is none, it says how
// long until there is one.
func (l *limiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The clock is read under the lock: a time read before it could be
	// older than a bucket's, setting the bucket back and refilling the
	// same interval twice.
	now := l.now()
	// A sweep walks every address: at most once per fill time, or per
	// second when the limiter is full, never once per request.
	if since := now.Sub(l.swept); since >= l.idle() || len(l.addrs) >= maxAddrs && since >= time.Second {
		l.sweep(now)
	}
	b := l.addrs[key]
	if b == nil {
		if len(l.addrs) >= maxAddrs {
			key = overflow
			b = l.addrs[key]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, at: now}
			l.addrs[key] = b
		}
	}
	if dt := now.Sub(b.at); dt > 0 {
		b.tokens = min(l.burst, b.tokens+dt.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := math.Ceil((1 - b.tokens) / l.rate)
	return false, time.Duration(wait) * time.Second
}

// sweep forgets the addresses whose buckets are full again by now.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.addrs {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.addrs, k)
		}
	}
	l.swept = now
}

// remembered is how many addresses the limiter holds.
func (l *limiter) remembered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}

// addrKey is the bucket key of a request's remote address: its IP, or
// for IPv6 its /64, since one host commonly holds a whole /64.
func addrKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "?" + host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// limit answers 429 with a dspace:CatalogError and Retry-After, counted
// as rate_limited, to a remote address past its rate; it passes the
// others to h.
func (c *Catalogue) limit(l *limiter, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := l.allow(addrKey(r.RemoteAddr))
		if !ok {
			secs := strconv.Itoa(int(wait / time.Second))
			w.Header().Set("Retry-After", secs)
			c.dspError(w, http.StatusTooManyRequests, "rate_limited",
				"more requests from this address than the endpoint answers; retry after "+secs+" s")
			return
		}
		h.ServeHTTP(w, r)
	})
}
