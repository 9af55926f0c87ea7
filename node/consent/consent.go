// Package consent owns the consent ledger and the erasures consent
// withdrawals set in motion: the consents table (one row per consent
// record, with its grants and withdrawal), the erasures table (the requests
// sent to recipients and their signed receipts), the signed consent
// receipts handed to students and guardians, and the ledger as decisions
// read it.
//
// It must never let a share commit a subject's records while that
// subject's consent is being withdrawn (it holds the shares lock), never
// keep queued what a withdrawal must drop, and never mark an erasure
// confirmed without the recipient's signed receipt answering the request.
package consent

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// ErrUnknown is returned for a consent id the ledger does not hold.
var ErrUnknown = errors.New("unknown consent")

// ErrWithdrawn is Withdraw's error for a consent withdrawn already.
var ErrWithdrawn = errors.New("withdrawn already")

// Config is what a Ledger is built from.
type Config struct {
	NodeID   string
	DB       *store.DB
	Evidence *evidence.Log
	Metrics  *metrics.Metrics
	Keys     *keys.Keys
	Registry *registry.Registry
	Outbox   *outbox.Outbox
	Layout   bus.Layout
	Now      func() time.Time
	// Shares is the shares lock, held while a consent is withdrawn.
	Shares sync.Locker
	// SubjectInClear reports whether the agreement delivered the subject's
	// id in clear (policy.Rulebook.IdentifierInClear), so that an erasure
	// request names it as the recipient's copies carry it.
	SubjectInClear func(ctx context.Context, agreement string) bool
	// ReleaseTokens lists, inside tx, the subject's tokens in the dataset
	// releases this node made to recipient under agreement with a row of
	// theirs (node/release, which gives every release a token of its own
	// per person), so that an erasure request reaches those rows too; nil:
	// the node makes no releases. subject is the subject's id.
	ReleaseTokens func(ctx context.Context, tx *sql.Tx, subject, recipient, agreement string) ([]string, error)
	// DataKey seals consent records and erasure requests at rest; nil
	// stores them in clear (storage.encrypt off). They are read either way.
	DataKey *keys.DataKey
}

// Ledger is a node's consent ledger.
type Ledger struct {
	nodeID  string
	db      *store.DB
	ev      *evidence.Log
	m       *metrics.Metrics
	keys    *keys.Keys
	reg     *registry.Registry
	out     *outbox.Outbox
	layout  bus.Layout
	now     func() time.Time
	shares  sync.Locker
	inClear func(ctx context.Context, agreement string) bool
	relToks func(ctx context.Context, tx *sql.Tx, subject, recipient, agreement string) ([]string, error)
	dk      *keys.DataKey
}

// New is the consent ledger in c.DB.
func New(c Config) *Ledger {
	return &Ledger{nodeID: c.NodeID, db: c.DB, ev: c.Evidence, m: c.Metrics, keys: c.Keys, reg: c.Registry,
		out: c.Outbox, layout: c.Layout, now: c.Now, shares: c.Shares, inClear: c.SubjectInClear,
		relToks: c.ReleaseTokens, dk: c.DataKey}
}

// receiptClaims is a consent receipt: the policy's claims under the JWT's
// registered ones (issuer = this node, subject = the consent id).
type receiptClaims struct {
	policy.ConsentReceiptClaims
	jwt.RegisteredClaims
}

// consentToken is the subject's pseudonym in consent receipts: a token
// under a key only for receipts, so a receipt joins no recipient's copy.
// The key is derived under a label of its own: recipients' token keys are
// derived from "tokens" with the recipient's node id, and a node may be
// named anything, "consent-receipts" included.
func (l *Ledger) consentToken(subject string) string {
	return crypto.Token(crypto.TokenKey(l.keys.Derive("consent receipt tokens"), l.nodeID), subject)
}

