package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// ErrUnknownConsent is returned for a consent id the ledger does not hold.
var ErrUnknownConsent = errors.New("unknown consent")

// receiptClaims is a consent receipt: the policy's claims under the JWT's
// registered ones (issuer = this node, subject = the consent id).
type receiptClaims struct {
	policy.ConsentReceiptClaims
	jwt.RegisteredClaims
}

// consentToken is the subject's pseudonym in consent receipts: a token
// under a key only for receipts, so a receipt joins no recipient's copy.
func (n *Node) consentToken(subject string) string {
	return crypto.Token(crypto.TokenKey(n.keys.Derive("tokens"), "consent-receipts"), subject)
}

// GrantConsent records a consent in the ledger and returns its signed
// receipt (a JWT the institution hands to the student or guardian).
func (n *Node) GrantConsent(ctx context.Context, c policy.ConsentRecord) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	if !c.Withdrawn.IsZero() {
		return "", errors.New("consent: a new consent cannot be withdrawn already")
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	now := n.now()
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO consents(id, subject, purpose, body, updated_ms) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(id) DO NOTHING`, c.ID, c.Subject, string(c.Purpose), body, now.UnixMilli())
		if err != nil {
			return fmt.Errorf("store consent: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return fmt.Errorf("consent %s exists already", c.ID)
		}
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindConsent, Purpose: string(c.Purpose),
			Reason: string(policy.ConsentGrant), Subjects: []string{n.ev.Subject(c.Subject)}})
	})
	if err != nil {
		return "", err
	}
	n.m.Consents.WithLabelValues("grant").Inc()
	return n.consentReceipt(c, policy.ConsentGrant, now)
}

func (n *Node) consentReceipt(c policy.ConsentRecord, action policy.ConsentAction, now time.Time) (string, error) {
	claims := c.Receipt(n.consentToken(c.Subject), n.cfg.NodeID)
	claims.Action = action
	if err := claims.Validate(); err != nil {
		return "", fmt.Errorf("consent receipt: %w", err)
	}
	return n.keys.Signing.SignJWT(receiptClaims{ConsentReceiptClaims: claims, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: n.cfg.NodeID, Subject: c.ID, IssuedAt: jwt.NewNumericDate(now),
	}})
}

// consent reads one consent record.
func (n *Node) consent(ctx context.Context, id string) (policy.ConsentRecord, error) {
	var body []byte
	err := n.db.R.QueryRowContext(ctx, `SELECT body FROM consents WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return policy.ConsentRecord{}, fmt.Errorf("consent %q: %w", id, ErrUnknownConsent)
	}
	if err != nil {
		return policy.ConsentRecord{}, fmt.Errorf("read consent: %w", err)
	}
	var c policy.ConsentRecord
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("decode consent %q: %w", id, err)
	}
	return c, nil
}

// consentsFor loads the ledger's records for one purpose, by subject, for
// a share run.
func (n *Node) consentsFor(ctx context.Context, purpose policy.Purpose) (map[string][]policy.ConsentRecord, error) {
	rows, err := n.db.R.QueryContext(ctx, `SELECT body FROM consents WHERE purpose = ?`, string(purpose))
	if err != nil {
		return nil, fmt.Errorf("read consents: %w", err)
	}
	defer rows.Close()
	out := map[string][]policy.ConsentRecord{}
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("read consents: %w", err)
		}
		var c policy.ConsentRecord
		if err := json.Unmarshal(body, &c); err != nil {
			return nil, fmt.Errorf("decode consent: %w", err)
		}
		out[c.Subject] = append(out[c.Subject], c)
	}
	return out, rows.Err()
}
