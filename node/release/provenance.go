package release

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
)

// Manifest is what a provider tells the recipient of a release once its
// rows are on their way (envelope kind 10): the release as the provider
// recorded it. The recipient keeps it, so that it knows the releases it
// holds, their data cards, and whom to declare a model's use of them to.
type Manifest struct {
	Provider string `json:"provider"`
	Release
}

// sendManifest queues the release's manifest to its recipient.
func (r *Releaser) sendManifest(ctx context.Context, rel *Release) error {
	if r.c.Outbox == nil {
		return nil
	}
	body, err := json.Marshal(Manifest{Provider: r.c.NodeID, Release: *rel})
	if err != nil {
		return err
	}
	return r.enqueue(ctx, rel.Recipient, crypto.Header{Recipient: rel.Recipient, Agreement: rel.Agreement, Purpose: rel.Purpose,
		Count: 1, Kind: crypto.KindRelease}, body, nil)
}

// enqueue seals body to peer under h and writes it to the outbox, with
// extra done in the same transaction.
func (r *Releaser) enqueue(ctx context.Context, peer string, h crypto.Header, body []byte, extra func(tx *sql.Tx) error) error {
	cred, err := r.c.Registry.Lookup(ctx, peer)
	if err != nil {
		return fmt.Errorf("%s: %w", peer, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("%s has no KEM key", peer)
	}
	if err := r.c.DB.Write(ctx, func(tx *sql.Tx) error {
		if extra != nil {
			if err := extra(tx); err != nil {
				return err
			}
		}
		_, err := r.c.Outbox.Enqueue(ctx, tx, h, to, r.c.Layout.ControlSubject(peer, r.c.NodeID), body, 0)
		return err
	}); err != nil {
		return err
	}
	r.c.Outbox.Wake()
	return nil
}

// AcceptManifest takes a release's manifest from its provider (the
// receiver's handler of kind 10): the provider must be the sender and
// the agreement's provider, this node its recipient, the purpose the
// agreement's. What does not hold is refused (bad_content).
func (r *Releaser) AcceptManifest(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var m Manifest
	if err := json.Unmarshal(plain, &m); err != nil || m.ID == "" || len(m.Digest) != 64 {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not a release manifest"))
	}
	if m.Provider != h.Sender || m.Recipient != r.c.NodeID || m.Agreement != h.Agreement {
		return envelope.Refuse(envelope.RefuseContent, errors.New("release manifest does not match its envelope"))
	}
	a, err := r.c.Agreements.Get(ctx, m.Agreement)
	if err != nil || a.Provider != h.Sender || a.Recipient != r.c.NodeID || string(a.Purpose) != m.Purpose {
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("release manifest under agreement %s, which does not cover it", m.Agreement))
	}
	now := r.c.Now()
	return r.c.DB.Write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO releases_received(id, provider, agreement, purpose, method, records, digest, received_ms, manifest)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ID, m.Provider, m.Agreement, m.Purpose, m.Method, m.Records, m.Digest, now.UnixMilli(), string(plain))
		if err != nil {
			return fmt.Errorf("store release manifest: %w", err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return nil // a duplicate
		}
		return r.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidenceKind, Peer: m.Provider, Agreement: m.Agreement,
			Purpose: m.Purpose, Envelope: m.ID, Rule: m.Method, Reason: "received", Count: m.Records, Digest: m.Digest})
	})
}

// Received lists the releases this node received, newest first.
func (r *Releaser) Received(ctx context.Context) ([]Manifest, error) {
	return queryJSON[Manifest](ctx, r.c.DB.R, "read received releases", "read received release", `SELECT manifest FROM releases_received ORDER BY received_ms DESC, id`)
}

// Uses of a release a provenance declaration may declare.
const (
	UseTraining   = "training"
	UseEvaluation = "evaluation"
)

// useAllowed tells whether a release made for purpose may be declared
// to have had use: training only on a model_training release, evaluation
// on a model_training or model_evaluation one.
func useAllowed(use, purpose string) bool {
	switch use {
	case UseTraining:
		return purpose == string(policy.PurposeModelTraining)
	case UseEvaluation:
		return purpose == string(policy.PurposeModelTraining) || purpose == string(policy.PurposeModelEvaluation)
	}
	return false
}

// Declaration is an AI service's statement that releases fed one version
// of a model, for one use.
type Declaration struct {
	ID       string            `json:"id"`
	Declarer string            `json:"declarer"`
	Model    string            `json:"model"`
	Version  string            `json:"version"`
	Use      string            `json:"use"`
	Releases []DeclaredRelease `json:"releases"`
	Declared time.Time         `json:"declared"`
}

// DeclaredRelease names one release a declaration covers, as its
// provider's manifest gave it.
type DeclaredRelease struct {
	ID        string `json:"id"`
	Provider  string `json:"provider"`
	Agreement string `json:"agreement"`
	Digest    string `json:"digest"`
}