// Grant records a consent in the ledger and returns its signed
// receipt (a JWT the institution hands to the student or guardian).
func (l *Ledger) Grant(ctx context.Context, c policy.ConsentRecord) (string, error) {
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
	now := l.now()
	err = l.db.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO consents(id, subject, purpose, body, updated_ms) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(id) DO NOTHING`, c.ID, l.ev.Subject(c.Subject), string(c.Purpose), l.dk.SealIf(body, consentAAD(c.ID)), now.UnixMilli())
		if err != nil {
			return fmt.Errorf("store consent: %w", err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("store consent: %w", err)
		}
		if k == 0 {
			return fmt.Errorf("consent %s exists already", c.ID)
		}
		return l.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindConsent, Purpose: string(c.Purpose),
			Reason: string(policy.ConsentGrant), Subjects: []string{l.ev.Subject(c.Subject)}})
	})
	if err != nil {
		return "", err
	}
	l.m.Consents.WithLabelValues("grant").Inc()
	return l.consentReceipt(c, policy.ConsentGrant, now)
}

func (l *Ledger) consentReceipt(c policy.ConsentRecord, action policy.ConsentAction, now time.Time) (string, error) {
	claims := c.Receipt(l.consentToken(c.Subject), l.nodeID)
	claims.Action = action
	if err := claims.Validate(); err != nil {
		return "", fmt.Errorf("consent receipt: %w", err)
	}
	return l.keys.Signing.SignJWT(receiptClaims{ConsentReceiptClaims: claims, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: l.nodeID, Subject: c.ID, IssuedAt: jwt.NewNumericDate(now),
	}})
}

// Get reads one consent record.
func (l *Ledger) Get(ctx context.Context, id string) (policy.ConsentRecord, error) {
	var body []byte
	err := l.db.R.QueryRowContext(ctx, `SELECT body FROM consents WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return policy.ConsentRecord{}, fmt.Errorf("consent %q: %w", id, ErrUnknown)
	}
	if err != nil {
		return policy.ConsentRecord{}, fmt.Errorf("read consent: %w", err)
	}
	var c policy.ConsentRecord
	body, err = l.dk.Open(nil, body, consentAAD(id))
	if err != nil {
		return c, fmt.Errorf("consent %q as stored: %w", id, err)
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("decode consent %q: %w", id, err)
	}
	return c, nil
}

// List reads the ledger's records in id order, those for purpose only
// when it is set, after the id after, at most limit of them.
func (l *Ledger) List(ctx context.Context, purpose policy.Purpose, after string, limit int) ([]policy.ConsentRecord, error) {
	out := []policy.ConsentRecord{}
	err := l.each(ctx, func(c policy.ConsentRecord) { out = append(out, c) },
		`SELECT id, body FROM consents WHERE (? = '' OR purpose = ?) AND id > ? ORDER BY id LIMIT ?`,
		string(purpose), string(purpose), after, limit)
	return out, err
}

// For loads the ledger's records for one purpose, by subject, for
// a share run.
func (l *Ledger) For(ctx context.Context, purpose policy.Purpose) (map[string][]policy.ConsentRecord, error) {
	out := map[string][]policy.ConsentRecord{}
	err := l.each(ctx, func(c policy.ConsentRecord) { out[c.Subject] = append(out[c.Subject], c) },
		`SELECT id, body FROM consents WHERE purpose = ?`, string(purpose))
	return out, err
}

// each hands f every consent record that query (selecting id, body)
// finds.
func (l *Ledger) each(ctx context.Context, f func(policy.ConsentRecord), query string, args ...any) error {
	rows, err := l.db.R.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read consents: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return fmt.Errorf("read consents: %w", err)
		}
		body, err := l.dk.Open(nil, body, consentAAD(id))
		if err != nil {
			return fmt.Errorf("consent %q as stored: %w", id, err)
		}
		var c policy.ConsentRecord
		if err := json.Unmarshal(body, &c); err != nil {
			return fmt.Errorf("decode consent: %w", err)
		}
		f(c)
	}
	return rows.Err()
}

// WithdrawResult is what a withdrawal set in motion.
type WithdrawResult struct {
	Receipt  string `json:"receipt"`  // the signed consent receipt of the withdrawal (JWT)
	Dropped  int    `json:"dropped"`  // queued envelopes dropped before they left
	Requests int    `json:"requests"` // erasure requests sent to recipients
}

