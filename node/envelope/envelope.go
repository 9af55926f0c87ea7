// Package envelope owns the envelopes a node exchanges with its peers: it
// completes, compresses, seals and signs what leaves (Seal), and checks
// what arrives before anything of it is stored (Check, CheckRecords): the
// addressee, the keys, the expiry, the sender's credential and revocation,
// the signature, and that a records payload holds exactly the records its
// header says, of its type and with only that type's fields. It also names
// the closed set of refusal reasons.
//
// It owns no table. It must never let an envelope that fails a check pass
// as a transient failure (a refusal is final), never trust a time the
// sender chose where the node's own clock can decide, and never put record
// contents in an error.
package envelope

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Codec seals envelopes as one node and checks those addressed to it.
type Codec struct {
	NodeID   string
	Keys     *keys.Keys
	Registry *registry.Registry
	Std      *schema.Standard
	// TTL is how long an envelope sealed now stays valid.
	TTL time.Duration
	// IdentityPurposes are the purposes for which direct identifiers may
	// arrive in clear (the rulebook's); under any other, CheckRecords
	// refuses a direct identifier that is not a token.
	IdentityPurposes []policy.Purpose
	// ClearIdentityPurposes are the purposes under which an agreement may
	// ask for a direct identifier in clear (the rulebook's): the fields it
	// keeps may arrive in clear, the others must be tokens.
	ClearIdentityPurposes []policy.Purpose
	Now                   func() time.Time
}

// Seal completes h with what this node always puts there (suite, sender
// and keys, sequence number seq, times, a fresh id), compresses a records
// payload, seals plaintext to `to` and signs it. It returns the envelope id
// and the envelope.
func (c *Codec) Seal(h crypto.Header, to *crypto.KEMPublicKey, seq int64, plaintext []byte) (string, []byte, error) {
	if err := c.Registry.Policy().Refusal(to.Suite()); err != nil {
		return "", nil, fmt.Errorf("seal: the recipient's key: %w", err)
	}
	now := c.Now()
	h.Suite = to.Suite()
	h.Sender, h.SenderKeyID = c.NodeID, c.Keys.Signing.Public().KeyID()
	h.RecipientKeyID = to.KeyID()
	h.Seq = uint64(seq)
	h.Created, h.Expires = now, now.Add(c.TTL)
	if _, err := rand.Read(h.ID[:]); err != nil {
		return "", nil, fmt.Errorf("envelope id: %w", err)
	}
	if h.Kind == crypto.KindRecords {
		plaintext = CompressRecords(plaintext, h.Count) // NDJSON or one S2 block (codec.go)
	}
	data, err := crypto.Seal(rand.Reader, h, to, c.Keys.Signing, plaintext)
	if err != nil {
		return "", nil, fmt.Errorf("seal: %w", err)
	}
	return h.IDString(), data, nil
}

// Open decrypts an envelope Check accepted with the KEM key its header
// names.
func (c *Codec) Open(env *crypto.Envelope) ([]byte, error) { return c.Keys.Open(env) }
