package share

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/schema"
)

// flushBatches hands the partly filled envelopes and the last decisions to
// the sealer.
func (s *shareRun) flushBatches(ctx context.Context) error {
	types := make([]string, 0, len(s.batches))
	for t := range s.batches {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		if b := s.batches[t]; b.count > 0 {
			if err := s.flush(ctx, b); err != nil {
				return err
			}
		}
	}
	if len(s.decisions) > 0 {
		s.submit(ctx, sealJob{decisions: s.decisions})
		s.decisions, s.lastGroup = map[[2]string]*decisionGroup{}, nil
	}
	return nil
}

// finish closes the sealer and waits until it has committed everything.
func (s *shareRun) finish() error {
	if s.sl == nil || s.sl.closed {
		return nil
	}
	s.sl.closed = true
	close(s.sl.jobs)
	<-s.sl.done
	s.res.Envelopes = s.sl.envelopes
	if s.sl.err != nil {
		delete(s.n.volumes, s.a.Recipient) // counted what did not go: load again
	}
	return s.sl.err
}

// flush hands a full envelope, with the decisions made since the last one,
// to the sealer and starts a new envelope.
func (s *shareRun) flush(ctx context.Context, b *pending) error {
	if s.sl != nil && s.sl.failed.Load() {
		return s.sl.err // set before failed; the run ends, finish waits
	}
	job := sealJob{b: *b, decisions: s.decisions}
	s.decisions, s.lastGroup = map[[2]string]*decisionGroup{}, nil
	buf, _ := wireBufs.Get().(*[]byte)
	if buf == nil || cap(*buf) < len(job.b.buf) {
		buf = new([]byte)
		*buf = make([]byte, 0, len(job.b.buf))
	}
	*b = pending{typ: b.typ, buf: (*buf)[:0], last: b.last,
		subjects: make([]string, 0, len(job.b.subjects)), items: make([]deliveryItem, 0, len(job.b.items))}
	s.submit(ctx, job)
	return nil
}

func (s *shareRun) submit(ctx context.Context, job sealJob) {
	if s.sl == nil {
		s.sl = s.n.startSealer(ctx, s)
	}
	s.sl.jobs <- job
}

// sealJob is a full envelope (or none) and the decisions made before it,
// handed from the deciding goroutine to the sealer.
type sealJob struct {
	b         pending
	decisions map[[2]string]*decisionGroup
}

// sealer seals envelopes and commits them, in groups, while the deciding
// goroutine goes on: sealing and the database overlap classification.
type sealer struct {
	jobs      chan sealJob
	done      chan struct{}
	failed    atomic.Bool
	err       error    // valid once failed is set, or done is closed
	closed    bool     // finish has run
	envelopes int      // valid once done is closed
	eids      []string // the envelopes committed, in order; valid once done is closed
	nextSeq   int64
}

// sealGroup is how many envelopes at most one transaction commits.
const sealGroup = 16

func (n *Sharer) startSealer(ctx context.Context, s *shareRun) *sealer {
	sl := &sealer{jobs: make(chan sealJob, 8), done: make(chan struct{})}
	// Sequence numbers of this share are assigned in submission order, which
	// is commit order: Share and Send hold shareMu, so nothing else assigns
	// records sequence numbers to this recipient meanwhile. A failed commit
	// ends the run and leaves next_out where it was.
	var err error
	if sl.nextSeq, err = n.out.NextSeq(ctx, s.a.Recipient, crypto.KindRecords); err != nil {
		sl.err = fmt.Errorf("share: %w", err)
		sl.failed.Store(true)
	}
	// jobs → dispatcher (assigns sequence numbers) → sealers (in parallel)
	// → committer (in order, in groups of what is ready).
	work := make(chan *sealed, 16)
	ordered := make(chan *sealed, 64)
	go func() {
		seq := sl.nextSeq
		for job := range sl.jobs {
			e := &sealed{job: job, ready: make(chan struct{})}
			if job.b.count > 0 {
				e.seq = seq
				seq++
				work <- e
			} else {
				close(e.ready)
			}
			ordered <- e
		}
		close(work)
		close(ordered)
	}()
	for w := 0; w < sealWorkers; w++ {
		go func() {
			for e := range work {
				e.err = s.seal(e)
				close(e.ready)
			}
		}()
	}
	go func() {
		defer close(sl.done)
		for e := range ordered {
			<-e.ready
			group := []*sealed{e}
		more:
			for len(group) < sealGroup {
				select {
				case next, ok := <-ordered:
					if !ok {
						break more
					}
					<-next.ready
					group = append(group, next)
				default:
					break more
				}
			}
			if sl.failed.Load() {
				continue // drain: the run has failed
			}
			if err := s.commitGroup(ctx, sl, group); err != nil {
				sl.err = err
				sl.failed.Store(true)
			}
		}
	}()
	return sl
}

// sealWorkers is how many envelopes are sealed at once.
const sealWorkers = 2

// sealed is an envelope on its way from the decider to the outbox.
type sealed struct {
	job   sealJob
	seq   int64
	eid   string
	data  []byte
	err   error
	ready chan struct{} // closed when data (or err) is set
}

