package linkage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// Bounds of one chunk.
const (
	// MaxPart is the most elements one proof may cover.
	MaxPart = 8192
	// MinPart is the fewest elements one proof may cover (but for a chunk
	// of fewer): a proof costs the evaluator a few scalar multiplications
	// whatever it covers, so parts of one element would multiply its work.
	MinPart = 16
	// MaxChunk is the most elements one chunk may carry.
	MaxChunk = 16384
)

var (
	qUsage    = store.NewQuery(usageSQL)
	qChunk    = store.NewQuery(`INSERT INTO linkage_chunks(member, request, chunk, elements, purpose, epoch, done_ms) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	qAddUsage = store.NewQuery(`INSERT INTO linkage_usage(member, purpose, epoch, evaluations, refused, last_ms) VALUES (?, ?, ?, ?, 0, ?)
		ON CONFLICT(member, purpose, epoch) DO UPDATE SET evaluations = evaluations + excluded.evaluations, last_ms = excluded.last_ms`)
	qAddRefused = store.NewQuery(`INSERT INTO linkage_usage(member, purpose, epoch, evaluations, refused, last_ms) VALUES (?, ?, ?, 0, 1, ?)
		ON CONFLICT(member, purpose, epoch) DO UPDATE SET refused = refused + 1, last_ms = excluded.last_ms`)
)

const usageSQL = `SELECT coalesce((SELECT evaluations FROM linkage_usage WHERE member = ? AND purpose = ? AND epoch = ?), 0),
	coalesce((SELECT sum(elements) FROM linkage_chunks WHERE member = ? AND request = ?), 0),
	EXISTS (SELECT 1 FROM linkage_chunks WHERE member = ? AND request = ? AND chunk = ?)`

// usage is what the evaluator has counted for a chunk's member.
type usage struct {
	epoch    int64 // evaluations for the member, purpose and epoch
	request  int64 // elements of the request answered so far
	answered bool  // this chunk was answered already
}

// usage reads the counts for m's member, inside tx or, when tx is nil,
// from the readers.
func (s *Service) usage(ctx context.Context, tx *sql.Tx, member string, m message) (u usage, err error) {
	args := []any{member, m.Purpose, m.Epoch, member, m.Request, member, m.Request, m.Chunk}
	if tx == nil {
		err = s.d.DB.R.QueryRowContext(ctx, usageSQL, args...).Scan(&u.epoch, &u.request, &u.answered)
	} else {
		err = s.d.DB.QueryRow(ctx, tx, qUsage, args...).Scan(&u.epoch, &u.request, &u.answered)
	}
	if err != nil {
		return u, fmt.Errorf("read linkage usage: %w", err)
	}
	return u, nil
}

// evaluate answers a chunk of an evaluation request from sender: checked,
// counted against the sender's limits, evaluated, its evidence entry
// written and its answer queued in one transaction.
func (s *Service) evaluate(ctx context.Context, h crypto.Header, sender *crypto.Credential, m message) error {
	k := len(m.Elements) / ElementSize
	if len(m.Elements)%ElementSize != 0 || k == 0 || k > MaxChunk || m.Part < min(MinPart, k) || m.Part > MaxPart ||
		m.Chunks < 1 || m.Chunk < 0 || m.Chunk >= m.Chunks || m.Total < k {
		s.m.Refused.WithLabelValues(RefuseMalformed).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("linkage request out of bounds"))
	}
	if reason := s.requestRefusal(sender, m); reason != "" {
		return s.refuseRequest(ctx, sender, m, reason)
	}
	key, err := s.key(m.KeyID)
	if err != nil {
		s.d.Log.Error("linkage key", "err", err)
		return s.refuseRequest(ctx, sender, m, RefuseKey)
	}
	u, err := s.usage(ctx, nil, sender.NodeID, m)
	if err != nil {
		return err
	}
	if u.answered {
		return nil // a redelivered chunk: answered when it first came
	}
	if reason := s.limitRefusal(u, m, k); reason != "" {
		return s.refuseRequest(ctx, sender, m, reason)
	}
	ans, err := evaluateChunk(key, m)
	if err != nil {
		s.m.Refused.WithLabelValues(RefuseMalformed).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("linkage request: %w", err))
	}
	if s.d.Options.answer != nil {
		s.d.Options.answer(&m, &ans)
	}
	body, err := json.Marshal(ans)
	if err != nil {
		return err
	}
	local := sender.NodeID == s.d.NodeID
	to := sender.CurrentKEMKey()
	if to == nil && !local {
		return envelope.Refuse(envelope.RefuseContent, errors.New("linkage requester has no KEM key"))
	}
	refusal := ""
	err = s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		refusal = ""
		// Counted again inside the transaction: the one writer sees every
		// chunk answered before this one.
		u, err := s.usage(ctx, tx, sender.NodeID, m)
		if err != nil || u.answered {
			return err
		}
		if refusal = s.limitRefusal(u, m, k); refusal != "" {
			return nil
		}
		now := s.d.Now().UnixMilli()
		if _, err := s.d.DB.Exec(ctx, tx, qChunk, sender.NodeID, m.Request, m.Chunk, k, m.Purpose, m.Epoch, now); err != nil {
			return fmt.Errorf("count linkage chunk: %w", err)
		}
		if _, err := s.d.DB.Exec(ctx, tx, qAddUsage, sender.NodeID, m.Purpose, m.Epoch, k, now); err != nil {
			return fmt.Errorf("count linkage usage: %w", err)
		}
		if err := s.d.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidenceKind, Peer: sender.NodeID, Purpose: m.Purpose,
			Rule: epochRule(m.Epoch), Reason: "evaluated", Count: k, Envelope: h.IDString()}); err != nil {
			return err
		}
		if local {
			return nil
		}
		_, err = s.d.Enqueue(ctx, tx, crypto.Header{Recipient: sender.NodeID, Count: 1, Kind: crypto.KindLinkage}, to,
			s.d.Layout.ControlSubject(sender.NodeID, s.d.NodeID), body, 0)
		return err
	})
	if err != nil {
		return err
	}
	if refusal != "" {
		return s.refuseRequest(ctx, sender, m, refusal)
	}
	s.m.Evaluations.WithLabelValues("evaluated").Add(float64(k))
	if local {
		s.deliverLocal(ans)
		return nil
	}
	s.d.WakeRelay()
	return nil
}

// evaluateSelf evaluates a chunk of the evaluator's own request: the
// same checks, limits, counts and evidence as a member's, the answer
// handed over in memory. A request the evaluator would refuse as a
// malformed envelope is an error here.
func (s *Service) evaluateSelf(ctx context.Context, self *crypto.Credential, m message) error {
	return s.evaluate(ctx, crypto.Header{Sender: s.d.NodeID}, self, m)
}

// deliverLocal hands an answer of this node's own evaluation to the
// Pseudonyms call waiting for it.
func (s *Service) deliverLocal(m message) {
	s.mu.Lock()
	w := s.pending[m.Request]
	s.mu.Unlock()
	if w != nil {
		select {
		case w.answers <- m:
		default:
		}
	}
}

// requestRefusal is the reason this node may not evaluate m for sender
// whatever the counts, or "".
func (s *Service) requestRefusal(sender *crypto.Credential, m message) string {
	p := s.d.Registry.Policy()
	switch {
	case p == nil || p.Linkage == nil || p.Linkage.Node != s.d.NodeID:
		return RefuseNotEvaluator
	case !evaluatorRole(s.d.Role) || !requesterRole(sender.Role):
		return RefuseRole
	case !policy.Purpose(m.Purpose).Valid():
		return RefusePurpose
	case !policy.ValidEpoch(m.Epoch):
		return RefuseEpoch
	case m.KeyID != KeyID(p.Linkage.Suite, p.Linkage.Key):
		return RefuseKey
	}
	return ""
}

// limitRefusal is the limit answering m's k elements, and the rest of
// its request, would pass, or "".
func (s *Service) limitRefusal(u usage, m message, k int) string {
	switch {
	case m.Total > s.d.Limits.PerRequest || u.request+int64(k) > int64(m.Total):
		return RefusePerRequest
	case u.epoch-u.request+int64(m.Total) > s.d.Limits.PerEpoch:
		// The whole request is counted at its first chunk: one that
		// would pass the limit is refused before any of it is evaluated.
		return RefusePerEpoch
	}
	return ""
}

// refuseRequest answers m with a refusal, counted and in evidence.
func (s *Service) refuseRequest(ctx context.Context, sender *crypto.Credential, m message, reason string) error {
	to := sender.CurrentKEMKey()
	ref := message{V: 1, Type: msgRefusal, Request: m.Request, Chunk: m.Chunk, Chunks: m.Chunks,
		Purpose: m.Purpose, Epoch: m.Epoch, KeyID: m.KeyID, Reason: reason}
	body, err := json.Marshal(ref)
	if err != nil {
		return err
	}
	k := len(m.Elements) / ElementSize
	local := sender.NodeID == s.d.NodeID
	purpose, epoch := m.Purpose, m.Epoch
	if !policy.Purpose(purpose).Valid() || !policy.ValidEpoch(epoch) {
		purpose, epoch = "", "" // not the space's: not recorded
	}
	if err := s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		if purpose != "" {
			if _, err := s.d.DB.Exec(ctx, tx, qAddRefused, sender.NodeID, purpose, epoch, s.d.Now().UnixMilli()); err != nil {
				return err
			}
		}
		if err := s.d.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: sender.NodeID, Purpose: purpose,
			Rule: epochRule(epoch), Reason: "linkage:" + reason, Count: k}); err != nil {
			return err
		}
		if to == nil || local {
			return nil
		}
		_, err := s.d.Enqueue(ctx, tx, crypto.Header{Recipient: sender.NodeID, Count: 1, Kind: crypto.KindLinkage}, to,
			s.d.Layout.ControlSubject(sender.NodeID, s.d.NodeID), body, 0)
		return err
	}); err != nil {
		return err
	}
	s.m.Refused.WithLabelValues(reason).Inc()
	if local {
		s.deliverLocal(ref)
		return nil
	}
	s.d.WakeRelay()
	return nil
}

// key is the private key with id, loaded from the data directory on first
// use; it must be the key the space policy names.
func (s *Service) key(id string) (*evalKey, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if k := s.keys[id]; k != nil {
		return k, nil
	}
	p := s.d.Registry.Policy()
	if p == nil || p.Linkage == nil || KeyID(p.Linkage.Suite, p.Linkage.Key) != id {
		return nil, errNoKey
	}
	priv, err := loadKey(s.d.DataDir, p.Linkage)
	if err != nil {
		return nil, err
	}
	k, err := newEvalKey(priv)
	if err != nil {
		return nil, err
	}
	s.keys[id] = k
	return k, nil
}

// evaluateChunk evaluates the elements of m under key and m's info, each
// part with its own proof, the parts in parallel.
func evaluateChunk(key *evalKey, m message) (message, error) {
	tw, err := key.tweak(Info(m.Purpose, m.Epoch))
	if err != nil {
		return message{}, err
	}
	k := len(m.Elements) / ElementSize
	parts := (k + m.Part - 1) / m.Part
	out := make([]byte, len(m.Elements))
	proofs := make([][]byte, parts)
	if err := forParts(parts, func(p int) error {
		lo, hi := p*m.Part*ElementSize, min(k, (p+1)*m.Part)*ElementSize
		var err error
		proofs[p], err = tw.evaluate(m.Elements[lo:hi], out[lo:hi])
		return err
	}); err != nil {
		return message{}, err
	}
	return message{V: 1, Type: msgAnswer, Request: m.Request, Chunk: m.Chunk, Chunks: m.Chunks, Total: m.Total,
		Purpose: m.Purpose, Epoch: m.Epoch, KeyID: m.KeyID, Part: m.Part, Elements: out, Proofs: proofs}, nil
}
