package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
)

// upload is a file being sent to the node (ingest, share FILE). On a
// terminal it writes a progress line once a second: the lines sent (a
// record each in NDJSON and CSV) and their rate, bytes sent of the file's
// size, and the time left. The node counts records and refusals exactly;
// its answer, printed at the end, has them.
type upload struct {
	r     io.ReadSeeker
	size  int64
	out   io.Writer // nil: no progress lines
	start time.Time

	mu    sync.Mutex
	sent  int64
	lines int64
	last  time.Time
	shown bool
}

func newProgress(r io.ReadSeeker, size int64, stderr io.Writer) *upload {
	now := time.Now()
	return &upload{r: r, size: size, out: progressTo(stderr), start: now, last: now}
}

func (u *upload) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sent += int64(n)
	u.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	if u.out != nil && time.Since(u.last) >= time.Second {
		u.last = time.Now()
		u.show()
	}
	return n, err
}

// Seek rewinds for a request that is sent again (a 409 with Retry-After).
func (u *upload) Seek(off int64, whence int) (int64, error) {
	pos, err := u.r.Seek(off, whence)
	u.mu.Lock()
	u.sent, u.lines, u.start = pos, 0, time.Now()
	u.mu.Unlock()
	return pos, err
}

func (u *upload) show() {
	el := time.Since(u.start).Seconds()
	rate := float64(u.sent) / el
	line := fmt.Sprintf("\r%d lines sent (%.0f/s), %.1f of %.1f MiB (%.0f%%)", u.lines, float64(u.lines)/el,
		mib(u.sent), mib(u.size), 100*float64(u.sent)/float64(max(u.size, 1)))
	if rate > 0 && u.sent < u.size {
		line += fmt.Sprintf(", about %s left", (time.Duration(float64(u.size-u.sent)/rate) * time.Second).Round(time.Second))
	} else if u.sent >= u.size {
		line += "; waiting for the node's answer"
	}
	fmt.Fprintf(u.out, "%-78s", line)
	u.shown = true
}

// stop ends the progress line, so that what follows starts on its own.
func (u *upload) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.shown {
		u.show()
		fmt.Fprintln(u.out)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
