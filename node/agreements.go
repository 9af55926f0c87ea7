package node

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// ErrUnknownAgreement is returned when a request names an agreement the
// node does not hold.
var ErrUnknownAgreement = errors.New("unknown agreement")

// ErrAgreementNotActive is returned for an agreement proposed but not yet
// accepted by the other party.
var ErrAgreementNotActive = errors.New("agreement not accepted by both parties")

// Agreement states in the agreements table.
const (
	agreementProposed = "proposed" // by this node, awaiting the peer's acceptance
	agreementOffered  = "offered"  // by the peer, awaiting this node's acceptance
	agreementActive   = "active"
	agreementRevoked  = "revoked"
)

// agreementMsg is the plaintext of an agreement message between the two
// parties (envelope kind 5).
type agreementMsg struct {
	Action    string                 `json:"action"` // propose, accept, revoke
	Agreement policy.SignedAgreement `json:"agreement"`
}

// AddAgreement installs an agreement this node is a party to, as provider
// or recipient, without the signed exchange: for agreements the operators
// of both sides install from the same document. Adding the same id again
// replaces it.
func (n *Node) AddAgreement(ctx context.Context, a *policy.Agreement) error {
	if err := a.Validate(n.std); err != nil {
		return err
	}
	peer, err := n.peerOf(a)
	if err != nil {
		return err
	}
	state := agreementActive
	if a.Revoked {
		state = agreementRevoked
	}
	return n.storeAgreement(ctx, a, nil, state, peer, "installed")
}

func (n *Node) peerOf(a *policy.Agreement) (string, error) {
	switch n.cfg.NodeID {
	case a.Provider:
		return a.Recipient, nil
	case a.Recipient:
		return a.Provider, nil
	}
	return "", fmt.Errorf("agreement %s: this node (%s) is neither provider nor recipient", a.ID, n.cfg.NodeID)
}

func (n *Node) storeAgreement(ctx context.Context, a *policy.Agreement, signed *policy.SignedAgreement, state, peer, event string) error {
	return n.db.Write(ctx, func(tx *sql.Tx) error { return n.storeAgreementTx(ctx, tx, a, signed, state, peer, event) })
}

func (n *Node) storeAgreementTx(ctx context.Context, tx *sql.Tx, a *policy.Agreement, signed *policy.SignedAgreement, state, peer, event string) error {
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode agreement: %w", err)
	}
	var sb []byte
	if signed != nil {
		if sb, err = json.Marshal(signed); err != nil {
			return fmt.Errorf("encode agreement: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO agreements(id, body, state, signed, added_ms) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET body = excluded.body, state = excluded.state, signed = excluded.signed, added_ms = excluded.added_ms`,
		a.ID, body, state, sb, n.now().UnixMilli()); err != nil {
		return fmt.Errorf("store agreement: %w", err)
	}
	return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindAgree, Agreement: a.ID, Peer: peer,
		Purpose: string(a.Purpose), Reason: event})
}

// agreement returns the agreement id as decisions see it: revoked ones
// with Revoked set; ErrUnknownAgreement or ErrAgreementNotActive otherwise.
func (n *Node) agreement(ctx context.Context, id string) (*policy.Agreement, error) {
	var body []byte
	var state string
	err := n.db.R.QueryRowContext(ctx, `SELECT body, state FROM agreements WHERE id = ?`, id).Scan(&body, &state)
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
	switch state {
	case agreementProposed, agreementOffered:
		return nil, fmt.Errorf("agreement %q is %s: %w", id, state, ErrAgreementNotActive)
	case agreementRevoked:
		a.Revoked = true
	}
	return &a, nil
}

// signedAgreement reads the signed form and state of an agreement.
func (n *Node) signedAgreement(ctx context.Context, id string) (*policy.SignedAgreement, string, error) {
	var sb []byte
	var state string
	err := n.db.R.QueryRowContext(ctx, `SELECT signed, state FROM agreements WHERE id = ?`, id).Scan(&sb, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("agreement %q: %w", id, ErrUnknownAgreement)
	}
	if err != nil {
		return nil, "", fmt.Errorf("read agreement: %w", err)
	}
	if sb == nil {
		return nil, state, nil
	}
	var s policy.SignedAgreement
	if err := json.Unmarshal(sb, &s); err != nil {
		return nil, "", fmt.Errorf("decode agreement %q: %w", id, err)
	}
	return &s, state, nil
}

// AgreementInfo is an agreement and where it stands.
type AgreementInfo struct {
	policy.Agreement
	State  string `json:"state"`
	Signed bool   `json:"signed"` // both parties' signatures are held
}

