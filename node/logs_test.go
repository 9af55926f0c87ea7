package node

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestRepeatedWarningsLimited: of one warning repeated many times within
// a minute, the first ten are written and the rest counted, in one line
// once the minute is over (at the next such warning, or at the flush the
// node runs every minute); other messages and levels below Warn pass.
func TestRepeatedWarningsLimited(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)
	h := newLimitedHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), func() time.Time { return now })
	log := slog.New(h).With("node", "uni-a")
	for range 25 {
		log.Warn("envelope refused", "reason", "bad_signature")
		log.Info("stored")
	}
	log.Warn("another warning")
	if got := strings.Count(buf.String(), "envelope refused"); got != logBurst {
		t.Errorf("%d refusals written within the minute, want %d", got, logBurst)
	}
	if got := strings.Count(buf.String(), "msg=stored"); got != 25 {
		t.Errorf("%d info lines, want all 25", got)
	}
	if !strings.Contains(buf.String(), "another warning") {
		t.Error("another message was held back with the first")
	}
	now = now.Add(logWindow)
	log.Warn("envelope refused", "reason", "bad_signature")
	out := buf.String()
	if !strings.Contains(out, `msg="repeated log lines left out" node=uni-a message="envelope refused" left_out=15 shown=10`) {
		t.Errorf("no summary of the 15 left out:\n%s", out)
	}
	// A flood that stops is still summed up by the flush.
	buf.Reset()
	for range 12 {
		log.Error("database write failed")
	}
	now = now.Add(2 * logWindow)
	h.st.flush(context.Background())
	if !strings.Contains(buf.String(), `message="database write failed" left_out=2`) {
		t.Errorf("the flush did not sum up the stopped flood:\n%s", buf.String())
	}
}
