package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestStatusLoopbackOnly: the page answers loopback peers that no proxy
// relayed, and nobody else.
func TestStatusLoopbackOnly(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page") })
	h := (&Server{log: slog.New(slog.DiscardHandler)}).loopbackOnly(ok)
	for _, c := range []struct {
		remote string
		header string
		want   int
	}{
		{"127.0.0.1:5000", "", http.StatusOK},
		{"[::1]:5000", "", http.StatusOK},
		{"127.0.0.2:5000", "", http.StatusOK},
		{"192.0.2.7:5000", "", http.StatusForbidden},
		{"[2001:db8::1]:5000", "", http.StatusForbidden},
		{"127.0.0.1:5000", "X-Forwarded-For", http.StatusForbidden},
		{"127.0.0.1:5000", "Forwarded", http.StatusForbidden},
		{"garbage", "", http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodGet, "/status", nil)
		r.RemoteAddr = c.remote
		if c.header != "" {
			r.Header.Set(c.header, "192.0.2.9")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("remote %s, header %q: got %d, want %d", c.remote, c.header, w.Code, c.want)
		}
	}
}

func TestStatusDurations(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		t    time.Time
		want string
		warn bool
	}{
		{now.Add(400 * 24 * time.Hour), "in 400d", false},
		{now.Add(29 * 24 * time.Hour), "in 29d", true},
		{now.Add(90 * time.Minute), "in 1h30m0s", true},
		{now.Add(-3 * 24 * time.Hour), "expired 3d ago", true},
	} {
		got, warn := expiresIn(c.t, now)
		if got != c.want || warn != c.warn {
			t.Errorf("expiresIn(%v) = %q, %v; want %q, %v", c.t.Sub(now), got, warn, c.want, c.warn)
		}
	}
}
