package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eduspace/eduspace/crypto"
)

// Signed is a checkpoint as published on the space and kept in the
// checkpoints table: the signed statement (crypto.SignCheckpoint), the
// signer's member credential (JWT), and unverified copies of what the
// statement says, for use when no authority key is at hand.
type Signed struct {
	Node       string
	Count      int64
	Head       []byte
	TimeMS     int64 // unix milliseconds
	Data       []byte
	Credential string
	// TSAToken is the RFC 3161 time-stamp token (DER) over SHA-256 of
	// Data that the signer's TSA issued, if any; nil when the checkpoint
	// is unanchored. Verifying it is the caller's business.
	TSAToken []byte
}

// Digest is what a time-stamp token anchoring the checkpoint stamps:
// SHA-256 of the signed checkpoint.
func (s Signed) Digest() []byte {
	d := sha256.Sum256(s.Data)
	return d[:]
}

// Checkpoint returns the unverified checkpoint the copies describe.
func (s Signed) Checkpoint() Checkpoint { return Checkpoint{Count: s.Count, Head: s.Head} }

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// Authenticate verifies s as a checkpoint of node s.Node in space: the
// credential must verify under root for space at the checkpoint's time, be
// s.Node's, and hold the checkpoint key the statement names; the statement
// must verify with that key, name space, s.Node and the time s.TimeMS; and
// the copies Count and Head must be what it says. It returns the verified
// checkpoint.
//
// Revocation is not checked: the caller holding a revocation list checks
// the node and key id at the checkpoint's time.
func (s Signed) Authenticate(root crypto.AuthorityPublicKey, space string) (Checkpoint, error) {
	node, keyID, err := crypto.CheckpointSigner(s.Data)
	if err != nil {
		return Checkpoint{}, err
	}
	if node != s.Node {
		return Checkpoint{}, fmt.Errorf("checkpoint names node %q, not %q", node, s.Node)
	}
	at := time.UnixMilli(s.TimeMS)
	cred, err := crypto.ParseCredential(strings.TrimSpace(s.Credential), root, space, at)
	if err != nil {
		return Checkpoint{}, err
	}
	if cred.NodeID != s.Node {
		return Checkpoint{}, fmt.Errorf("credential is %q's, not %q's", cred.NodeID, s.Node)
	}
	if !cred.HasCheckpointKey(keyID) {
		return Checkpoint{}, fmt.Errorf("credential has no checkpoint key %s", keyID)
	}
	c, err := cred.VerifyCheckpoint(s.Data)
	if err != nil {
		return Checkpoint{}, err
	}
	switch {
	case c.Space != space:
		return Checkpoint{}, fmt.Errorf("checkpoint is for space %q, not %q", c.Space, space)
	case c.Node != s.Node:
		return Checkpoint{}, fmt.Errorf("checkpoint names node %q, not %q", c.Node, s.Node)
	case c.Time.UnixMilli() != s.TimeMS:
		return Checkpoint{}, errors.New("stored time differs from the signed checkpoint's")
	case c.Count != uint64(s.Count) || !bytes.Equal(c.Head[:], s.Head):
		return Checkpoint{}, errors.New("stored count or head differs from the signed checkpoint's")
	}
	return Checkpoint{Count: int64(c.Count), Head: c.Head[:]}, nil
}

// CredentialSpace returns the space a member credential's issuer claim
// names, without verifying anything, or "" when it names none. Use it to
// choose the space to verify the credential for, never as a fact.
func CredentialSpace(jwt string) string {
	parts := strings.Split(strings.TrimSpace(jwt), ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var cl struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(payload, &cl) != nil {
		return ""
	}
	space, ok := strings.CutPrefix(cl.Iss, "eduspace-authority:")
	if !ok {
		return ""
	}
	return space
}