// Agreements lists the agreements this node holds.
func (n *Node) Agreements(ctx context.Context) ([]AgreementInfo, error) {
	rows, err := n.db.R.QueryContext(ctx, `SELECT body, state, signed IS NOT NULL FROM agreements ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list agreements: %w", err)
	}
	defer rows.Close()
	out := []AgreementInfo{}
	for rows.Next() {
		var body []byte
		var ai AgreementInfo
		if err := rows.Scan(&body, &ai.State, &ai.Signed); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(body, &ai.Agreement); err != nil {
			return nil, err
		}
		ai.Signed = ai.Signed && ai.State != agreementProposed && ai.State != agreementOffered
		out = append(out, ai)
	}
	return out, rows.Err()
}

// activeAgreements lists the active agreements this node holds.
func (n *Node) activeAgreements(ctx context.Context) ([]policy.Agreement, error) {
	list, err := n.Agreements(ctx)
	if err != nil {
		return nil, err
	}
	var out []policy.Agreement
	for _, ai := range list {
		if ai.State == agreementActive {
			out = append(out, ai.Agreement)
		}
	}
	return out, nil
}

// ProposeAgreement signs a and sends it to the other party, which accepts
// it with AcceptAgreement; until then it decides nothing.
func (n *Node) ProposeAgreement(ctx context.Context, a *policy.Agreement) error {
	if err := a.Validate(n.std); err != nil {
		return err
	}
	peer, err := n.peerOf(a)
	if err != nil {
		return err
	}
	if _, _, err := n.signedAgreement(ctx, a.ID); !errors.Is(err, ErrUnknownAgreement) {
		return fmt.Errorf("agreement %s: exists already", a.ID)
	}
	sa, err := policy.Propose(*a, n.cfg.NodeID, n.keys.Signing.Sign(a.SigningMessage()), n.now())
	if err != nil {
		return err
	}
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		if err := n.storeAgreementTx(ctx, tx, a, &sa, agreementProposed, peer, "proposed"); err != nil {
			return err
		}
		return n.sendAgreementMsg(ctx, tx, peer, "propose", sa)
	})
}

// AcceptAgreement signs an agreement the peer proposed; both signatures are
// kept on both sides and the agreement is in force.
func (n *Node) AcceptAgreement(ctx context.Context, id string) error {
	sa, state, err := n.signedAgreement(ctx, id)
	if err != nil {
		return err
	}
	if state != agreementOffered || sa == nil {
		return fmt.Errorf("agreement %s is %s: only an agreement the other party proposed can be accepted", id, state)
	}
	if err := sa.Accept(n.cfg.NodeID, n.keys.Signing.Sign(sa.SigningMessage()), n.now()); err != nil {
		return err
	}
	peer, _ := n.peerOf(&sa.Agreement)
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		if err := n.storeAgreementTx(ctx, tx, &sa.Agreement, sa, agreementActive, peer, "accepted"); err != nil {
			return err
		}
		return n.sendAgreementMsg(ctx, tx, peer, "accept", *sa)
	})
}

// RevokeAgreement revokes an agreement from this side: what is still
// queued under it is dropped (held records become shareable again under
// another agreement), and the other party is told.
func (n *Node) RevokeAgreement(ctx context.Context, id string) (dropped int, err error) {
	n.shareMu.Lock() // no share under it commits meanwhile
	defer n.shareMu.Unlock()
	a, err := n.agreement(ctx, id)
	if err != nil {
		return 0, err
	}
	if a.Revoked {
		return 0, fmt.Errorf("agreement %s: revoked already", id)
	}
	sa, _, err := n.signedAgreement(ctx, id)
	if err != nil {
		return 0, err
	}
	now := n.now()
	if sa == nil {
		// Installed without the signed exchange: the notice carries the
		// document as installed.
		sa = &policy.SignedAgreement{Agreement: *a, ProposedBy: n.cfg.NodeID, ProposedAt: now}
	}
	if err := sa.Revoke(n.cfg.NodeID, now); err != nil {
		return 0, err
	}
	a.Revoked = true
	peer, _ := n.peerOf(a)
	err = n.db.Write(ctx, func(tx *sql.Tx) error {
		if err := n.storeAgreementTx(ctx, tx, a, sa, agreementRevoked, peer, "revoked"); err != nil {
			return err
		}
		if dropped, err = n.dropQueued(ctx, tx, id); err != nil {
			return err
		}
		return n.sendAgreementMsg(ctx, tx, peer, "revoke", *sa)
	})
	return dropped, err
}

// dropQueued removes the envelopes of records under agreement that have
// not left yet, with their shared marks and deliveries.
func (n *Node) dropQueued(ctx context.Context, tx *sql.Tx, agreement string) (int, error) {
	ids, err := n.out.Queued(ctx, tx, agreement)
	if err != nil {
		return 0, fmt.Errorf("drop queued: %w", err)
	}
	for _, eid := range ids {
		if err := n.out.Drop(ctx, tx, eid); err != nil {
			return 0, err
		}
		if err := n.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDrop, Envelope: eid, Agreement: agreement,
			Reason: "agreement_revoked"}); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

func (n *Node) sendAgreementMsg(ctx context.Context, tx *sql.Tx, peer, action string, sa policy.SignedAgreement) error {
	cred, err := n.reg.Lookup(ctx, peer)
	if err != nil {
		return fmt.Errorf("agreement message to %s: %w", peer, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("agreement message to %s: no KEM key", peer)
	}
	body, err := json.Marshal(agreementMsg{Action: action, Agreement: sa})
	if err != nil {
		return err
	}
	if _, err := n.enqueue(ctx, tx, crypto.Header{Recipient: peer, Agreement: sa.ID, Purpose: string(sa.Purpose),
		Count: 1, Kind: crypto.KindAgreement}, to, n.layout.ControlSubject(peer, n.cfg.NodeID), body, 0); err != nil {
		return fmt.Errorf("agreement message: %w", err)
	}
	n.wakeRelay()
	return nil
}

// agreementMessage handles a proposal, acceptance or revocation from the
// other party of an agreement; every signature is checked against the
// party's credential.
func (n *Node) agreementMessage(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var m agreementMsg
	if err := json.Unmarshal(plain, &m); err != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an agreement message"))
	}
	sa := m.Agreement
	if err := sa.Agreement.Validate(n.std); err != nil {
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("agreement: %w", err))
	}
	peer, err := n.peerOf(&sa.Agreement)
	if err != nil || peer != h.Sender || sa.ID != h.Agreement {
		return envelope.Refuse(envelope.RefuseContent, errors.New("agreement message does not come from the other party"))
	}
	sigOf := func(party string) []byte {
		if party == sa.Provider {
			return sa.ProviderSig
		}
		return sa.RecipientSig
	}
	verified := func(party string, cred *crypto.Credential) bool {
		for _, k := range cred.SigningKeys {
			if n.reg.CheckRevoked(party, k.ID, n.now()) != nil {
				continue // a revoked key signs nothing
			}
			if vk, err := crypto.ParseVerifyKey(k.Key); err == nil && vk.Verify(sa.SigningMessage(), sigOf(party)) {
				return true
			}
		}
		return false
	}
	_, state, err := n.signedAgreement(ctx, sa.ID)
	known := err == nil
	if err != nil && !errors.Is(err, ErrUnknownAgreement) {
		return err
	}
	switch m.Action {
	case "propose":
		if known || sa.ProposedBy != peer || !verified(peer, sender) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("agreement proposal not acceptable"))
		}
		return n.storeAgreement(ctx, &sa.Agreement, &sa, agreementOffered, peer, "offered")
	case "accept":
		if !known || state != agreementProposed || sa.ProposedBy != n.cfg.NodeID || !verified(peer, sender) ||
			!verified(n.cfg.NodeID, n.cred) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("agreement acceptance does not match a proposal of this node"))
		}
		return n.storeAgreement(ctx, &sa.Agreement, &sa, agreementActive, peer, "accepted by peer")
	case "revoke":
		if !known || state == agreementRevoked || sa.RevokedBy != peer || sa.RevokedAt.IsZero() {
			return nil // nothing to revoke, or revoked already
		}
		// Only the state changes: the terms stay those stored here, whatever
		// the message carries.
		n.shareMu.Lock()
		defer n.shareMu.Unlock()
		a, err := n.agreement(ctx, sa.ID)
		if err != nil && !errors.Is(err, ErrAgreementNotActive) {
			return err
		}
		stored, _, err := n.signedAgreement(ctx, sa.ID)
		if err != nil {
			return err
		}
		if a == nil && stored != nil {
			a = &stored.Agreement
		}
		if a == nil {
			return nil
		}
		a.Revoked = true
		if stored != nil {
			stored.RevokedBy, stored.RevokedAt = sa.RevokedBy, sa.RevokedAt
		}
		return n.db.Write(ctx, func(tx *sql.Tx) error {
			if err := n.storeAgreementTx(ctx, tx, a, stored, agreementRevoked, peer, "revoked by peer"); err != nil {
				return err
			}
			_, err := n.dropQueued(ctx, tx, sa.ID)
			return err
		})
	}
	return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("unknown agreement action %q", m.Action))
}
