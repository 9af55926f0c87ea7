// Package agreement owns the data-sharing agreements a node is a party to:
// the agreements table (each agreement's terms, its signed form and its
// state: proposed, offered, active, revoked), the signed exchange by which
// two parties propose, accept and revoke one, and the agreement as
// decisions and the receiver read it.
//
// It must never take an agreement's terms or parties from a message where
// the stored agreement decides (a revocation changes only the state of the
// agreement stored here), never accept a signature from a revoked key, and
// never let a party's revocation leave envelopes queued under it.
package agreement

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// ErrUnknown is returned when a request names an agreement the node does
// not hold.
var ErrUnknown = errors.New("unknown agreement")

// ErrNotActive is returned for an agreement proposed but not yet accepted
// by the other party.
var ErrNotActive = errors.New("agreement not accepted by both parties")

// Agreement states in the agreements table.
const (
	Proposed = "proposed" // by this node, awaiting the peer's acceptance
	Offered  = "offered"  // by the peer, awaiting this node's acceptance
	Active   = "active"
	Revoked  = "revoked"
)

// Config is what a Book is built from.
type Config struct {
	NodeID string
	// Credential is the node's own, whose keys its acceptances are checked
	// against.
	Credential *crypto.Credential
	Std        *schema.Standard
	DB         *store.DB
	Evidence   *evidence.Log
	Keys       *keys.Keys
	Registry   *registry.Registry
	Outbox     *outbox.Outbox
	Layout     bus.Layout
	Now        func() time.Time
	// Shares is held while an agreement is revoked, so that no share under
	// it commits meanwhile.
	Shares sync.Locker
}

// Book is the agreements a node holds.
type Book struct {
	nodeID string
	cred   *crypto.Credential
	std    *schema.Standard
	db     *store.DB
	ev     *evidence.Log
	keys   *keys.Keys
	reg    *registry.Registry
	out    *outbox.Outbox
	layout bus.Layout
	now    func() time.Time
	shares sync.Locker
}

// New is the book of agreements in c.DB.
func New(c Config) *Book {
	return &Book{nodeID: c.NodeID, cred: c.Credential, std: c.Std, db: c.DB, ev: c.Evidence, keys: c.Keys,
		reg: c.Registry, out: c.Outbox, layout: c.Layout, now: c.Now, shares: c.Shares}
}

// agreementMsg is the plaintext of an agreement message between the two
// parties (envelope kind 5).
type agreementMsg struct {
	Action    string                 `json:"action"` // propose, accept, revoke
	Agreement policy.SignedAgreement `json:"agreement"`
}

// Add installs an agreement this node is a party to, as provider
// or recipient, without the signed exchange: for agreements the operators
// of both sides install from the same document. Adding the same id again
// replaces it.
func (b *Book) Add(ctx context.Context, a *policy.Agreement) error {
	if err := a.Validate(b.std); err != nil {
		return err
	}
	peer, err := b.peerOf(a)
	if err != nil {
		return err
	}
	state := Active
	if a.Revoked {
		state = Revoked
	}
	return b.storeAgreement(ctx, a, nil, state, peer, "installed")
}

func (b *Book) peerOf(a *policy.Agreement) (string, error) {
	switch b.nodeID {
	case a.Provider:
		return a.Recipient, nil
	case a.Recipient:
		return a.Provider, nil
	}
	return "", fmt.Errorf("agreement %s: this node (%s) is neither provider nor recipient", a.ID, b.nodeID)
}

func (b *Book) storeAgreement(ctx context.Context, a *policy.Agreement, signed *policy.SignedAgreement, state, peer, event string) error {
	return b.db.Write(ctx, func(tx *sql.Tx) error { return b.storeAgreementTx(ctx, tx, a, signed, state, peer, event) })
}

func (b *Book) storeAgreementTx(ctx context.Context, tx *sql.Tx, a *policy.Agreement, signed *policy.SignedAgreement, state, peer, event string) error {
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
		a.ID, body, state, sb, b.now().UnixMilli()); err != nil {
		return fmt.Errorf("store agreement: %w", err)
	}
	return b.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindAgree, Agreement: a.ID, Peer: peer,
		Purpose: string(a.Purpose), Reason: event})
}

// Get returns the agreement id as decisions see it: revoked ones
// with Revoked set; ErrUnknown or ErrNotActive otherwise.
func (b *Book) Get(ctx context.Context, id string) (*policy.Agreement, error) {
	a, state, err := b.stored(ctx, id)
	if err != nil {
		return nil, err
	}
	switch state {
	case Proposed, Offered:
		return nil, fmt.Errorf("agreement %q is %s: %w", id, state, ErrNotActive)
	case Revoked:
		a.Revoked = true
	}
	return a, nil
}

