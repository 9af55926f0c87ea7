package node

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/store"
)

// dataKeys keeps the values a node stores sealed under its current data
// key (node/keys/KEYS.md §1): once at start it seals what is in clear or
// under a key being retired, and after a rotation it re-seals every value
// under the new key, a page at a time, then compacts the database and
// retires the old key. A kill at any instant loses nothing: a value is
// rewritten in one transaction, and a key is retired only once nothing is
// sealed under it; the next start goes on where it stopped.
type dataKeys struct {
	dk     *keys.DataKey // nil: storage.encrypt off
	db     *store.DB
	ev     *evidence.Log
	log    *slog.Logger
	now    func() time.Time
	grace  time.Duration
	page   func(context.Context) // DataKeyOptions.Page
	parts  []sealedPart
	wake   chan struct{}
	sealed atomic.Int64

	mu      sync.Mutex
	passing bool      // a sealing pass runs: a rotation waits for its end
	started time.Time // the last rotation this process started
	total   int64     // sealed when it started
}

// sealedPart is what one part stores sealed: its sealing pass and its
// count of what is left to seal.
type sealedPart struct {
	name     string
	seal     func(context.Context, func(int)) (int, error)
	unsealed func(context.Context) (int, error)
}

// DataKeyOptions are the data key rotation's test seams.
type DataKeyOptions struct {
	// Grace replaces dataKeyGrace when set.
	Grace time.Duration
	// Page, when set, is called after each page of values is sealed, with
	// the pass's context (cancelled when the node closes).
	Page func(context.Context)
}

// dataKeyGrace is how long after a rotation the old key is kept at least,
// even once nothing stored is sealed under it: a value sealed just before
// the rotation (an ingest's batch) may still be on its way to the
// database.
const dataKeyGrace = time.Minute

// run seals once at start, and again whenever a rotation wakes it or a
// key being retired may be retired.
func (k *dataKeys) run(ctx context.Context) {
	if k.dk == nil {
		return
	}
	for {
		k.pass(ctx)
		// Keys still retiring: the pass comes again once the rotation's
		// wait is over, or a minute after a pass that could not retire them
		// (a value that did not re-seal, readers that kept the WAL).
		var later <-chan time.Time
		if len(k.dk.Retiring()) > 0 {
			k.mu.Lock()
			wait := k.started.Add(k.grace).Sub(k.now())
			k.mu.Unlock()
			if wait <= 0 {
				wait = time.Minute
			}
			later = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-k.wake:
		case <-later:
		}
	}
}

// pass seals every value not sealed under the current key, and retires
// the keys being retired once nothing is sealed under them.
func (k *dataKeys) pass(ctx context.Context) {
	k.mu.Lock()
	k.passing = true
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.passing = false
		k.mu.Unlock()
	}()
	complete := true
	for _, p := range k.parts {
		n, err := p.seal(ctx, func(n int) {
			k.sealed.Add(int64(n))
			if k.page != nil {
				k.page(ctx)
			}
		})
		if err != nil {
			if ctx.Err() == nil {
				k.log.Warn("sealing at rest stopped; it goes on after the next rotation or start", "what", p.name, "err", err)
			}
			complete = false
			continue
		}
		if n > 0 {
			k.log.Info("sealed at rest under the current data key", "what", p.name, "count", n, "key", k.dk.ID())
		}
	}
	retiring := k.dk.Retiring()
	if !complete || len(retiring) == 0 {
		return
	}
	k.mu.Lock()
	early := !k.started.IsZero() && k.now().Before(k.started.Add(k.grace))
	k.mu.Unlock()
	if early {
		return
	}
	if err := k.retire(ctx, retiring); err != nil && ctx.Err() == nil {
		k.log.Warn("data key not retired yet; tried again in a while", "err", err)
	}
}

