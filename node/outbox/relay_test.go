package outbox_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/test/wait"
)

// TestRelayFromCache: the relay publishes what was just written to the
// outbox from the envelope cache, without reading outbox_data, and forgets
// each envelope once it is marked sent.
func TestRelayFromCache(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	var ob *outbox.Outbox
	a, b, ag := s.Pair(nil, node.Env{Outbox: outbox.Observe(&ob)})
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades || sr.Envelopes < 2 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool { return nodetest.Status(t, b).Received == nodetest.Grades })
	wait.Until(t, 20*time.Second, "uni-a's outbox sent", func() bool { return nodetest.Status(t, a).OutboxDepth == 0 })
	if got := ob.CacheReads(); got != 0 {
		t.Errorf("relay read %d envelopes from outbox_data, want 0", got)
	}
	if got := ob.CacheHits(); got < int64(sr.Envelopes) {
		t.Errorf("relay took %d envelopes from the cache, want at least %d", got, sr.Envelopes)
	}
	if k, size := ob.CacheHeld(); k != 0 || size != 0 {
		t.Errorf("cache holds %d envelopes (%d bytes) after all were sent, want none", k, size)
	}
}

// TestRelayAfterRestart: envelopes queued before a restart, which the
// restarted node's cache never held, are read from outbox_data and
// published.
func TestRelayAfterRestart(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	var ob *outbox.Outbox
	a, b, ag := s.Pair(nil, node.Env{Outbox: outbox.Observe(&ob)})
	unblock := failClosed(t, s, a)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	if st := nodetest.Status(t, a); st.OutboxDepth != int64(sr.Envelopes) {
		t.Fatalf("outbox holds %d envelopes before the restart, want %d", st.OutboxDepth, sr.Envelopes)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	unblock()
	a = s.Open(s.Configs["uni-a"], node.Env{Outbox: outbox.Observe(&ob)})
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool { return nodetest.Status(t, b).Received == nodetest.Grades })
	wait.Until(t, 20*time.Second, "uni-a's outbox sent", func() bool { return nodetest.Status(t, a).OutboxDepth == 0 })
	if got := ob.CacheReads(); got != int64(sr.Envelopes) {
		t.Errorf("relay read %d envelopes from outbox_data, want %d", got, sr.Envelopes)
	}
	if got := ob.CacheHits(); got != 0 {
		t.Errorf("relay took %d envelopes from the cache of a restarted node, want 0", got)
	}
}

// TestRelayEvicted: with the cache's byte bound lowered under what is
// queued, the oldest envelopes are evicted; the relay takes the rest from
// the cache, reads the evicted ones from outbox_data, and publishes all.
func TestRelayEvicted(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	var ob *outbox.Outbox
	a, b, ag := s.Pair(nil, node.Env{Outbox: outbox.Observe(&ob)})
	unblock := failClosed(t, s, a)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades || sr.Envelopes < 3 {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	k, size := ob.CacheHeld()
	if k != sr.Envelopes {
		t.Fatalf("cache holds %d envelopes, want the %d queued", k, sr.Envelopes)
	}
	ob.SetCacheLimit(size / 2)
	kept, _ := ob.CacheHeld()
	if kept == 0 || kept >= k {
		t.Fatalf("cache holds %d of %d envelopes after halving its bound", kept, k)
	}
	unblock()
	wait.Until(t, 20*time.Second, "the grades at uni-b", func() bool { return nodetest.Status(t, b).Received == nodetest.Grades })
	wait.Until(t, 20*time.Second, "uni-a's outbox sent", func() bool { return nodetest.Status(t, a).OutboxDepth == 0 })
	if got, want := ob.CacheReads(), int64(k-kept); got != want {
		t.Errorf("relay read %d envelopes from outbox_data, want the %d evicted", got, want)
	}
	if got, want := ob.CacheHits(), int64(kept); got != want {
		t.Errorf("relay took %d envelopes from the cache, want the %d kept", got, want)
	}
}

// TestRelayDropped: envelopes dropped from the outbox after the relay read
// them, but before it marked them attempted (here: the agreement revoked
// in between), are never published, though the cache holds them.
func TestRelayDropped(t *testing.T) {
	ctx := context.Background()
	s := nodetest.NewSpace(t)
	var ob *outbox.Outbox
	a, b, ag := s.Pair(nil, node.Env{Outbox: outbox.Observe(&ob)})

	// Watch what uni-a publishes to uni-b: one subscription sees one
	// connection's messages in the order they were published, so once the
	// revocation notice is seen, any envelope published before it was too.
	nc, err := nats.Connect(s.Emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l := bus.Layout{Space: nodetest.SpaceID}
	var mu sync.Mutex
	var deliveries, notices int
	sub, err := nc.Subscribe("eds."+nodetest.SpaceID+".*.uni-b.uni-a", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch m.Subject {
		case l.DeliverSubject("uni-b", "uni-a"):
			deliveries++
		case l.ControlSubject("uni-b", "uni-a"):
			notices++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	type revoked struct {
		dropped int
		err     error
	}
	done := make(chan revoked, 1)
	var once sync.Once
	hook := func() {
		once.Do(func() {
			dropped, err := a.RevokeAgreement(ctx, ag.ID) // waits for the share to end
			done <- revoked{dropped, err}
		})
	}
	ob.OnPageRead(hook)
	sr, err := a.Share(ctx, ag.ID)
	if err != nil || sr.Permitted != nodetest.Grades {
		t.Fatalf("share: %+v, %v", sr, err)
	}
	var r revoked
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay read no page")
	}
	if r.err != nil || r.dropped != sr.Envelopes {
		t.Fatalf("revoke: dropped %d, %v; want the %d queued dropped", r.dropped, r.err, sr.Envelopes)
	}
	// The revocation notice leaves; what was dropped does not.
	wait.Until(t, 20*time.Second, "the revocation notice published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return notices > 0
	})
	mu.Lock()
	if deliveries != 0 {
		t.Errorf("uni-a published %d envelopes of records it had dropped", deliveries)
	}
	mu.Unlock()
	wait.Until(t, 20*time.Second, "uni-a's outbox sent", func() bool { return nodetest.Status(t, a).OutboxDepth == 0 })
	if queued := nodetest.Count(t, s.Configs["uni-a"], `SELECT count(*) FROM outbox WHERE kind = ?`, crypto.KindRecords); queued != 0 {
		t.Errorf("uni-a's outbox holds %d records envelopes, want none", queued)
	}
	if got := nodetest.Status(t, b).Received; got != 0 {
		t.Errorf("uni-b received %d records of dropped envelopes", got)
	}
	if got := ob.CacheReads(); got != 0 {
		t.Errorf("relay read %d envelopes from outbox_data, want 0", got)
	}
}

// failClosed takes the space's audit stream away and waits until a fails
// closed. An entry is added to a's evidence log once the stream is gone:
// a log whose every entry a checkpoint covers is not uncovered, however
// long no checkpoint can be published.
func failClosed(t *testing.T, s *nodetest.Space, a *node.Node) (unblock func()) {
	t.Helper()
	unblock = s.Block()
	if _, err := a.Ingest(context.Background(), strings.NewReader(nodetest.Records(s.Now)), ""); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "uni-a to fail closed", func() bool { return !a.Ready() })
	return unblock
}
