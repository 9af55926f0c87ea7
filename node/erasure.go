package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
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

// WithdrawResult is what a withdrawal set in motion.
type WithdrawResult struct {
	Receipt  string `json:"receipt"`  // the signed consent receipt of the withdrawal (JWT)
	Dropped  int    `json:"dropped"`  // queued envelopes dropped before they left
	Requests int    `json:"requests"` // erasure requests sent to recipients
}

// WithdrawConsent withdraws a consent: the ledger records it, what is still
// queued for the subject under the consent's purpose is dropped (envelopes
// of held records are dropped whole, their other records shared again at
// the next share), and every recipient that received the subject's records
// under that purpose is sent a signed erasure request, all in one
// transaction. Recipients answer with signed erasure receipts.
func (n *Node) WithdrawConsent(ctx context.Context, id string) (WithdrawResult, error) {
	// No share may commit the subject's records meanwhile: a run that
	// decided before the withdrawal would otherwise queue them after the
	// withdrawal looked for them.
	n.shareMu.Lock()
	defer n.shareMu.Unlock()
	c, err := n.consent(ctx, id)
	if err != nil {
		return WithdrawResult{}, err
	}
	if !c.Withdrawn.IsZero() {
		return WithdrawResult{}, fmt.Errorf("consent %s: withdrawn already", id)
	}
	now := n.now()
	c.Withdrawn = now
	body, err := json.Marshal(c)
	if err != nil {
		return WithdrawResult{}, err
	}
	subject := n.ev.Subject(c.Subject)
	var res WithdrawResult
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		res = WithdrawResult{}
		if _, err := tx.ExecContext(ctx, `UPDATE consents SET body = ?, updated_ms = ? WHERE id = ?`, body, now.UnixMilli(), id); err != nil {
			return fmt.Errorf("withdraw consent: %w", err)
		}
		if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindConsent, Purpose: string(c.Purpose),
			Reason: string(policy.ConsentWithdraw), Subjects: []string{subject}}); err != nil {
			return err
		}
		type target struct{ recipient, agreement string }
		var targets []target
		seen := map[target]bool{}
		deliveries, err := n.out.Deliveries(ctx, tx, subject, string(c.Purpose))
		if err != nil {
			return fmt.Errorf("find deliveries: %w", err)
		}
		var drop []string
		for _, d := range deliveries {
			if !d.Attempted && d.Held {
				drop = append(drop, d.Envelope)
				continue
			}
			// Sent, or queued with records this node does not hold: it
			// leaves (or has left), and the recipient is asked to erase.
			if t := (target{d.Recipient, d.Agreement}); !seen[t] {
				seen[t] = true
				targets = append(targets, t)
			}
		}
		for _, eid := range drop {
			if err := n.out.Drop(ctx, tx, eid); err != nil {
				return err
			}
			if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDrop, Envelope: eid, Purpose: string(c.Purpose),
				Reason: "consent_withdrawn", Subjects: []string{subject}}); err != nil {
				return err
			}
			res.Dropped++
		}
		for _, t := range targets {
			if err := n.requestErasure(ctx, tx, c, subject, t.recipient, t.agreement, now); err != nil {
				return err
			}
			res.Requests++
		}
		return nil
	})
	if err != nil {
		return WithdrawResult{}, err
	}
	n.m.Consents.WithLabelValues("withdraw").Inc()
	n.m.Erasures.WithLabelValues("requested").Add(float64(res.Requests))
	n.wakeRelay()
	res.Receipt, err = n.consentReceipt(c, policy.ConsentWithdraw, now)
	return res, err
}

// requestErasure queues a signed erasure request to recipient inside tx.
func (n *Node) requestErasure(ctx context.Context, tx *sql.Tx, c policy.ConsentRecord, subject, recipient, agreement string, now time.Time) error {
	cred, err := n.reg.Lookup(ctx, recipient)
	if err != nil {
		return fmt.Errorf("erasure request to %s: %w", recipient, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("erasure request to %s: no KEM key", recipient)
	}
	var rid [16]byte
	rand.Read(rid[:])
	req := policy.ErasureRequest{
		ID: "er-" + hex.EncodeToString(rid[:]), Provider: n.cfg.NodeID, Recipient: recipient,
		Subject: crypto.Token(crypto.TokenKey(n.keys.Derive("tokens"), recipient), c.Subject),
		Purpose: c.Purpose, Agreement: agreement, Requested: now, Consent: c.ID,
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("erasure request: %w", err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := n.enqueue(ctx, tx, crypto.Header{Recipient: recipient, Agreement: agreement, Purpose: string(c.Purpose),
		Count: 1, Kind: crypto.KindErasureRequest}, to, n.layout.ControlSubject(recipient, n.cfg.NodeID), body, 0); err != nil {
		return fmt.Errorf("erasure request: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO erasures(id, subject, recipient, agreement, purpose, request, requested_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, req.ID, subject, recipient, agreement, string(c.Purpose), body, now.UnixMilli()); err != nil {
		return fmt.Errorf("store erasure request: %w", err)
	}
	return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: recipient, Agreement: agreement,
		Purpose: string(c.Purpose), Reason: "requested", Subjects: []string{subject}, Envelope: req.ID})
}

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
		return h, n.confirmErasure(ctx, h, plain)
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

// confirmErasure records a recipient's signed erasure receipt.
func (n *Node) confirmErasure(ctx context.Context, h crypto.Header, plain []byte) error {
	var rc policy.ErasureReceipt
	if err := json.Unmarshal(plain, &rc); err != nil || rc.Validate() != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an erasure receipt"))
	}
	confirmed := false
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		confirmed = false
		var body []byte
		var done sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT request, confirmed_ms FROM erasures WHERE id = ? AND recipient = ?`, rc.Request, h.Sender).Scan(&body, &done)
		if errors.Is(err, sql.ErrNoRows) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("receipt for an erasure never requested"))
		}
		if err != nil {
			return err
		}
		if done.Valid {
			return nil
		}
		var req policy.ErasureRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return err
		}
		if !rc.Answers(&req) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("erasure receipt does not answer its request"))
		}
		if _, err := tx.ExecContext(ctx, `UPDATE erasures SET confirmed_ms = ?, records = ?, receipt = ? WHERE id = ?`,
			n.now().UnixMilli(), rc.Records, plain, rc.Request); err != nil {
			return err
		}
		confirmed = true
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: h.Sender, Agreement: rc.Agreement,
			Envelope: rc.Request, Reason: "confirmed", Count: rc.Records})
	})
	if err == nil && confirmed {
		n.m.Erasures.WithLabelValues("confirmed").Inc()
	}
	return err
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