// SignedDeclaration is a declaration with the declarer's Ed25519
// signature over SigningMessage, by its key KeyID.
type SignedDeclaration struct {
	Declaration Declaration `json:"declaration"`
	KeyID       string      `json:"key_id"`
	Signature   string      `json:"signature"` // hex
}

// SigningMessage is what the declarer signs: a label, then the
// declaration's JSON.
func (d Declaration) SigningMessage() ([]byte, error) {
	body, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return append([]byte("eduspace provenance v1\x00"), body...), nil
}

// DeclareRequest asks an AI service node to declare a model's use of
// releases it received.
type DeclareRequest struct {
	Model    string   `json:"model"`
	Version  string   `json:"version"`
	Releases []string `json:"releases"`
	Use      string   `json:"use,omitempty"` // training (default) or evaluation
}

// Declare records, on an AI service node, that the releases fed the
// model's version, and sends each release's provider a declaration of
// its releases signed by this node's key.
func (r *Releaser) Declare(ctx context.Context, req DeclareRequest) (Declaration, error) {
	if r.c.Role != crypto.RoleAIService {
		return Declaration{}, fmt.Errorf("provenance: this node's role is %q; only an ai_service member declares model uses", r.c.Role)
	}
	if req.Use == "" {
		req.Use = UseTraining
	}
	if req.Use != UseTraining && req.Use != UseEvaluation {
		return Declaration{}, fmt.Errorf("provenance: use %q, want training or evaluation", req.Use)
	}
	if req.Model == "" || req.Version == "" || len(req.Releases) == 0 || len(req.Model) > 128 || len(req.Version) > 64 {
		return Declaration{}, errors.New("provenance: a model name (≤ 128 bytes), a version (≤ 64) and at least one release id are required")
	}
	id, err := r.newID("prov-", "provenance id")
	if err != nil {
		return Declaration{}, err
	}
	d := Declaration{ID: id, Declarer: r.c.NodeID, Model: req.Model, Version: req.Version,
		Use: req.Use, Declared: r.c.Now().UTC().Truncate(time.Millisecond)}
	byProvider := map[string][]DeclaredRelease{}
	for _, id := range slices.Compact(slices.Sorted(slices.Values(req.Releases))) {
		var dr DeclaredRelease
		var purpose string
		err := r.c.DB.R.QueryRowContext(ctx, `SELECT provider, agreement, digest, purpose FROM releases_received WHERE id = ?`, id).
			Scan(&dr.Provider, &dr.Agreement, &dr.Digest, &purpose)
		if errors.Is(err, sql.ErrNoRows) {
			return Declaration{}, fmt.Errorf("provenance: release %s: this node received no such release (eduspace provenance list shows those it did)", id)
		}
		if err != nil {
			return Declaration{}, fmt.Errorf("provenance: %w", err)
		}
		if !useAllowed(req.Use, purpose) {
			return Declaration{}, fmt.Errorf("provenance: release %s was made for %s, which does not allow %s", id, purpose, req.Use)
		}
		dr.ID = id
		d.Releases = append(d.Releases, dr)
		byProvider[dr.Provider] = append(byProvider[dr.Provider], dr)
	}
	providers := make([]string, 0, len(byProvider))
	for p := range byProvider {
		providers = append(providers, p)
	}
	sort.Strings(providers)
	for i, p := range providers {
		part := d
		part.Releases = byProvider[p]
		signed, err := r.sign(part)
		if err != nil {
			return Declaration{}, err
		}
		body, err := json.Marshal(signed)
		if err != nil {
			return Declaration{}, err
		}
		var store func(tx *sql.Tx) error
		if i == 0 {
			all, err := r.sign(d)
			if err != nil {
				return Declaration{}, err
			}
			store = func(tx *sql.Tx) error { return r.storeDeclaration(ctx, tx, all) }
		}
		if err := r.enqueue(ctx, p, crypto.Header{Recipient: p, Count: 1, Kind: crypto.KindProvenance}, body, store); err != nil {
			return Declaration{}, fmt.Errorf("provenance: to %s: %w", p, err)
		}
	}
	return d, nil
}

func (r *Releaser) sign(d Declaration) (SignedDeclaration, error) {
	msg, err := d.SigningMessage()
	if err != nil {
		return SignedDeclaration{}, err
	}
	return SignedDeclaration{Declaration: d, KeyID: r.c.Keys.Signing.Public().KeyID(),
		Signature: hex.EncodeToString(r.c.Keys.Signing.Sign(msg))}, nil
}

