// Package wait owns waiting in tests: on a condition, polled with a short
// backoff until it holds or a deadline passes, and failing the test with
// what it waited for when it does not; and, for a test that must let time
// pass on purpose (a fault injected at a random moment), a pause that ends
// with its context. Tests wait through it, never on fixed sleeps.
//
// It belongs to the tests alone: production code must never import it
// (TestHelpersOnlyInTests in package test checks).
package wait

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The pause between two polls starts at firstPause and doubles up to
// maxPause: a condition that holds soon is seen soon, one that takes long
// is not polled in a busy loop.
const (
	firstPause = 5 * time.Millisecond
	maxPause   = 100 * time.Millisecond
)

// nextPause is the pause after p.
func nextPause(p time.Duration) time.Duration { return min(2*p, maxPause) }

// errNotYet is what a boolean condition that does not hold yet returns.
var errNotYet = errors.New("condition not met")

// poll calls cond until it returns nil or timeout has passed, pausing
// between calls; cond is called once more when the deadline comes. It
// returns nil, or cond's last error.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := firstPause
	for {
		err := cond()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		For(context.Background(), min(pause, left))
		pause = nextPause(pause)
	}
}

// Poll calls cond until it returns nil, for at most timeout. It returns
// nil, or an error naming what it waited for, how long, and cond's last
// error. It is for a test that has something to do before it fails (log
// a diagnosis, report without stopping); otherwise Until and UntilErr.
func Poll(timeout time.Duration, what string, cond func() error) error {
	if err := poll(timeout, cond); err != nil {
		return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, err)
	}
	return nil
}

// Until waits, for at most timeout, until cond returns true; else it
// fails the test: "timed out after <timeout> waiting for <what>".
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// UntilErr waits, for at most timeout, until cond returns nil; else it
// fails the test with what it waited for and cond's last error.
func UntilErr(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, what, cond); err != nil {
		t.Fatalf("%v", err)
	}
}

// For lets d pass, for a test that paces itself on purpose (a fault
// injected at a random moment), never to wait for something to happen:
// that is Until's job. It returns nil, or ctx.Err() as soon as ctx ends.
func For(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