// signed reads the signed form and state of an agreement.
func (b *Book) signed(ctx context.Context, id string) (*policy.SignedAgreement, string, error) {
	var sb []byte
	var state string
	err := b.db.R.QueryRowContext(ctx, `SELECT signed, state FROM agreements WHERE id = ?`, id).Scan(&sb, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("agreement %q: %w", id, ErrUnknown)
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

// Info is an agreement and where it stands.
type Info struct {
	policy.Agreement
	State  string `json:"state"`
	Signed bool   `json:"signed"` // both parties' signatures are held
}

// List lists the agreements this node holds.
func (b *Book) List(ctx context.Context) ([]Info, error) {
	rows, err := b.db.R.QueryContext(ctx, `SELECT body, state, signed IS NOT NULL FROM agreements ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list agreements: %w", err)
	}
	defer rows.Close()
	out := []Info{}
	for rows.Next() {
		var body []byte
		var ai Info
		if err := rows.Scan(&body, &ai.State, &ai.Signed); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(body, &ai.Agreement); err != nil {
			return nil, err
		}
		ai.Signed = ai.Signed && ai.State != Proposed && ai.State != Offered
		out = append(out, ai)
	}
	return out, rows.Err()
}

// Active lists the active agreements this node holds.
func (b *Book) Active(ctx context.Context) ([]policy.Agreement, error) {
	list, err := b.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []policy.Agreement
	for _, ai := range list {
		if ai.State == Active {
			out = append(out, ai.Agreement)
		}
	}
	return out, nil
}

// Propose signs a and sends it to the other party, which accepts
// it with Accept; until then it decides nothing.
func (b *Book) Propose(ctx context.Context, a *policy.Agreement) error {
	if err := a.Validate(b.std); err != nil {
		return err
	}
	peer, err := b.peerOf(a)
	if err != nil {
		return err
	}
	if _, _, err := b.signed(ctx, a.ID); !errors.Is(err, ErrUnknown) {
		return fmt.Errorf("agreement %s: exists already", a.ID)
	}
	sa, err := policy.Propose(*a, b.nodeID, b.keys.Signing.Sign(a.SigningMessage()), b.now())
	if err != nil {
		return err
	}
	return b.db.Write(ctx, func(tx *sql.Tx) error {
		if err := b.storeAgreementTx(ctx, tx, a, &sa, Proposed, peer, "proposed"); err != nil {
			return err
		}
		return b.sendAgreementMsg(ctx, tx, peer, "propose", sa)
	})
}

// Accept signs an agreement the peer proposed; both signatures are
// kept on both sides and the agreement is in force.
func (b *Book) Accept(ctx context.Context, id string) error {
	sa, state, err := b.signed(ctx, id)
	if err != nil {
		return err
	}
	if state != Offered || sa == nil {
		return fmt.Errorf("agreement %s is %s: only an agreement the other party proposed can be accepted", id, state)
	}
	if err := sa.Accept(b.nodeID, b.keys.Signing.Sign(sa.SigningMessage()), b.now()); err != nil {
		return err
	}
	peer, err := b.peerOf(&sa.Agreement)
	if err != nil {
		return err
	}
	return b.db.Write(ctx, func(tx *sql.Tx) error {
		if err := b.storeAgreementTx(ctx, tx, &sa.Agreement, sa, Active, peer, "accepted"); err != nil {
			return err
		}
		return b.sendAgreementMsg(ctx, tx, peer, "accept", *sa)
	})
}

// Revoke revokes an agreement from this side: what is still
// queued under it is dropped (held records become shareable again under
// another agreement), and the other party is told. A proposal not yet
// accepted is revoked the same way: withdrawn by its proposer, declined
// by the other side.
func (b *Book) Revoke(ctx context.Context, id string) (dropped int, err error) {
	b.shares.Lock() // no share under it commits meanwhile
	defer b.shares.Unlock()
	a, err := b.Get(ctx, id)
	if errors.Is(err, ErrNotActive) {
		// A proposal not accepted yet (sent or received) is withdrawn the
		// same way: the other side drops it.
		a, _, err = b.stored(ctx, id)
	}
	if err != nil {
		return 0, err
	}
	if a.Revoked {
		return 0, fmt.Errorf("agreement %s: revoked already", id)
	}
	sa, _, err := b.signed(ctx, id)
	if err != nil {
		return 0, err
	}
	now := b.now()
	if sa == nil {
		// Installed without the signed exchange: the notice carries the
		// document as installed.
		sa = &policy.SignedAgreement{Agreement: *a, ProposedBy: b.nodeID, ProposedAt: now}
	}
	if err := sa.Revoke(b.nodeID, now); err != nil {
		return 0, err
	}
	a.Revoked = true
	peer, err := b.peerOf(a)
	if err != nil {
		return 0, err
	}
	err = b.db.Write(ctx, func(tx *sql.Tx) error {
		if err := b.storeAgreementTx(ctx, tx, a, sa, Revoked, peer, "revoked"); err != nil {
			return err
		}
		if dropped, err = b.dropQueued(ctx, tx, id); err != nil {
			return err
		}
		return b.sendAgreementMsg(ctx, tx, peer, "revoke", *sa)
	})
	return dropped, err
}

// dropQueued removes the envelopes of records under agreement that have
// not left yet, with their shared marks and deliveries.
func (b *Book) dropQueued(ctx context.Context, tx *sql.Tx, agreement string) (int, error) {
	ids, err := b.out.Queued(ctx, tx, agreement)
	if err != nil {
		return 0, fmt.Errorf("drop queued: %w", err)
	}
	for _, eid := range ids {
		if err := b.out.Drop(ctx, tx, eid); err != nil {
			return 0, err
		}
		if err := b.ev.Append(ctx, tx, evidence.Entry{Kind: evidence.KindDrop, Envelope: eid, Agreement: agreement,
			Reason: "agreement_revoked"}); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

func (b *Book) sendAgreementMsg(ctx context.Context, tx *sql.Tx, peer, action string, sa policy.SignedAgreement) error {
	cred, err := b.reg.Lookup(ctx, peer)
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
	if _, err := b.out.Enqueue(ctx, tx, crypto.Header{Recipient: peer, Agreement: sa.ID, Purpose: string(sa.Purpose),
		Count: 1, Kind: crypto.KindAgreement}, to, b.layout.ControlSubject(peer, b.nodeID), body, 0); err != nil {
		return fmt.Errorf("agreement message: %w", err)
	}
	b.out.Wake()
	return nil
}

// Handle handles a proposal, acceptance or revocation from the
// other party of an agreement; every signature is checked against the
// party's credential.
func (b *Book) Handle(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var m agreementMsg
	if err := json.Unmarshal(plain, &m); err != nil {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an agreement message"))
	}
	sa := m.Agreement
	if err := sa.Agreement.Validate(b.std); err != nil {
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("agreement: %w", err))
	}
	peer, err := b.peerOf(&sa.Agreement)
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
			if b.reg.CheckRevoked(party, k.ID, b.now()) != nil {
				continue // a revoked key signs nothing
			}
			if vk, err := crypto.ParseVerifyKey(k.Key); err == nil && vk.Verify(sa.SigningMessage(), sigOf(party)) {
				return true
			}
		}
		return false
	}
	stored, state, err := b.stored(ctx, sa.ID)
	known := err == nil
	if err != nil && !errors.Is(err, ErrUnknown) {
		return err
	}
	// An agreement this node holds names its parties itself: whatever the
	// message says, only the other party of the stored agreement may
	// accept or revoke it.
	if known {
		if storedPeer, err := b.peerOf(stored); err != nil || storedPeer != h.Sender {
			return envelope.Refuse(envelope.RefuseContent, errors.New("agreement message from a member that is not the other party of the agreement held"))
		}
	}
	switch m.Action {
	case "propose":
		if known || sa.ProposedBy != peer || !verified(peer, sender) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("agreement proposal not acceptable"))
		}
		return b.storeAgreement(ctx, &sa.Agreement, &sa, Offered, peer, "offered")
	case "accept":
		if !known || state != Proposed || sa.ProposedBy != b.nodeID || !verified(peer, sender) ||
			!verified(b.nodeID, b.cred) {
			return envelope.Refuse(envelope.RefuseContent, errors.New("agreement acceptance does not match a proposal of this node"))
		}
		return b.storeAgreement(ctx, &sa.Agreement, &sa, Active, peer, "accepted by peer")
	case "revoke":
		if !known || state == Revoked || sa.RevokedBy != peer || sa.RevokedAt.IsZero() {
			return nil // nothing to revoke, or revoked already
		}
		// Only the state changes: the terms stay those stored here, whatever
		// the message carries.
		b.shares.Lock()
		defer b.shares.Unlock()
		a, err := b.Get(ctx, sa.ID)
		if err != nil && !errors.Is(err, ErrNotActive) {
			return err
		}
		stored, _, err := b.signed(ctx, sa.ID)
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
		return b.db.Write(ctx, func(tx *sql.Tx) error {
			if err := b.storeAgreementTx(ctx, tx, a, stored, Revoked, peer, "revoked by peer"); err != nil {
				return err
			}
			_, err := b.dropQueued(ctx, tx, sa.ID)
			return err
		})
	}
	return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("unknown agreement action %q", m.Action))
}

// stored reads an agreement's terms and state as this node holds them.
func (b *Book) stored(ctx context.Context, id string) (*policy.Agreement, string, error) {
	var body []byte
	var state string
	err := b.db.R.QueryRowContext(ctx, `SELECT body, state FROM agreements WHERE id = ?`, id).Scan(&body, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("agreement %q: %w", id, ErrUnknown)
	}
	if err != nil {
		return nil, "", fmt.Errorf("read agreement: %w", err)
	}
	var a policy.Agreement
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, "", fmt.Errorf("decode agreement %q: %w", id, err)
	}
	return &a, state, nil
}