// Withdraw withdraws a consent: the ledger records it, what is still
// queued for the subject under the consent's purpose is dropped (envelopes
// of held records are dropped whole, their other records shared again at
// the next share), and every recipient that received the subject's records
// under that purpose is sent a signed erasure request, all in one
// transaction. Recipients answer with signed erasure receipts.
func (l *Ledger) Withdraw(ctx context.Context, id string) (WithdrawResult, error) {
	// No share may commit the subject's records meanwhile: a run that
	// decided before the withdrawal would otherwise queue them after the
	// withdrawal looked for them.
	l.shares.Lock()
	defer l.shares.Unlock()
	c, err := l.Get(ctx, id)
	if err != nil {
		return WithdrawResult{}, err
	}
	if !c.Withdrawn.IsZero() {
		return WithdrawResult{}, fmt.Errorf("consent %s: %w", id, ErrWithdrawn)
	}
	now := l.now()
	c.Withdrawn = now
	body, err := json.Marshal(c)
	if err != nil {
		return WithdrawResult{}, err
	}
	subject := l.ev.Subject(c.Subject)
	var res WithdrawResult
	err = l.db.Write(ctx, func(tx *sql.Tx) error {
		res = WithdrawResult{}
		if _, err := tx.ExecContext(ctx, `UPDATE consents SET body = ?, updated_ms = ? WHERE id = ?`, l.dk.SealIf(body, consentAAD(id)), now.UnixMilli(), id); err != nil {
			return fmt.Errorf("withdraw consent: %w", err)
		}
		if err := l.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindConsent, Purpose: string(c.Purpose),
			Reason: string(policy.ConsentWithdraw), Subjects: []string{subject}}); err != nil {
			return err
		}
		type target struct{ recipient, agreement string }
		var targets []target
		seen := map[target]bool{}
		deliveries, err := l.out.Deliveries(ctx, tx, subject, string(c.Purpose))
		if err != nil {
			return fmt.Errorf("find deliveries: %w", err)
		}
		var drop []string
		for _, d := range deliveries {
			if !d.Attempted && d.Held {
				drop = append(drop, d.Envelope)
				continue
			}
			if d.Refused != "" {
				continue // the recipient refused it: it holds nothing to erase
			}
			// Sent, or queued with records this node does not hold: it
			// leaves (or has left), and the recipient is asked to erase.
			if t := (target{d.Recipient, d.Agreement}); !seen[t] {
				seen[t] = true
				targets = append(targets, t)
			}
		}
		for _, eid := range drop {
			if err := l.out.Drop(ctx, tx, eid); err != nil {
				return err
			}
			if err := l.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDrop, Envelope: eid, Purpose: string(c.Purpose),
				Reason: "consent_withdrawn", Subjects: []string{subject}}); err != nil {
				return err
			}
			res.Dropped++
		}
		for _, t := range targets {
			if err := l.requestErasure(ctx, tx, c, subject, t.recipient, t.agreement, now); err != nil {
				return err
			}
			res.Requests++
		}
		return nil
	})
	if err != nil {
		return WithdrawResult{}, err
	}
	l.m.Consents.WithLabelValues("withdraw").Inc()
	l.m.Erasures.WithLabelValues("requested").Add(float64(res.Requests))
	l.out.Wake()
	res.Receipt, err = l.consentReceipt(c, policy.ConsentWithdraw, now)
	return res, err
}

// recipientToken is the subject's token at recipient: how the records
// shared with it, and the erasure requests sent to it, name the subject
// (a dataset release's rows carry a token derived from it per release,
// which the request lists beside it: Config.ReleaseTokens).
func (l *Ledger) recipientToken(recipient, subject string) string {
	return crypto.Token(l.keys.TokenKey(recipient), subject)
}

// requestErasure queues a signed erasure request to recipient inside tx.
func (l *Ledger) requestErasure(ctx context.Context, tx *sql.Tx, c policy.ConsentRecord, subject, recipient, agreement string, now time.Time) error {
	cred, err := l.reg.Lookup(ctx, recipient)
	if err != nil {
		return fmt.Errorf("erasure request to %s: %w", recipient, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("erasure request to %s: no KEM key", recipient)
	}
	var rid [16]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return fmt.Errorf("erasure request id: %w", err)
	}
	req := policy.ErasureRequest{
		ID: "er-" + hex.EncodeToString(rid[:]), Provider: l.nodeID, Recipient: recipient,
		Subject: l.recipientToken(recipient, c.Subject),
		Purpose: c.Purpose, Agreement: agreement, Requested: now, Consent: c.ID,
	}
	if l.inClear != nil && l.inClear(ctx, agreement) {
		req.SubjectInClear = c.Subject
	}
	if l.relToks != nil {
		if req.ReleaseTokens, err = l.relToks(ctx, tx, c.Subject, recipient, agreement); err != nil {
			return fmt.Errorf("erasure request to %s: the subject's release tokens: %w", recipient, err)
		}
	}
	if err := req.Validate(); err != nil {
		return fmt.Errorf("erasure request: %w", err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := l.out.Enqueue(ctx, tx, crypto.Header{Recipient: recipient, Agreement: agreement, Purpose: string(c.Purpose),
		Count: 1, Kind: crypto.KindErasureRequest}, to, l.layout.ControlSubject(recipient, l.nodeID), body, 0); err != nil {
		return fmt.Errorf("erasure request: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO erasures(id, subject, recipient, agreement, purpose, request, requested_ms)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, req.ID, subject, recipient, agreement, string(c.Purpose), l.dk.SealIf(body, erasureAAD(req.ID)), now.UnixMilli()); err != nil {
		return fmt.Errorf("store erasure request: %w", err)
	}
	return l.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: recipient, Agreement: agreement,
		Purpose: string(c.Purpose), Reason: "requested", Subjects: []string{subject}, Envelope: req.ID})
}

// ConfirmErasure records a recipient's signed erasure receipt.
func (l *Ledger) ConfirmErasure(ctx context.Context, h crypto.Header, plain []byte) error {
	var rc policy.ErasureReceipt
	if err := json.Unmarshal(plain, &rc); err != nil || rc.Validate() != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an erasure receipt"))
	}
	confirmed := false
	err := l.db.Write(ctx, func(tx *sql.Tx) error {
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
		if body, err = l.dk.Open(nil, body, erasureAAD(rc.Request)); err != nil {
			return fmt.Errorf("erasure request %s as stored: %w", rc.Request, err)
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return err
		}
		if !rc.Answers(&req) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("erasure receipt does not answer its request"))
		}
		if _, err := tx.ExecContext(ctx, `UPDATE erasures SET confirmed_ms = ?, records = ?, receipt = ? WHERE id = ?`,
			l.now().UnixMilli(), rc.Records, plain, rc.Request); err != nil {
			return err
		}
		confirmed = true
		return l.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindErasure, Peer: h.Sender, Agreement: rc.Agreement,
			Envelope: rc.Request, Reason: "confirmed", Count: rc.Records})
	})
	if err == nil && confirmed {
		l.m.Erasures.WithLabelValues("confirmed").Inc()
	}
	return err
}

