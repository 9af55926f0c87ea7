package checkpoint

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/schema"
)

// testKeeper is a Keeper over a fresh database whose evidence log holds
// entries entries, on a clock the test moves.
func testKeeper(t *testing.T, entries int) (*Keeper, *time.Time) {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "node.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	now := time.UnixMilli(1_700_000_000_000)
	clock := func() time.Time { return now }
	ev := evidence.New("uni-a", []byte("subject key"), clock).UseDB(db)
	for range entries {
		if err := db.Write(ctx, func(tx *sql.Tx) error {
			return ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindIngest})
		}); err != nil {
			t.Fatal(err)
		}
	}
	k := New(Deps{
		DB: db, Evidence: ev, Node: "uni-a", Layout: bus.Layout{Space: "space"},
		Metrics: metrics.New(schema.Default(), metrics.Labels{}), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: clock, Interval: time.Second, MaxAge: time.Minute,
	})
	return k, &now
}

func TestStoreKeepsFirstOfConflictingCheckpoints(t *testing.T) {
	ctx := context.Background()
	k, now := testKeeper(t, 0)
	first := crypto.Checkpoint{Space: "space", Node: "uni-b", Count: 3, Time: *now}
	first.Head[0] = 1
	other := first
	other.Head[0] = 2
	for _, c := range []crypto.Checkpoint{first, first, other} {
		if err := k.store(ctx, "uni-b", c, []byte("data"), "cred", nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(k.d.Metrics.CheckpointConflicts); got != 1 {
		t.Errorf("conflicts counted: %v, want 1", got)
	}
	var head []byte
	if err := k.d.DB.R.QueryRowContext(ctx, `SELECT head FROM checkpoints WHERE node = 'uni-b' AND count = 3`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, first.Head[:]) {
		t.Errorf("kept head %x, want the first %x", head, first.Head)
	}

	later := crypto.Checkpoint{Space: "space", Node: "uni-b", Count: 5, Time: now.Add(time.Minute)}
	if err := k.store(ctx, "uni-b", later, []byte("data"), "cred", nil); err != nil {
		t.Fatal(err)
	}
	count, at, err := k.Latest(ctx, "uni-b")
	if err != nil || count != 5 || !at.Equal(later.Time) {
		t.Errorf("Latest(uni-b) = %d, %v, %v; want 5, %v", count, at, err, later.Time)
	}
	if count, at, err := k.Latest(ctx, "uni-c"); err != nil || count != 0 || !at.IsZero() {
		t.Errorf("Latest(uni-c) = %d, %v, %v; want 0, zero time", count, at, err)
	}
	held, err := k.Nodes(ctx)
	if err != nil || len(held) != 1 || held[0] != (Held{Node: "uni-b", Count: 5, At: later.Time}) {
		t.Errorf("Nodes = %+v, %v", held, err)
	}
}

func TestSendingBlockedAfterMaxAgeUncovered(t *testing.T) {
	k, now := testKeeper(t, 2)
	if k.SendingBlocked() {
		t.Error("blocked right after start")
	}
	if got := k.Age(); got != 0 {
		t.Errorf("Age right after start = %v, want 0", got)
	}
	*now = now.Add(k.d.MaxAge + time.Second)
	if got := k.Age(); got != k.d.MaxAge+time.Second {
		t.Errorf("Age = %v, want %v", got, k.d.MaxAge+time.Second)
	}
	if !k.SendingBlocked() {
		t.Error("not blocked with the log uncovered for longer than MaxAge")
	}
	k.mu.Lock()
	k.count = 2 // as after a published checkpoint of both entries
	k.mu.Unlock()
	if got := k.Age(); got != 0 {
		t.Errorf("Age with the log covered = %v, want 0", got)
	}
	if k.SendingBlocked() {
		t.Error("blocked with the log covered")
	}
}

// TestAnchorFailureLoggedOncePerMinute: a TSA that does not answer leaves
// the checkpoint unanchored; every failure is counted, and logged at most
// once a minute.
func TestAnchorFailureLoggedOncePerMinute(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close()
	k, now := testKeeper(t, 0)
	var logs bytes.Buffer
	k.d.Log = slog.New(slog.NewTextHandler(&logs, nil))
	k.d.TSA = &timestamp.Client{URL: url}
	ctx := context.Background()
	for i, step := range []time.Duration{0, time.Second, 30 * time.Second, 31 * time.Second, time.Second} {
		*now = now.Add(step)
		if tok := k.anchor(ctx, []byte("signed checkpoint")); tok != nil {
			t.Fatalf("attempt %d: a token from a TSA that is down", i)
		}
	}
	if got := testutil.ToFloat64(k.d.Metrics.AnchorFailures); got != 5 {
		t.Errorf("anchor failures counted %v, want 5", got)
	}
	if got := strings.Count(logs.String(), "checkpoint not anchored"); got != 2 {
		t.Errorf("failure logged %d times over 63 s, want 2 (at 0 s and 62 s):\n%s", got, logs.String())
	}
	if !k.Anchoring() {
		t.Errorf("Anchoring() false with a TSA configured")
	}
	if at, err := k.LastAnchored(ctx); err != nil || !at.IsZero() {
		t.Errorf("LastAnchored = %v, %v; want the zero time", at, err)
	}
}
