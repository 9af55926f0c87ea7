package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// ErrUnknownAgreement is returned when a request names an agreement the
// node does not hold.
var ErrUnknownAgreement = errors.New("unknown agreement")

// AddAgreement records an agreement this node is a party to, as provider
// or recipient. Adding the same id again replaces it (a revocation is an
// update with revoked set).
func (n *Node) AddAgreement(ctx context.Context, a *policy.Agreement) error {
	if err := a.Validate(n.std); err != nil {
		return err
	}
	if a.Provider != n.cfg.NodeID && a.Recipient != n.cfg.NodeID {
		return fmt.Errorf("agreement %s: this node (%s) is neither provider nor recipient", a.ID, n.cfg.NodeID)
	}
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode agreement: %w", err)
	}
	peer := a.Recipient
	if peer == n.cfg.NodeID {
		peer = a.Provider
	}
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agreements(id, body, added_ms) VALUES (?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET body = excluded.body, added_ms = excluded.added_ms`,
			a.ID, body, n.now().UnixMilli()); err != nil {
			return fmt.Errorf("store agreement: %w", err)
		}
		reason := "added"
		if a.Revoked {
			reason = "revoked"
		}
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindAgree, Agreement: a.ID, Peer: peer,
			Purpose: string(a.Purpose), Reason: reason})
	})
}

// agreement returns the stored agreement id, or ErrUnknownAgreement.
func (n *Node) agreement(ctx context.Context, id string) (*policy.Agreement, error) {
	var body []byte
	err := n.db.R.QueryRowContext(ctx, `SELECT body FROM agreements WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("agreement %q: %w", id, ErrUnknownAgreement)
	}
	if err != nil {
		return nil, fmt.Errorf("read agreement: %w", err)
	}
	var a policy.Agreement
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("decode agreement %q: %w", id, err)
	}
	return &a, nil
}