// ErasureState is when erasure of the subject (evidence hash) was last
// requested from recipient under agreement, and last confirmed; nil when
// never.
func (l *Ledger) ErasureState(ctx context.Context, subject, recipient, agreement string) (requested, confirmed *time.Time, err error) {
	var req, conf sql.NullInt64
	if err := l.db.R.QueryRowContext(ctx, `SELECT max(requested_ms), max(confirmed_ms) FROM erasures
		WHERE subject = ? AND recipient = ? AND agreement = ?`, subject, recipient, agreement).Scan(&req, &conf); err != nil {
		return nil, nil, fmt.Errorf("read erasures: %w", err)
	}
	return msTime(req), msTime(conf), nil
}

func msTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// ErasuresOpen is how many erasure requests await their receipt.
func (l *Ledger) ErasuresOpen(ctx context.Context) (float64, error) {
	var k int64
	if err := l.db.R.QueryRowContext(ctx, `SELECT count(*) FROM erasures WHERE confirmed_ms IS NULL`).Scan(&k); err != nil {
		return 0, fmt.Errorf("read erasures: %w", err)
	}
	return float64(k), nil
}

// Summary counts the ledger: consent records, and erasure requests in all,
// confirmed and open.
type Summary struct {
	Consents                  int64
	Erasures, Confirmed, Open int64
}

// Summarise counts the ledger.
func (l *Ledger) Summarise(ctx context.Context) (Summary, error) {
	var s Summary
	if err := l.db.R.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM consents),
		(SELECT count(*) FROM erasures), (SELECT count(confirmed_ms) FROM erasures),
		(SELECT count(*) - count(confirmed_ms) FROM erasures)`).Scan(&s.Consents, &s.Erasures, &s.Confirmed, &s.Open); err != nil {
		return Summary{}, fmt.Errorf("read consents: %w", err)
	}
	return s, nil
}

// consentAAD and erasureAAD bind a consent record and an erasure request
// sealed at rest to their rows.
func consentAAD(id string) []byte { return append([]byte("eduspace consents.body\x00"), id...) }
func erasureAAD(id string) []byte { return append([]byte("eduspace erasures.request\x00"), id...) }

// Relearnt is what Relearn found of a consent an erasure request names.
type Relearnt struct {
	Held      bool // the ledger holds the consent
	Withdrawn bool // and it is withdrawn
	// Matches: the request's subject token is the consent subject's token
	// at that recipient, and the consent names the recipient.
	Matches bool
}

// Relearn looks up the consent id an erasure request to recipient named,
// with subject token token, as a recovery learnt it back from that
// recipient (node/recovery): whether the ledger holds it, whether it is
// withdrawn, and whether the request is one this node could have made
// for it.
func (l *Ledger) Relearn(ctx context.Context, id, recipient, token string) (Relearnt, error) {
	c, err := l.Get(ctx, id)
	if errors.Is(err, ErrUnknown) {
		return Relearnt{}, nil
	}
	if err != nil {
		return Relearnt{}, err
	}
	r := Relearnt{Held: true, Withdrawn: !c.Withdrawn.IsZero()}
	want := l.recipientToken(recipient, c.Subject)
	r.Matches = c.CoversRecipient(recipient) && hmac.Equal([]byte(want), []byte(token))
	return r, nil
}