// seal seals one envelope with its assigned sequence number.
func (s *shareRun) seal(e *sealed) error {
	eid, data, err := s.n.codec.Seal(crypto.Header{
		Recipient: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose), RecordType: e.job.b.typ,
		Count: uint32(e.job.b.count), Level: e.job.b.level.String(), Kind: crypto.KindRecords,
		LegalBasis: string(s.a.LegalBasis), Standard: s.n.std.Ref(),
	}, s.to, e.seq, e.job.b.buf)
	if err != nil {
		return fmt.Errorf("share: %w", err)
	}
	e.eid, e.data = eid, data
	buf := e.job.b.buf[:0] // sealed: nothing refers to the plaintext any more
	e.job.b.buf = nil
	wireBufs.Put(&buf)
	return nil
}

// wireBufs holds envelope plaintext buffers between the sealer, done with
// one, and the next envelope: a few hundred KiB each, taken fresh they
// cost page faults and zeroing at every envelope.
var wireBufs sync.Pool

// The statements of commitGroup.
var (
	// The records of an envelope are marked in one statement, their ids a
	// JSON array: a statement per record costs more in the driver than in
	// SQLite.
	qInsertShared = store.NewQuery(`INSERT INTO shared(agreement, record_id, envelope_id) SELECT ?, value, ? FROM json_each(?)`)
)

// commitGroup commits sealed envelopes in one transaction with the records
// they mark as shared, their deliveries, the evidence of the decisions and
// seals, and the pair's next sequence number.
func (s *shareRun) commitGroup(ctx context.Context, sl *sealer, group []*sealed) error {
	n := s.n
	seq := sl.nextSeq
	for _, e := range group {
		if e.err != nil {
			return e.err
		}
		if e.data != nil {
			seq = e.seq + 1
		}
	}
	subject := n.layout.DeliverSubject(s.a.Recipient, n.nodeID)
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		insShared, err := n.db.Stmt(ctx, tx, qInsertShared)
		if err != nil {
			return fmt.Errorf("share: %w", err)
		}
		var ids []byte
		for _, e := range group {
			if err := s.writeDecisions(ctx, tx, e.job.decisions); err != nil {
				return err
			}
			if e.data == nil {
				continue
			}
			b := e.job.b
			fields, items := deliveredJSON(b.items)
			// As text: SQLite reads a JSON blob as JSONB.
			if err := n.out.Add(ctx, tx, outbox.Envelope{ID: e.eid, Recipient: s.a.Recipient, Kind: crypto.KindRecords,
				Subject: subject, Seq: e.seq, Records: b.count, Agreement: s.a.ID, Purpose: string(s.a.Purpose), RecordType: b.typ,
				LegalBasis: string(s.a.LegalBasis), Standard: n.std.Ref(),
				Held: len(b.records) == b.count}, e.data, string(fields), string(items)); err != nil {
				return fmt.Errorf("share: %w", err)
			}
			if len(b.records) > 0 {
				ids = append(ids[:0], '[')
				for i, id := range b.records {
					if i > 0 {
						ids = append(ids, ',')
					}
					ids = strconv.AppendInt(ids, id, 10)
				}
				// As text: SQLite reads a JSON blob as JSONB.
				if _, err := insShared.ExecContext(ctx, s.a.ID, e.eid, string(append(ids, ']'))); err != nil {
					return fmt.Errorf("share: mark shared: %w", err)
				}
			}
			if err := n.ev.Append(ctx, tx, evidence.Entry{
				Kind: evidence.KindSeal, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
				LegalBasis: string(s.a.LegalBasis), Standard: n.std.Ref(), Envelope: e.eid, Count: b.count, Subjects: b.subjects, Detail: map[string]int{b.typ + "/" + b.level.String(): b.count},
			}); err != nil {
				return err
			}
		}
		if seq == sl.nextSeq {
			return nil
		}
		if err := n.out.SetNextSeq(ctx, tx, s.a.Recipient, crypto.KindRecords, seq); err != nil {
			return fmt.Errorf("share: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range group {
		if e.data != nil {
			sl.envelopes++
			sl.eids = append(sl.eids, e.eid)
			n.m.Sealed.Inc()
			n.m.SealedRecords.Add(float64(e.job.b.count))
		}
	}
	sl.nextSeq = seq
	n.out.Wake()
	return nil
}

// deliveredJSON encodes an envelope's deliveries for the delivered table:
// the distinct field lists, and per record its subject, level and the index
// of its field list.
func deliveredJSON(items []deliveryItem) (fields, list []byte) {
	fields, list = append(fields, '['), append(list, '[')
	index := map[string]int{}
	for i, it := range items {
		k, ok := index[it.fields]
		if !ok {
			k = len(index)
			index[it.fields] = k
			if k > 0 {
				fields = append(fields, ',')
			}
			fields = schema.AppendJSONString(fields, it.fields)
		}
		if i > 0 {
			list = append(list, ',')
		}
		list = schema.AppendJSONString(append(list, '['), it.subject)
		list = schema.AppendJSONString(append(list, ','), it.level.String())
		list = append(strconv.AppendInt(append(list, ','), int64(k), 10), ']')
	}
	return append(fields, ']'), append(list, ']')
}

// writeDecisions appends decisions to the evidence log, one entry per rule
// and reason.
func (s *shareRun) writeDecisions(ctx context.Context, tx *sql.Tx, decisions map[[2]string]*decisionGroup) error {
	keys := make([][2]string, 0, len(decisions))
	for k := range decisions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		g := decisions[k]
		if err := s.n.ev.Append(ctx, tx, evidence.Entry{
			Kind: evidence.KindDecide, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
			LegalBasis: string(s.a.LegalBasis), Standard: s.n.std.Ref(), Rule: g.rule, Reason: g.reason, Count: len(g.subjects), Subjects: g.subjects,
		}); err != nil {
			return err
		}
	}
	return nil
}
