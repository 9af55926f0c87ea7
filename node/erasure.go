package node

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
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
