package wait

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records what the helpers would fail a test with.
type fakeTB struct {
	testing.TB // nil: only what the helpers call is implemented
	fatal      []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = append(f.fatal, fmt.Sprintf(format, args...))
}

// TestUntilPollsUntilTrue: a condition that holds at its fifth call ends
// the wait there, without failing the test.
func TestUntilPollsUntilTrue(t *testing.T) {
	ft := &fakeTB{}
	calls := 0
	Until(ft, time.Minute, "the fifth call", func() bool {
		calls++
		return calls == 5
	})
	if calls != 5 || len(ft.fatal) != 0 {
		t.Errorf("%d calls, failures %q; want 5 calls and no failure", calls, ft.fatal)
	}
}

// TestUntilTimesOut: a condition that never holds fails the test once,
// saying what was awaited, after more than one call.
func TestUntilTimesOut(t *testing.T) {
	ft := &fakeTB{}
	calls := 0
	Until(ft, 30*time.Millisecond, "the impossible", func() bool {
		calls++
		return false
	})
	if len(ft.fatal) != 1 || ft.fatal[0] != "timed out after 30ms waiting for the impossible" {
		t.Errorf("failures %q; want one, naming the timeout and the impossible", ft.fatal)
	}
	if calls < 2 {
		t.Errorf("the condition was called %d times; want it polled", calls)
	}
}

// TestUntilErrReportsLastError: the failure carries the condition's last
// error; a condition that returns nil ends the wait.
func TestUntilErrReportsLastError(t *testing.T) {
	ft := &fakeTB{}
	calls := 0
	UntilErr(ft, 30*time.Millisecond, "the receiver", func() error {
		calls++
		return fmt.Errorf("attempt %d", calls)
	})
	want := fmt.Sprintf("timed out after 30ms waiting for the receiver: attempt %d", calls)
	if len(ft.fatal) != 1 || ft.fatal[0] != want {
		t.Errorf("failures %q; want [%q]", ft.fatal, want)
	}

	ft, calls = &fakeTB{}, 0
	UntilErr(ft, time.Minute, "the third call", func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 || len(ft.fatal) != 0 {
		t.Errorf("%d calls, failures %q; want 3 calls and no failure", calls, ft.fatal)
	}
}

// TestPoll returns nil once the condition holds, else an error wrapping
// its last one.
func TestPoll(t *testing.T) {
	last := errors.New("still down")
	err := Poll(20*time.Millisecond, "the server", func() error { return last })
	if !errors.Is(err, last) || !strings.Contains(err.Error(), "waiting for the server") {
		t.Errorf("Poll: %v; want an error naming the server and wrapping its last error", err)
	}
	calls := 0
	if err := Poll(time.Minute, "the second call", func() error {
		if calls++; calls < 2 {
			return last
		}
		return nil
	}); err != nil || calls != 2 {
		t.Errorf("Poll: %v after %d calls; want nil after 2", err, calls)
	}
}

// TestBackoff: the pause doubles from 5 ms and stays at 100 ms.
func TestBackoff(t *testing.T) {
	var got []time.Duration
	for p := firstPause; len(got) < 7; p = nextPause(p) {
		got = append(got, p)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 100, 100}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("pauses %v; want %v ms", got, want)
		}
	}
}

// TestForEndsWithItsContext: For returns nil once d has passed, and the
// context's error as soon as the context ends (an hour's pause would
// otherwise hang the test).
func TestForEndsWithItsContext(t *testing.T) {
	if err := For(context.Background(), time.Millisecond); err != nil {
		t.Errorf("For: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- For(ctx, time.Hour) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("For with its context cancelled: %v", err)
	}
	if err := For(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("For with its context already ended: %v", err)
	}
}
