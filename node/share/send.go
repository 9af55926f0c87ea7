package share

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/eduspace/eduspace/schema"
)

// SendResult sums up one Send: the share figures and the records refused
// by validation.
type SendResult struct {
	Result
	Format   string         `json:"format,omitempty"`   // Stream: ndjson, csv, edfi or xapi, as named or detected
	Encoding string         `json:"encoding,omitempty"` // Stream: utf-8 or gb18030, as named or detected
	Invalid  int            `json:"invalid"`
	ByReason map[string]int `json:"by_reason,omitempty"` // refused records by reason code
	Errors   []RecordError  `json:"errors,omitempty"`    // the first thousand
}

// Stream is Send of an operator's input (`eduspace share --agreement ID
// FILE`): r is read as Ingest reads it, in the format and encoding o names
// or detects, and its records go straight to the agreement's recipient
// without being held. o.AllOrNothing has no meaning here (what was sent
// is sent) and is refused.
func (n *Sharer) Stream(ctx context.Context, agreementID string, r io.Reader, o IngestOptions) (SendResult, error) {
	if o.AllOrNothing {
		return SendResult{}, errors.New("stream: all-or-nothing applies to ingest only: records streamed are sent as they are decided")
	}
	var in IngestResult
	rd, err := n.openInput(r, o, &in)
	if err != nil {
		return SendResult{}, fmt.Errorf("stream: %w", err)
	}
	res, err := n.Send(ctx, agreementID, rd)
	res.Format, res.Encoding = in.Format, in.Encoding
	return res, err
}

