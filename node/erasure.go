package node

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// acceptControl handles a control message: an erasure request (this node
// erases and answers), an erasure receipt (a recipient confirms), an
// agreement message, or a message of an aggregate round (package aggregate).
func (n *Node) acceptControl(ctx context.Context, data []byte) (crypto.Header, error) {
	env, cred, err := n.codec.Check(ctx, data, 0)
	if env == nil {
		return crypto.Header{}, err
	}
	h := env.Header
	if err != nil {
		return h, err
	}
	plain, err := n.codec.Open(env)
	if err != nil {
		return h, envelope.Refuse(envelope.RefuseDecrypt, err)
	}
	switch h.Kind {
	case crypto.KindErasureRequest:
		return h, n.erase(ctx, h, cred, plain)
	case crypto.KindErasureReceipt:
		return h, n.consents.ConfirmErasure(ctx, h, plain)
	case crypto.KindAgreement:
		return h, n.agreements.Handle(ctx, h, cred, plain)
	case crypto.KindAggregate:
		return h, n.agg.Handle(ctx, h, plain)
	}
	return h, envelope.Refuse(envelope.RefuseMalformed, fmt.Errorf("kind %d on the control subject", h.Kind))
}

// erase deletes, from what this node received from the provider under the
// request's agreement, every record whose subject key carries the
// request's token, and answers with a signed erasure receipt, in one
// transaction.
func (n *Node) erase(ctx context.Context, h crypto.Header, provider *crypto.Credential, plain []byte) error {
	var req policy.ErasureRequest
	if err := json.Unmarshal(plain, &req); err != nil || req.Validate() != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an erasure request"))
	}
	if req.Provider != h.Sender || req.Recipient != n.cfg.NodeID || req.Agreement != h.Agreement {
		return envelope.Refuse(envelope.RefuseContent, errors.New("erasure request does not match its envelope"))
	}
	now := n.now()
	deleted, fresh := 0, false
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		deleted, fresh = 0, false
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO erased(request, done_ms) VALUES (?, ?)`, req.ID, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("check erasure: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return nil // a redelivered request: done already, its receipt queued then
		}
		fresh = true
		rows, err := tx.QueryContext(ctx, `SELECT r.envelope_id, r.type, r.body FROM received r JOIN inbox i ON i.envelope_id = r.envelope_id
			WHERE i.sender = ? AND i.agreement = ?`, req.Provider, req.Agreement)
		if err != nil {
			return fmt.Errorf("find records: %w", err)
		}
		type rewrite struct {
			eid     string
			body    []byte
			records int
		}
		var rw []rewrite
		for rows.Next() {
			var eid, typ string
			var body []byte
			if err := rows.Scan(&eid, &typ, &body); err != nil {
				rows.Close()
				return err
			}
			// A stored body is NDJSON or compressed NDJSON (codec.go); what
			// is kept is written back compressed when that is smaller.
			plain, err := envelope.RecordsPlain(body, envelope.MaxRecordsPlain)
			if err != nil {
				rows.Close()
				return fmt.Errorf("read records of envelope %s: %w", eid, err)
			}
			kept, k, gone := n.withoutSubject(typ, plain, req.Subject)
			if gone > 0 {
				rw = append(rw, rewrite{eid, envelope.CompressRecords(kept, uint32(k)), k})
				deleted += gone
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, r := range rw {
			if _, err := tx.ExecContext(ctx, `UPDATE received SET body = ?, records = ? WHERE envelope_id = ?`, r.body, r.records, r.eid); err != nil {
				return fmt.Errorf("erase: %w", err)
			}
		}
		if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: req.Provider, Agreement: req.Agreement,
			Purpose: string(req.Purpose), Envelope: req.ID, Reason: "performed", Count: deleted}); err != nil {
			return err
		}
		rc := req.Receipt(deleted, now)
		body, err := json.Marshal(rc)
		if err != nil {
			return err
		}
		to := provider.CurrentKEMKey()
		if to == nil {
			return fmt.Errorf("erasure receipt: provider has no KEM key")
		}
		_, err = n.enqueue(ctx, tx, crypto.Header{Recipient: req.Provider, Agreement: req.Agreement, Purpose: string(req.Purpose),
			Count: 1, Kind: crypto.KindErasureReceipt}, to, n.layout.ControlSubject(req.Provider, n.cfg.NodeID), body, 0)
		return err
	})
	if err != nil || !fresh {
		return err
	}
	n.m.Erasures.WithLabelValues("performed").Inc()
	n.m.RecordsErased.Add(float64(deleted))
	n.receivedRecords.Add(-int64(deleted))
	n.wakeRelay()
	return nil
}

// withoutSubject returns body without the records whose subject key holds
// token, how many records are kept and how many went.
func (n *Node) withoutSubject(typ string, body []byte, token string) (kept []byte, k, gone int) {
	rt, ok := n.std.Type(typ)
	if !ok {
		return body, 0, 0
	}
	key := rt.SubjectKey()
	rd := schema.NewNDJSONReader(bytes.NewReader(body), "")
	lines := bytes.SplitAfter(body, []byte("\n"))
	li := 0
	for {
		rec, _, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		// Lines and records correspond one to one: the body was checked at
		// receipt and has no blank lines.
		line := lines[li]
		li++
		if err == nil && rec.Fields[key] == token {
			gone++
			continue
		}
		kept = append(kept, line...)
		k++
	}
	if kept == nil {
		kept = []byte{}
	}
	return kept, k, gone
}

// ExpireRetention deletes received records whose agreement's retention
// period has ended, without being asked: one pass (the node runs one at
// start and every ten minutes).
func (n *Node) ExpireRetention(ctx context.Context) error { return n.expire(ctx) }

// expire is one retention pass.
func (n *Node) expire(ctx context.Context) error {
	rows, err := n.db.R.QueryContext(ctx, `SELECT r.envelope_id, r.records, i.agreement, i.sender, i.received_ms FROM received r
		JOIN inbox i ON i.envelope_id = r.envelope_id WHERE r.records > 0`)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	type item struct {
		eid, agreement, sender string
		records                int
	}
	var due []item
	now := n.now()
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
			a, _ = n.agreements.Get(ctx, it.agreement)
			agreements[it.agreement] = a
		}
		if a != nil && a.RetentionExpired(time.UnixMilli(received), now) {
			due = append(due, it)
		}
	}
	rows.Close()
	if len(due) == 0 {
		return rows.Err()
	}
	total := 0
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		total = 0
		for _, it := range due {
			if _, err := tx.ExecContext(ctx, `UPDATE received SET body = x'', records = 0 WHERE envelope_id = ?`, it.eid); err != nil {
				return err
			}
			if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindExpire, Peer: it.sender, Agreement: it.agreement,
				Envelope: it.eid, Reason: "retention_expired", Count: it.records}); err != nil {
				return err
			}
			total += it.records
		}
		return nil
	})
	if err == nil {
		n.m.RecordsExpired.Add(float64(total))
		n.receivedRecords.Add(-int64(total))
	}
	return err
}

// janitor runs retention expiry at start and then every interval.
func (n *Node) janitor(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := n.expire(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("retention pass failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