// storeDeclaration writes a declaration, made here or received, with its
// evidence entry.
func (r *Releaser) storeDeclaration(ctx context.Context, tx *sql.Tx, s SignedDeclaration) error {
	d := s.Declaration
	body, err := json.Marshal(s)
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO provenance(id, declarer, model, version, use, declared_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Declarer, d.Model, d.Version, d.Use, d.Declared.UnixMilli(), string(body))
	if err != nil {
		return fmt.Errorf("store provenance: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		return nil
	}
	for _, rel := range d.Releases {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO provenance_releases(release, provenance) VALUES (?, ?)`, rel.ID, d.ID); err != nil {
			return fmt.Errorf("store provenance: %w", err)
		}
	}
	sum := sha256.Sum256(body)
	peer := d.Declarer
	if peer == r.c.NodeID && len(d.Releases) > 0 {
		peer = d.Releases[0].Provider
	}
	return r.c.Evidence.Append(ctx, tx, evidence.Entry{Kind: "provenance", Peer: peer, Envelope: d.ID,
		Rule: d.Use, Reason: "declared", Count: len(d.Releases), Digest: hex.EncodeToString(sum[:])})
}

// AcceptDeclaration takes an AI service's provenance declaration (the
// receiver's handler of kind 11): the sender must be the declarer, an
// ai_service member, whose signature by the named key verifies; every
// release it names must be one this node made for it, with the digest
// the node recorded, for a purpose that allows the use. Anything else is
// refused (bad_content) and nothing of it is kept.
func (r *Releaser) AcceptDeclaration(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var s SignedDeclaration
	if err := json.Unmarshal(plain, &s); err != nil || s.Declaration.ID == "" || len(s.Declaration.Releases) == 0 {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not a provenance declaration"))
	}
	d := s.Declaration
	if d.Declarer != h.Sender || sender == nil || sender.Role != crypto.RoleAIService {
		return envelope.Refuse(envelope.RefuseContent, errors.New("provenance declaration not from an ai_service member declaring for itself"))
	}
	key, ok := sender.SigningKey(s.KeyID)
	sig, err := hex.DecodeString(s.Signature)
	msg, merr := d.SigningMessage()
	if !ok || err != nil || merr != nil || !key.Verify(msg, sig) {
		return envelope.Refuse(envelope.RefuseContent, errors.New("provenance declaration's signature does not verify"))
	}
	if !useAllowed(d.Use, string(policy.PurposeModelTraining)) {
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("provenance declaration of use %q", d.Use))
	}
	for _, dr := range d.Releases {
		var recipient, digest, purpose string
		err := r.c.DB.R.QueryRowContext(ctx, `SELECT recipient, digest, purpose FROM releases WHERE id = ?`, dr.ID).Scan(&recipient, &digest, &purpose)
		if errors.Is(err, sql.ErrNoRows) || err == nil && (recipient != h.Sender || digest != dr.Digest || dr.Provider != r.c.NodeID) {
			return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("provenance declaration names release %s, which this node did not make for %s as declared", dr.ID, h.Sender))
		}
		if err != nil {
			return err
		}
		if !useAllowed(d.Use, purpose) {
			return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("provenance declaration of %s on release %s, made for %s", d.Use, dr.ID, purpose))
		}
	}
	return r.c.DB.Write(ctx, func(tx *sql.Tx) error { return r.storeDeclaration(ctx, tx, s) })
}

// ModelUse is one declared use of a release, for the subject report.
type ModelUse struct {
	Declaration string    `json:"declaration"`
	Declarer    string    `json:"declarer"`
	Model       string    `json:"model"`
	Version     string    `json:"version"`
	Use         string    `json:"use"`
	Declared    time.Time `json:"declared"`
}

// usesOfSubject lists the declared uses of each release that included
// the subject whose evidence hash is hash, by release, oldest first: one
// query for all of them.
func (r *Releaser) usesOfSubject(ctx context.Context, hash string) (map[string][]ModelUse, error) {
	type use struct {
		release string
		ModelUse
	}
	all, err := queryAll(ctx, r.c.DB.R, "read model uses", `SELECT pr.release, p.id, p.declarer, p.model, p.version, p.use, p.declared_ms
		FROM release_subjects s JOIN provenance_releases pr ON pr.release = s.release JOIN provenance p ON p.id = pr.provenance
		WHERE s.subject = ? ORDER BY p.declared_ms, p.id`, []any{hash},
		func(read func(...any) error) (use, error) {
			var u use
			var ms int64
			if err := read(&u.release, &u.Declaration, &u.Declarer, &u.Model, &u.Version, &u.Use, &ms); err != nil {
				return u, err
			}
			u.Declared = time.UnixMilli(ms).UTC()
			return u, nil
		})
	if err != nil {
		return nil, err
	}
	out := map[string][]ModelUse{}
	for _, u := range all {
		out[u.release] = append(out[u.release], u.ModelUse)
	}
	return out, nil
}

// Declarations lists the provenance declarations this node made or
// received, newest first.
func (r *Releaser) Declarations(ctx context.Context) ([]SignedDeclaration, error) {
	return queryJSON[SignedDeclaration](ctx, r.c.DB.R, "read provenance", "read provenance", `SELECT body FROM provenance ORDER BY declared_ms DESC, id`)
}
