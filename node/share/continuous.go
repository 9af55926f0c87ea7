package share

import (
	"context"
	"fmt"
	"sort"

	"github.com/eduspace/eduspace/policy"
)

// Continuous is what the shares under one continuous agreement sent for
// an ingest, or at the node's start, and why they could not, if so.
type Continuous struct {
	Result
	Error string `json:"error,omitempty"`
}

// ShareContinuous shares, under every continuous agreement in force that
// this node provides, the held records ingested since the agreement came
// into force that no share has sent yet, the ones denied before decided
// again. The node calls it at start, for records whose share a stop cut
// short; an ingest shares what it stores as it goes (startContinuous).
func (n *Sharer) ShareContinuous(ctx context.Context) ([]Continuous, error) {
	c, err := n.startContinuous(ctx)
	if err != nil {
		return nil, err
	}
	if c.ids != nil {
		c.ids <- storedSpan{first: 1, last: 1 << 62}
	}
	return c.wait(), nil
}

// continuousAgreements are the continuous agreements in force that this
// node provides.
func (n *Sharer) continuousAgreements(ctx context.Context) ([]policy.Agreement, error) {
	active, err := n.agreements.Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("continuous shares: %w", err)
	}
	now := n.now()
	var out []policy.Agreement
	for _, a := range active {
		if a.Continuous && a.Provider == n.nodeID && a.ValidAt(now) {
			out = append(out, a)
		}
	}
	return out, nil
}

// continuousShares are one ingest's shares under the continuous
// agreements, run in a goroutine of their own as batches are stored.
// Batches stored while a share runs go together in the next one. A share
// that fails is reported and does not stop the others: its records stay
// held and go with the next share under the agreement.
type continuousShares struct {
	n          *Sharer
	agreements []policy.Agreement
	ids        chan storedSpan // the batches stored; nil: no continuous agreement
	done       chan struct{}
	results    map[string]*Continuous
}

// storedSpan is what a share under a continuous agreement decides: the
// records an ingest stored, as it stored them (rows), or, when rows is
// nil, the held records with ids from first to last, read from the records
// table.
type storedSpan struct {
	first, last int64
	rows        []heldRecord
}

// add appends the span stored after s.
func (s *storedSpan) add(next storedSpan) {
	s.last = next.last
	s.rows = append(s.rows, next.rows...)
}

func (n *Sharer) startContinuous(ctx context.Context) (*continuousShares, error) {
	list, err := n.continuousAgreements(ctx)
	if err != nil {
		return nil, err
	}
	c := &continuousShares{n: n, agreements: list, results: map[string]*Continuous{}}
	if len(list) == 0 {
		return c, nil
	}
	// A share behind the ingest holds the ingest back: at most one stored
	// batch waits for it in memory.
	c.ids, c.done = make(chan storedSpan, 1), make(chan struct{})
	go func() {
		defer close(c.done)
		for span := range c.ids {
			// Batches are stored in order: one share covers those
			// pending, from the first's first record to the last's last.
		drain:
			for {
				select {
				case next, ok := <-c.ids:
					if !ok {
						break drain
					}
					span.add(next)
				default:
					break drain
				}
			}
			c.share(ctx, span)
		}
	}()
	return c, nil
}

// stored hands the rows the ingest stored at ms (Unix ms) to the shares,
// which decide them from their bodies and classifications as read, not
// from the records table: each share decides only those, so that a record
// denied is decided once per ingest. Rows held already (id 0) are not
// shared again.
func (c *continuousShares) stored(rows []ingestRow, ms int64) {
	if c.ids == nil {
		return
	}
	var span storedSpan
	for _, r := range rows {
		if r.id != 0 {
			span.rows = append(span.rows, heldRecord{id: r.id, typ: r.typ, body: r.plain, labels: r.plainLabels, ingestedMs: ms,
				row: r.row, rowLabels: r.rowLabels})
		}
	}
	if len(span.rows) > 0 {
		span.first, span.last = span.rows[0].id, span.rows[len(span.rows)-1].id
		c.ids <- span
	}
}

func (c *continuousShares) share(ctx context.Context, span storedSpan) {
	for _, a := range c.agreements {
		var res Result
		var err error
		if span.rows != nil {
			res, err = c.n.shareRows(ctx, a.ID, a.ValidFrom.UnixMilli(), span.rows)
		} else {
			res, err = c.n.share(ctx, a.ID, a.ValidFrom.UnixMilli(), span.first-1, span.last)
		}
		sum := c.results[a.ID]
		if sum == nil {
			sum = &Continuous{Result: Result{Agreement: a.ID, Recipient: a.Recipient, Denied: map[string]int{}}}
			c.results[a.ID] = sum
		}
		sum.Considered += res.Considered
		sum.Permitted += res.Permitted
		sum.Envelopes += res.Envelopes
		for k, v := range res.Denied {
			sum.Denied[k] += v
		}
		if err != nil && sum.Error == "" {
			sum.Error = err.Error()
			c.n.log.Warn("continuous share failed; its records stay held for the next share", "agreement", a.ID, "err", err)
		}
	}
}

// wait waits for the shares and returns what each agreement's sent, for
// the agreements that had records to decide or failed.
func (c *continuousShares) wait() []Continuous {
	if c == nil || c.ids == nil {
		return nil
	}
	close(c.ids)
	<-c.done
	var out []Continuous
	for _, r := range c.results {
		if r.Considered > 0 || r.Error != "" {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Agreement < out[j].Agreement })
	return out
}
