package node

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A peer that sends a flood of refused envelopes, or a disk that keeps
// failing, would otherwise write one warning each, and drown the log an
// operator reads. The node's logger passes the first logBurst warnings
// and errors of one message per logWindow; the rest are counted, and one
// line says how many were left out, once the window is over. Metrics and
// the evidence log count every event whatever the log shows.
const (
	logWindow = time.Minute
	logBurst  = 10
)

// limitedHandler passes records below Warn through and limits the rest,
// per level and message, as the package comment above says.
type limitedHandler struct {
	slog.Handler
	st *limitState // shared by the handlers WithAttrs and WithGroup derive
}

type limitState struct {
	mu     sync.Mutex
	now    func() time.Time
	counts map[limitKey]*limitCount
	out    slog.Handler // the handler summaries are written to
}

type limitKey struct {
	level slog.Level
	msg   string
}

type limitCount struct {
	start      time.Time
	passed     int
	suppressed int
}

func newLimitedHandler(h slog.Handler, now func() time.Time) *limitedHandler {
	return &limitedHandler{Handler: h, st: &limitState{now: now, counts: map[limitKey]*limitCount{}, out: h}}
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	st := h.st
	st.mu.Lock()
	now := st.now()
	k := limitKey{r.Level, r.Message}
	c := st.counts[k]
	var summary *slog.Record
	if c == nil || now.Sub(c.start) >= logWindow {
		if c != nil && c.suppressed > 0 {
			s := st.summary(k, c, now)
			summary = &s
		}
		c = &limitCount{start: now}
		st.counts[k] = c
	}
	pass := c.passed < logBurst
	if pass {
		c.passed++
	} else {
		c.suppressed++
	}
	st.mu.Unlock()
	if summary != nil {
		if err := h.Handler.Handle(ctx, *summary); err != nil {
			return err
		}
	}
	if !pass {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &limitedHandler{Handler: h.Handler.WithAttrs(as), st: h.st}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{Handler: h.Handler.WithGroup(name), st: h.st}
}

// summary is the line that says how many records of k were left out.
func (st *limitState) summary(k limitKey, c *limitCount, now time.Time) slog.Record {
	r := slog.NewRecord(now, k.level, "repeated log lines left out", 0)
	r.AddAttrs(slog.String("message", k.msg), slog.Int("left_out", c.suppressed),
		slog.Int("shown", c.passed), slog.Duration("within", now.Sub(c.start).Round(time.Second)))
	return r
}

// flush writes the summaries of the windows that are over, and forgets
// them: the node runs it every logWindow, so that a flood that stopped is
// still reported.
func (st *limitState) flush(ctx context.Context) {
	st.mu.Lock()
	now := st.now()
	var out []slog.Record
	for k, c := range st.counts {
		if now.Sub(c.start) < logWindow {
			continue
		}
		if c.suppressed > 0 {
			out = append(out, st.summary(k, c, now))
		}
		delete(st.counts, k)
	}
	st.mu.Unlock()
	for _, r := range out {
		_ = st.out.Handle(ctx, r) // a summary that cannot be written is lost like any log line
	}
}

// run flushes every logWindow until ctx ends.
func (st *limitState) run(ctx context.Context) {
	t := time.NewTicker(logWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st.flush(ctx)
		}
	}
}