// retire checks that nothing stored is sealed under the keys being
// retired, compacts the database so that no freed page keeps a value
// sealed under them, records the rotation's end and deletes them.
func (k *dataKeys) retire(ctx context.Context, retiring []string) error {
	left, err := k.remaining(ctx)
	if err != nil {
		return err
	}
	if left > 0 {
		return fmt.Errorf("%d values are still to be sealed under the current key", left)
	}
	if err := k.db.Compact(ctx, time.Minute); err != nil {
		return err
	}
	k.mu.Lock()
	count := int(k.sealed.Load() - k.total)
	k.mu.Unlock()
	// The entry first: a stop before the keys are deleted finishes again
	// at the next start, and records the end twice rather than never.
	if err := k.db.Write(ctx, func(tx *sql.Tx) error {
		return k.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDataKey, Reason: "rotation_finished", Count: count})
	}); err != nil {
		return fmt.Errorf("record the end of the rotation: %w", err)
	}
	for _, id := range retiring {
		if err := k.dk.Retire(id); err != nil {
			return err
		}
	}
	k.log.Info("data key rotated: old keys retired", "key", k.dk.ID(), "retired", len(retiring), "resealed", count)
	return nil
}

// remaining counts the stored values not sealed under the current key.
func (k *dataKeys) remaining(ctx context.Context) (int, error) {
	total := 0
	for _, p := range k.parts {
		n, err := p.unsealed(ctx)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// passWait is how long Rotate waits for a sealing pass under way to end
// before it refuses.
const passWait = 10 * time.Second

// Rotate makes a new data key current and wakes the background pass that
// re-seals what is stored under the old one. It refuses while a pass or
// an earlier rotation is under way (waiting passWait for a pass to end).
func (k *dataKeys) Rotate(ctx context.Context) (keys.DataKeyState, error) {
	if k.dk == nil {
		return keys.DataKeyState{}, keys.ErrNoDataKey
	}
	// A pass under way (the one at start) is short unless the node is
	// sealing what it stored in clear: wait for it a while.
	k.mu.Lock()
	for wait := time.Now().Add(passWait); k.passing && len(k.dk.Retiring()) == 0 && time.Now().Before(wait) && ctx.Err() == nil; {
		k.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		k.mu.Lock()
	}
	if k.passing || len(k.dk.Retiring()) > 0 {
		k.mu.Unlock()
		left, _ := k.remaining(ctx)
		return keys.DataKeyState{}, fmt.Errorf("%w (%d values left to seal under key %s): wait until GET /v1/data-key shows no key retiring, then rotate again",
			keys.ErrRotationUnderway, left, k.dk.ID())
	}
	// In the write transaction that records it: a value sealed under the
	// old key in a transaction still running is committed before the
	// rotation, and the pass then finds it.
	err := k.db.Write(ctx, func(tx *sql.Tx) error {
		if err := k.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDataKey, Reason: "rotation_started"}); err != nil {
			return err
		}
		_, err := k.dk.Rotate()
		return err
	})
	if err == nil {
		k.started, k.total = k.now(), k.sealed.Load()
	}
	k.mu.Unlock()
	if err != nil {
		return keys.DataKeyState{}, fmt.Errorf("rotate the data key: %w", err)
	}
	k.log.Info("data key rotated: re-sealing what is stored under the old one in the background", "key", k.dk.ID())
	select {
	case k.wake <- struct{}{}:
	default:
	}
	return k.State(ctx)
}

// State reports the current key, the keys being retired and the progress
// of sealing under the current key.
func (k *dataKeys) State(ctx context.Context) (keys.DataKeyState, error) {
	if k.dk == nil {
		return keys.DataKeyState{}, keys.ErrNoDataKey
	}
	left, err := k.remaining(ctx)
	if err != nil {
		return keys.DataKeyState{}, err
	}
	st := keys.DataKeyState{Current: k.dk.ID(), Retiring: k.dk.Retiring(), Sealed: k.sealed.Load(), Remaining: left, State: "idle"}
	if st.Retiring == nil {
		st.Retiring = []string{}
	}
	switch {
	case left > 0:
		st.State = "sealing"
	case len(st.Retiring) > 0:
		st.State = "retiring"
	}
	k.mu.Lock()
	if !k.started.IsZero() {
		t := k.started.UTC()
		st.Started = &t
	}
	k.mu.Unlock()
	return st, nil
}
