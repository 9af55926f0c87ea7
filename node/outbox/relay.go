package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

// relayPage is how many outbox rows the relay publishes before it waits for
// their acknowledgements.
const relayPage = 512

// Run publishes the outbox to JetStream until ctx ends. A row is marked
// sent only after JetStream acknowledged it; a row published twice (after a
// crash between publish and mark) is dropped by JetStream's duplicate
// window and, past it, by the recipient's inbox.
func (o *Outbox) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	for {
		more, err := o.relayOnce(ctx)
		if err != nil && ctx.Err() == nil {
			o.log.Warn("relay: will retry", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if more {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-tick.C:
		}
	}
}

// outboxRow is an unsent outbox row as the relay publishes it.
type outboxRow struct {
	id        int64
	eid       string
	recipient string
	subject   string
	records   int
	// legalBasis and standard are what a records envelope's header
	// names, for its send entry.
	legalBasis, standard string
	data                 []byte // set after the row is marked attempted
}

// relayOnce publishes one page of the outbox; more is true when the page
// was full.
//
// The page is read without the envelopes; each is then taken from the
// envelope cache, which holds what was written to the outbox recently, or
// read from outbox_data (after a restart, or evicted). Either way only the
// envelope of a row still there once marked attempted is published.
func (o *Outbox) relayOnce(ctx context.Context) (more bool, err error) {
	if o.blocked != nil && o.blocked() {
		// Fail closed: nothing leaves while the evidence of what would leave
		// cannot be committed on the space. The outbox keeps it.
		return false, nil
	}
	rows, err := o.db.R.QueryContext(ctx, `SELECT o.id, o.envelope_id, o.recipient, o.subject, o.records,
		coalesce(o.legal_basis, ''), coalesce(o.standard, '')
		FROM outbox o JOIN outbox_data d ON d.id = o.id WHERE o.sent_ms IS NULL ORDER BY o.id LIMIT ?`, relayPage)
	if err != nil {
		return false, fmt.Errorf("read outbox: %w", err)
	}
	var page []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.eid, &r.recipient, &r.subject, &r.records, &r.legalBasis, &r.standard); err != nil {
			rows.Close()
			return false, fmt.Errorf("read outbox: %w", err)
		}
		page = append(page, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("read outbox: %w", err)
	}
	if len(page) == 0 {
		return false, nil
	}
	if o.opts.pageRead != nil {
		o.opts.pageRead()
	}
	// Mark the page as being published before it is: from here on an
	// envelope may have left, so a withdrawal or revocation does not drop
	// it but asks the recipient to erase. The envelope id in the mark makes
	// sure the row is still the one read: SQLite may give a dropped row's
	// id to the next row inserted.
	full := len(page) == relayPage
	var live, dropped []outboxRow
	if err := o.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		live, dropped = live[:0], dropped[:0]
		now := o.now().UnixMilli()
		st, err := o.db.Stmt(ctx, tx, qMarkAttempt)
		if err != nil {
			return fmt.Errorf("mark attempt: %w", err)
		}
		for _, r := range page {
			res, err := st.ExecContext(ctx, now, r.id, r.eid)
			if err != nil {
				return fmt.Errorf("mark attempt: %w", err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("mark attempt: %w", err)
			}
			if k == 1 {
				live = append(live, r)
			} else {
				dropped = append(dropped, r) // dropped meanwhile: never published
			}
		}
		return nil
	}); err != nil {
		return false, err
	}
	for _, r := range dropped {
		o.cache.remove(r.eid)
	}
	page = live
	loaded, err := o.loadEnvelopes(ctx, page)
	if err != nil {
		return false, err
	}
	if loaded < len(page) {
		page, full = page[:loaded], true // the rest in the next round, at once
	}
	futures := make([]jetstream.PubAckFuture, 0, len(page))
	var pubErr error
	for _, r := range page {
		f, err := o.js.PublishAsync(r.subject, r.data, jetstream.WithMsgID(r.eid))
		if err != nil {
			// Refused before it left, such as an envelope larger than the
			// server now accepts (sealed for a server that accepted more):
			// it stays first in the outbox, and this says why.
			pubErr = fmt.Errorf("publish envelope %s (%d bytes, server maximum %d): %w", r.eid, len(r.data), o.maxPay(), err)
			break
		}
		futures = append(futures, f)
	}
	acked := make([]outboxRow, 0, len(futures))
	timeout := time.After(30 * time.Second)