// Send streams records from r straight through classification and policy
// to the agreement's recipient, without keeping them at this node: each
// record is validated and classified as at ingest, decided alone, and the
// permitted ones sealed into envelopes that are written to the outbox with
// the evidence of every decision. It is the path for feeds that are
// forwarded rather than held (and the path `eduspace bench` measures).
func (n *Sharer) Send(ctx context.Context, agreementID string, r schema.Reader) (SendResult, error) {
	n.lock.Lock()
	defer n.lock.Unlock()
	base, err := n.newShareRun(ctx, agreementID)
	if err == nil {
		err = base.load(ctx)
	}
	if err != nil {
		return SendResult{}, err
	}
	base.sl = n.startSealer(ctx, base)
	defer base.finish() // on an early return; a no-op after the one below

	// The reader hands chunks of records to sendWorkers deciders, each with
	// its own envelopes, decisions and tokenizer; they share the volume
	// state (under a lock) and the sealer. From an NDJSON reader the chunks
	// carry raw lines and the deciders parse them too, each into one reused
	// row (schema.Row: values by field position, no map): only splitting
	// lines stays in the reading goroutine.
	lines, _ := r.(lineReader)
	type item struct {
		rec  schema.Record
		line []byte // the unparsed record (lines only)
		idx  int
	}
	// A chunk's lines live in its arena until its decider is done with it:
	// nothing decided keeps a line (rows are reused, subjects are hashed,
	// names interned), so deciders hand chunks back to be filled again
	// instead of the reader taking fresh memory for every 64 lines.
	type chunkBuf struct {
		items []item
		arena []byte
	}
	chunks := make(chan chunkBuf, 2*sendWorkers)
	free := make(chan chunkBuf, 4*sendWorkers)
	workers := make([]*shareRun, sendWorkers)
	irs := make([]IngestResult, sendWorkers)
	errs := make([]error, sendWorkers)
	var wg sync.WaitGroup
	for w := range workers {
		workers[w] = base.fork()
		wg.Go(func() {
			s := workers[w]
			var parser *schema.LineParser
			if lines != nil {
				parser = lines.Parser()
				parser.ShareLines() // a line keeps its place in its chunk's arena until the chunk is handed back, after its records are decided
			}
			row := new(schema.Row)
			for chunk := range chunks {
				if errs[w] != nil {
					continue // drain
				}
				now := n.now() // one reading per chunk: records of a chunk are decided within a millisecond or so
				for _, it := range chunk.items {
					var labels schema.Labels
					var r record
					var err error
					if it.line != nil {
						if verr := parser.ParseRow(it.line, n.std, row); verr != nil {
							err = verr
						} else {
							labels, err = n.std.ClassifyRow(row, now)
						}
						r.row = row
					} else {
						labels, err = n.std.Classify(it.rec, now)
						r.rec = &it.rec
					}
					var verr *schema.ValidationError
					if errors.As(err, &verr) {
						irs[w].reject(it.idx, verr)
						n.m.Invalid.WithLabelValues(verr.Reason).Inc()
						continue
					}
					if err == nil {
						err = s.decide(ctx, r, labels, 0, now)
					}
					if err != nil {
						errs[w] = err
						break
					}
				}
				clear(chunk.items) // records held by a reader of records
				select {
				case free <- chunkBuf{chunk.items[:0], chunk.arena[:0]}:
				default:
				}
			}
			if errs[w] == nil {
				errs[w] = s.flushBatches(ctx)
			}
		})
	}
	var ir IngestResult
	var readErr error
	chunk := make([]item, 0, sendChunk)
	var arena []byte // the chunk's lines, copied out of the reader's buffer
	next := func() {
		select {
		case c := <-free:
			chunk, arena = c.items, c.arena
		default:
			chunk, arena = make([]item, 0, sendChunk), make([]byte, 0, len(arena))
		}
	}
	for {
		var it item
		var err error
		if lines != nil {
			var line []byte
			line, it.idx, err = lines.NextLine()
			if err == nil {
				start := len(arena)
				arena = append(arena, line...)
				it.line = arena[start:len(arena):len(arena)]
			}
		} else {
			it.rec, it.idx, err = r.Next()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		var verr *schema.ValidationError
		if errors.As(err, &verr) {
			ir.reject(it.idx, verr)
			n.m.Invalid.WithLabelValues(verr.Reason).Inc()
			continue
		}
		if err != nil {
			readErr = fmt.Errorf("send: read: %w", err)
			break
		}
		chunk = append(chunk, it)
		if len(chunk) == sendChunk {
			chunks <- chunkBuf{chunk, arena}
			next()
		}
	}
	if len(chunk) > 0 {
		chunks <- chunkBuf{chunk, arena}
	}
	close(chunks)
	wg.Wait()
	sealErr := base.finish()

	res := SendResult{Result: base.merge(workers)}
	for w := range workers {
		ir.Invalid += irs[w].Invalid
		ir.Errors = append(ir.Errors, irs[w].Errors...)
		for k, v := range irs[w].ByReason {
			if ir.ByReason == nil {
				ir.ByReason = map[string]int{}
			}
			ir.ByReason[k] += v
		}
	}
	sort.Slice(ir.Errors, func(i, j int) bool { return ir.Errors[i].Index < ir.Errors[j].Index })
	if len(ir.Errors) > 1000 {
		ir.Errors = ir.Errors[:1000]
	}
	res.Invalid, res.ByReason, res.Errors = ir.Invalid, ir.ByReason, ir.Errors
	return res, errors.Join(append([]error{readErr, sealErr}, errs...)...)
}

// lineReader is a reader of records that can hand out unparsed lines and
// parsers for them (schema.NDJSONReader), so that Send parses in its
// deciding goroutines.
type lineReader interface {
	NextLine() ([]byte, int, error)
	Parser() *schema.LineParser
}

// sendWorkers is how many goroutines decide records in Send; sendChunk how
// many records the reader hands one at a time.
const (
	sendWorkers = 2
	sendChunk   = 64
)

// fork returns a decider sharing s's agreement, recipient, consents, volume
// state and sealer, with envelopes, decisions and results of its own.
func (s *shareRun) fork() *shareRun {
	return &shareRun{
		n: s.n, a: s.a, to: s.to, role: s.role, tokenKey: s.tokenKey,
		res:       Result{Agreement: s.a.ID, Recipient: s.a.Recipient, Denied: map[string]int{}},
		batches:   map[string]*pending{},
		decisions: map[[2]string]*decisionGroup{},
		sl:        s.sl, consents: s.consents, vol: s.vol, volMu: s.volMu, maxPlain: s.maxPlain, minors: s.minors,
	}
}
