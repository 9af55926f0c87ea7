package receive

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// ExpireRetention deletes received records whose agreement's retention
// period has ended, without being asked: one pass (Run runs one at start
// and every ten minutes).
func (r *Receiver) ExpireRetention(ctx context.Context) error { return r.expire(ctx) }

// expire is one retention pass. It also forgets tombstones no envelope
// can reach any more: one created before the tombstone's time has expired
// (maxEnvelopeLife, give or take the clock skew); and the agreements a
// restored copy awaited (AwaitAgreements) whose wait has ended, which
// awaited reads as absent already.
func (r *Receiver) expire(ctx context.Context) error {
	horizon := r.now().Add(-maxEnvelopeLife - r.skew).UnixMilli()
	if err := r.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM tombstones WHERE before_ms < ?`, horizon); err != nil {
			return fmt.Errorf("forget tombstones: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM awaited_agreements WHERE until_ms <= ?`, r.now().UnixMilli()); err != nil {
			return fmt.Errorf("forget awaited agreements: %w", err)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	rows, err := r.db.R.QueryContext(ctx, `SELECT r.envelope_id, r.records, i.agreement, i.sender, i.received_ms FROM received r
		JOIN inbox i ON i.envelope_id = r.envelope_id WHERE r.records > 0`)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	type item struct {
		eid, agreement, sender string
		records                int
	}
	var due []item
	now := r.now()
	agreements := map[string]*policy.Agreement{}
	for rows.Next() {
		var it item
		var received int64
		if err := rows.Scan(&it.eid, &it.records, &it.agreement, &it.sender, &received); err != nil {
			rows.Close()
			return err
		}
		a, ok := agreements[it.agreement]
		if !ok {
			var err error
			a, err = r.agreement(ctx, it.agreement)
			if err != nil && !isNoAgreement(err) {
				rows.Close()
				return fmt.Errorf("retention: %w", err)
			}
			// No active agreement with that id: no retention period to end.
			agreements[it.agreement] = a
		}
		if a != nil && a.RetentionExpired(time.UnixMilli(received), now) {
			due = append(due, it)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	if len(due) == 0 {
		return nil
	}
	total := 0
	err = r.db.Write(ctx, func(tx *sql.Tx) error {
		total = 0
		for _, it := range due {
			if _, err := tx.ExecContext(ctx, `UPDATE received SET body = x'', records = 0 WHERE envelope_id = ?`, it.eid); err != nil {
				return err
			}
			if err := r.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindExpire, Peer: it.sender, Agreement: it.agreement,
				Envelope: it.eid, Reason: "retention_expired", Count: it.records}); err != nil {
				return err
			}
			total += it.records
		}
		return nil
	})
	if err == nil {
		r.m.RecordsExpired.Add(float64(total))
		r.records.Add(-int64(total))
	}
	return err
}

// janitor runs retention expiry at start and then every interval.
func (r *Receiver) janitor(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := r.expire(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("retention pass failed; will retry", "err", err)
		}
		if err := r.forgetRecovered(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("forgetting old hashes of records sent before a peer's restore failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
