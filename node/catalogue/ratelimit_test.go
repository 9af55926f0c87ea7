package catalogue

import (
	"fmt"
	"testing"
	"time"
)

// TestLimiter: a bucket of burst tokens per address, refilled at the
// rate; an address past it waits whole seconds until a token; addresses
// are apart; an idle address is forgotten; past maxAddrs new addresses
// share one bucket; IPv6 addresses are keyed by their /64.
func TestLimiter(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	l := newLimiter(60, 3, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := l.allow("192.0.2.1"); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	if ok, wait := l.allow("192.0.2.1"); ok || wait != time.Second {
		t.Errorf("4th request: allowed %v, wait %v; want refused, 1s", ok, wait)
	}
	if ok, _ := l.allow("192.0.2.2"); !ok {
		t.Error("another address refused: buckets are per address")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, wait := l.allow("192.0.2.1"); ok || wait != time.Second {
		t.Errorf("after half a token: allowed %v, wait %v; want refused, 1s (whole seconds)", ok, wait)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.allow("192.0.2.1"); !ok {
		t.Error("after a second at 60 a minute, a token is back, yet refused")
	}
	if ok, _ := l.allow("192.0.2.1"); ok {
		t.Error("that token was taken, yet allowed again")
	}

	// Idle past the time to fill (3 s): forgotten at the next sweep.
	now = now.Add(10 * time.Second)
	l.allow("192.0.2.9")
	if k := l.remembered(); k != 1 {
		t.Errorf("after 10 s idle, %d addresses remembered, want 1 (the new one)", k)
	}

	// The bound: past maxAddrs, new addresses share the overflow bucket.
	for i := range maxAddrs + 10 {
		l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255))
	}
	if k := l.remembered(); k > maxAddrs+1 {
		t.Errorf("%d addresses remembered, at most %d", k, maxAddrs+1)
	}
	for range 3 {
		l.allow("198.51.100.7")
	}
	if ok, _ := l.allow("198.51.100.8"); ok {
		t.Error("past the bound, a new address got a bucket of its own, not the shared one")
	}

	for _, c := range []struct{ remote, key string }{
		{"192.0.2.1:443", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:80", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"},
		{"@", "?@"},
	} {
		if got := addrKey(c.remote); got != c.key {
			t.Errorf("addrKey(%q) = %q, want %q", c.remote, got, c.key)
		}
	}
}

// TestLimiterOlderTime: a request whose time is older than its bucket's
// (read just before another request took the lock) does not set the
// bucket back, so no interval is refilled twice.
func TestLimiterOlderTime(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	l := newLimiter(60, 1, func() time.Time { return now })
	if ok, _ := l.allow("192.0.2.1"); !ok {
		t.Fatal("the first request refused")
	}
	now = t0.Add(-500 * time.Millisecond)
	if ok, _ := l.allow("192.0.2.1"); ok {
		t.Error("a second request at once allowed past a burst of 1")
	}
	now = t0.Add(600 * time.Millisecond)
	if ok, _ := l.allow("192.0.2.1"); ok {
		t.Error("0.6 s after the first request, at a token a second, allowed: the older time refilled 0.5 s twice")
	}
	now = t0.Add(time.Second)
	if ok, _ := l.allow("192.0.2.1"); !ok {
		t.Error("a second after the first request, at a token a second, refused")
	}
}