wait:
	for i, f := range futures {
		select {
		case <-f.Ok():
			acked = append(acked, page[i])
		case err := <-f.Err():
			pubErr = errors.Join(fmt.Errorf("publish envelope: %w", err), pubErr)
			break wait
		case <-timeout:
			pubErr = errors.Join(fmt.Errorf("publish envelope: no acknowledgement within 30s"), pubErr)
			break wait
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if len(acked) > 0 {
		if err := o.markSent(ctx, acked); err != nil {
			return false, err
		}
	}
	if pubErr != nil {
		return false, pubErr
	}
	return full && len(acked) == len(page), nil
}

// relayPageBytes bounds the envelopes one page holds in memory: a page of
// relayPage envelopes of up to 4 MiB each (the node closes envelopes at half the server's maximum message size) would
// be gigabytes after an outage.
const relayPageBytes = 64 << 20

// loadEnvelopes sets the envelope of each row of page, rows the relay has
// marked attempted, from the envelope cache, else from outbox_data, until
// relayPageBytes are loaded (one row at least); it returns how many rows
// it loaded. A row marked attempted is never dropped, so its id keeps
// naming it.
func (o *Outbox) loadEnvelopes(ctx context.Context, page []outboxRow) (int, error) {
	var st *sql.Stmt
	defer func() {
		if st != nil {
			st.Close()
		}
	}()
	bytes := 0
	for i := range page {
		if i > 0 && bytes >= relayPageBytes {
			return i, nil
		}
		r := &page[i]
		if data, ok := o.cache.get(r.eid); ok {
			r.data = data
			o.cache.hits.Add(1)
			bytes += len(data)
			continue
		}
		if st == nil {
			var err error
			if st, err = o.db.R.PrepareContext(ctx, `SELECT data FROM outbox_data WHERE id = ?`); err != nil {
				return 0, fmt.Errorf("read outbox: %w", err)
			}
		}
		if err := st.QueryRowContext(ctx, r.id).Scan(&r.data); err != nil {
			return 0, fmt.Errorf("read outbox envelope: %w", err)
		}
		o.cache.reads.Add(1)
		bytes += len(r.data)
	}
	return len(page), nil
}

// The relay's marks. Both name the row by id and envelope id: an id alone
// may name a later row, given a dropped row's id.
var (
	qMarkAttempt = store.NewQuery(`UPDATE outbox SET attempt_ms = coalesce(attempt_ms, ?) WHERE id = ? AND envelope_id = ? AND sent_ms IS NULL`)
	qMarkSent    = store.NewQuery(`UPDATE outbox SET sent_ms = ? WHERE id = ? AND envelope_id = ?`)
)

// markSent marks the rows sent, which JetStream acknowledged, with the
// evidence of each send, and forgets their envelopes.
func (o *Outbox) markSent(ctx context.Context, sent []outboxRow) error {
	now := o.now().UnixMilli()
	err := o.db.Write(ctx, func(tx *sql.Tx) error {
		ctx := store.InTx(ctx)
		st, err := o.db.Stmt(ctx, tx, qMarkSent)
		if err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
		for _, r := range sent {
			res, err := st.ExecContext(ctx, now, r.id, r.eid)
			if err != nil {
				return fmt.Errorf("mark sent: %w", err)
			}
			k, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("mark sent: %w", err)
			}
			if k == 0 {
				continue // not there any more: nothing to mark
			}
			if err := o.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindSend, Peer: r.recipient,
				LegalBasis: r.legalBasis, Standard: r.standard, Envelope: r.eid, Count: r.records}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range sent {
		o.cache.remove(r.eid)
	}
	o.m.Sent.Add(float64(len(sent)))
	return nil
}
