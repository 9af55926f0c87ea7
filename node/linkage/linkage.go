// Package linkage owns a node's pseudonymous linkage (LINKAGE.md): turning
// the resident identity numbers of the students it holds into per-purpose,
// per-epoch pseudonyms through the space's linkage evaluator, with RFC 9497
// POPRF (verifiable, public input = purpose and epoch; keys from circl's
// oprf, batches computed by poprf.go and held to circl's by the tests); and, on
// the evaluator the space policy names, answering other members'
// evaluation requests under rate limits. Its tables are linkage_usage (at
// the evaluator: evaluations per requesting member, purpose and epoch) and
// linkage_chunks (at the evaluator: the request chunks answered, so that a
// redelivered chunk is answered once and counted once). Both hold counts,
// member ids, purposes and epochs only.
//
// It must never send, store, log or count an identifier or a pseudonym:
// what leaves the node is blinded elements, what it keeps is counts, and
// pseudonyms live only in the memory of the caller of Pseudonyms. It must
// never accept an evaluation whose proof does not verify under the key
// the space's signed policy names, and the evaluator must never evaluate
// for the center or past a member's limits.
package linkage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/metrics"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// Limits are the evaluator's rate limits.
type Limits struct {
	// PerEpoch is the most evaluations one member may have for one
	// (purpose, epoch).
	PerEpoch int64 `yaml:"max_per_epoch"`
	// PerRequest is the most evaluations one request may ask for.
	PerRequest int `yaml:"max_per_request"`
}

// DefaultLimits: two million evaluations per member, purpose and epoch
// (several times the largest university's students and alumni), and half
// a million per request.
var DefaultLimits = Limits{PerEpoch: 2_000_000, PerRequest: 500_000}

// Validate says which limit is wrong.
func (l Limits) Validate() error {
	switch {
	case l.PerEpoch < 1:
		return errors.New("linkage.max_per_epoch: must be at least 1")
	case l.PerRequest < 1:
		return errors.New("linkage.max_per_request: must be at least 1")
	}
	return nil
}

// Deps is what a Service is built from.
type Deps struct {
	NodeID  string
	Role    crypto.Role
	DataDir string // where the evaluator's keys are kept
	DB      *store.DB
	// Evidence takes an entry for every batch evaluated or asked for, and
	// every refusal.
	Evidence *evidence.Log
	Registry *registry.Registry
	Layout   bus.Layout
	// Enqueue seals plaintext to `to` under h and writes it to the outbox
	// inside tx (outbox.Outbox.Enqueue); WakeRelay publishes it.
	Enqueue   func(ctx context.Context, tx *sql.Tx, h crypto.Header, to *crypto.KEMPublicKey, subject string, plaintext []byte, records int) (string, error)
	WakeRelay func()
	// ScanRecords calls fn with the body of every record of a type held.
	ScanRecords func(ctx context.Context, recordType string, fn func(subject string, body []byte) error) error
	// MaxPayload is the largest NATS message: requests are chunked well
	// under it.
	MaxPayload int64
	Limits     Limits
	Metrics    *metrics.Metrics
	Log        *slog.Logger
	Now        func() time.Time
	// Options are settings tests make (export_test.go); the zero value is
	// production's.
	Options Options
}

// Options are test seams: they hold only unexported fields, so only this
// package's tests can set them.
type Options struct {
	// opened sees the plaintext of every linkage message this node opens.
	opened func(plain []byte)
	// answer may change an answer this evaluator is about to send for req:
	// the tests of a dishonest evaluator.
	answer func(req, ans *message)
	// anyRole sends requests whatever this node's role: the tests of the
	// evaluator's own check.
	anyRole bool
}

// Service is one node's linkage: the requesting side of every member, and
// the evaluating side of the one the space policy names.
type Service struct {
	d Deps
	m metrics.Linkage

	mu      sync.Mutex
	pending map[string]*waiting // by request id, while Pseudonyms waits

	keyMu sync.Mutex
	keys  map[string]*evalKey // by key id, loaded on first use

	cache pseudonymCache
}

// waiting is a request Pseudonyms waits on: the purpose and epoch its
// answers must repeat, and where they go.
type waiting struct {
	purpose, epoch string
	answers        chan message
	// refused takes the reason an answer was refused for, when it ends
	// the request (buffered: the first is enough).
	refused chan string
}

// New is the linkage service of d.NodeID.
func New(d Deps) *Service {
	if d.Limits == (Limits{}) {
		d.Limits = DefaultLimits
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{d: d, m: d.Metrics.Linkage, pending: map[string]*waiting{}, keys: map[string]*evalKey{}}
}

// Wire messages: one JSON object in each linkage envelope (kind 8).
const (
	msgRequest = "request"
	msgAnswer  = "answer"
	msgRefusal = "refusal"
)

// message is the plaintext of a linkage envelope (LINKAGE.md, Messages).
type message struct {
	V       int    `json:"v"`
	Type    string `json:"type"`
	Request string `json:"request"` // 16 random bytes in hex, the requester's
	Chunk   int    `json:"chunk"`
	Chunks  int    `json:"chunks"`
	Total   int    `json:"total"` // elements in the whole request
	Purpose string `json:"purpose"`
	Epoch   string `json:"epoch"`
	KeyID   string `json:"key_id"`
	// Part is how many consecutive elements each proof covers; the last
	// part of a chunk may be shorter.
	Part int `json:"part"`
	// Elements are the chunk's blinded (request) or evaluated (answer)
	// elements, each ElementSize bytes, concatenated.
	Elements []byte `json:"elements,omitempty"`
	// Proofs are the DLEQ proofs of an answer, one per part.
	Proofs [][]byte `json:"proofs,omitempty"`
	Reason string   `json:"reason,omitempty"` // a refusal's reason code
}

// ElementSize is the size of a serialised ristretto255 element.
const ElementSize = 32

// Reasons a linkage message or evaluation is refused: the label values of
// eduspace_linkage_refused_total and the reasons of the evidence entries.
const (
	RefusePerEpoch      = "epoch_limit"     // the member's evaluations for the purpose and epoch would pass the limit
	RefusePerRequest    = "request_limit"   // the request asks for more than one request may
	RefusePurpose       = "purpose"         // not a purpose of the space
	RefuseEpoch         = "epoch"           // not a valid epoch
	RefuseKey           = "key"             // the request names a key the policy does not, or the evaluator has no such key
	RefuseNotEvaluator  = "not_evaluator"   // a request to a node the space policy does not name
	RefuseRole          = "role"            // the requester or the evaluator has a role that may not take part
	RefuseMalformed     = "malformed"       // a message that does not parse or whose elements are not group elements
	RefuseProof         = "proof"           // an answer whose proof does not verify under the policy's key
	RefuseUnexpected    = "unexpected"      // an answer to no request waiting, from a node that is not the evaluator, or past twice its chunks
	RefuseMismatch      = "mismatch"        // an answer whose purpose or epoch is not its request's
	RefuseEvaluatorDown = "evaluator_error" // the evaluator failed to evaluate
)

// Reasons is the closed set of refusal reasons.
var Reasons = []string{RefusePerEpoch, RefusePerRequest, RefusePurpose, RefuseEpoch, RefuseKey, RefuseNotEvaluator,
	RefuseRole, RefuseMalformed, RefuseProof, RefuseUnexpected, RefuseMismatch, RefuseEvaluatorDown}

// RefusedError is Pseudonyms' error when the evaluator refused the
// request, or this node refused the evaluator's answer.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string {
	switch e.Reason {
	case RefusePerEpoch:
		return "linkage refused by the evaluator: this member's evaluations for the purpose and epoch would pass the evaluator's limit; wait for the next epoch or ask the evaluator's operator"
	case RefusePerRequest:
		return "linkage refused by the evaluator: the request is larger than one request may be; ask the evaluator's operator to raise linkage.max_per_request"
	case RefuseProof:
		return "linkage refused: the evaluator's answer does not verify under the key the space policy names; nothing was kept (evidence entry written)"
	case RefuseRole:
		return "linkage refused: the requester or the evaluator has a role that may not take part (the center never requests or evaluates)"
	case RefuseMismatch:
		return "linkage refused: the evaluator's answer names another purpose or epoch than the request; nothing was kept (evidence entry written)"
	case RefuseKey:
		return "linkage refused: the evaluator holds no key matching the space policy's; its operator must install it or the authority publish the right one"
	}
	return "linkage refused: " + e.Reason
}

// evidenceKind is the evidence entry kind of linkage batches.
const evidenceKind = "linkage"

// evaluator is the space's linkage evaluator, checked: named by the
// policy, with a credential that is not a center's or an auditor's.
func (s *Service) evaluator(ctx context.Context) (*crypto.LinkageEvaluator, *crypto.Credential, error) {
	p := s.d.Registry.Policy()
	if p == nil || p.Linkage == nil {
		return nil, nil, errors.New("the space policy names no linkage evaluator: the authority names one with `eduspace authority space-policy --linkage-evaluator NODE --linkage-key FILE`")
	}
	ev := p.Linkage
	cred, err := s.d.Registry.Lookup(ctx, ev.Node)
	if err != nil {
		return nil, nil, fmt.Errorf("linkage evaluator %s: %w", ev.Node, err)
	}
	if !evaluatorRole(cred.Role) {
		return nil, nil, &RefusedError{Reason: RefuseRole}
	}
	return ev, cred, nil
}

// evaluatorRole: the evaluator is a university-role member, never the
// center (which asks the joined queries), an auditor (which reads no
// envelope) or an AI service.
func evaluatorRole(r crypto.Role) bool { return r == crypto.RoleUniversity }

// requesterRole: members that hold students ask; the center and auditors
// never do (the center could otherwise test guessed identifiers).
func requesterRole(r crypto.Role) bool {
	return r == crypto.RoleUniversity || r == crypto.RoleAIService
}

// Handle handles the plaintext of a linkage envelope from the control
// subject, its header checked and opened, from sender. A permanent refusal
// is an envelope.Refusal; other errors are transient.
func (s *Service) Handle(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	if s.d.Options.opened != nil {
		s.d.Options.opened(plain)
	}
	var m message
	if err := json.Unmarshal(plain, &m); err != nil || m.V != 1 || len(m.Request) != 32 {
		s.m.Refused.WithLabelValues(RefuseMalformed).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("not a linkage message"))
	}
	switch m.Type {
	case msgRequest:
		return s.evaluate(ctx, h, sender, m)
	case msgAnswer, msgRefusal:
		return s.answer(ctx, h, m)
	}
	s.m.Refused.WithLabelValues(RefuseMalformed).Inc()
	return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("unknown linkage message type %q", m.Type))
}

// answer hands an answer to the Pseudonyms call waiting for it.
func (s *Service) answer(ctx context.Context, h crypto.Header, m message) error {
	p := s.d.Registry.Policy()
	s.mu.Lock()
	w := s.pending[m.Request]
	s.mu.Unlock()
	if w == nil || p == nil || p.Linkage == nil || h.Sender != p.Linkage.Node {
		// A late answer to a request given up, one to a request this node
		// never made, or one from a node that is not the evaluator: what it
		// claims to answer is unknown, so none of it is recorded.
		return s.refuse(ctx, h.Sender, "", "", RefuseUnexpected, 0)
	}
	// From here on the evidence names the request's purpose and epoch,
	// never the answer's.
	if m.Purpose != w.purpose || m.Epoch != w.epoch {
		// An answer relabelled: not for the request it names. It ends
		// the request, once its refusal is recorded.
		err := s.refuse(ctx, h.Sender, w.purpose, w.epoch, RefuseMismatch, 0)
		select {
		case w.refused <- RefuseMismatch:
		default:
		}
		return err
	}
	select {
	case w.answers <- m:
	default: // more answers than chunks: the waiting side has them all
		return s.refuse(ctx, h.Sender, w.purpose, w.epoch, RefuseUnexpected, 0)
	}
	return nil
}

// refuse counts a refusal and writes its evidence entry.
func (s *Service) refuse(ctx context.Context, peer, purpose, epoch, reason string, count int) error {
	s.m.Refused.WithLabelValues(reason).Inc()
	return s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		return s.d.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRefuse, Peer: peer, Purpose: purpose,
			Rule: epochRule(epoch), Reason: "linkage:" + reason, Count: count})
	})
}

func epochRule(epoch string) string {
	if epoch == "" {
		return ""
	}
	return "epoch:" + epoch
}

// newRequestID is 16 random bytes in hex.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// workers is how many goroutines blind, evaluate or finalize in parallel.
func workers() int { return max(1, runtime.GOMAXPROCS(0)) }

// forParts runs fn for each part 0..n-1, at most workers() at a time, and
// returns the errors of all parts joined (nil when none failed).
func forParts(n int, fn func(p int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, workers())
	var wg sync.WaitGroup
	for p := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[p] = fn(p)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// validPurposeEpoch checks a purpose and an epoch.
func validPurposeEpoch(purpose policy.Purpose, epoch string) error {
	if !purpose.Valid() {
		return fmt.Errorf("purpose %q is not one of the space's purposes (policy.Purpose)", purpose)
	}
	if !policy.ValidEpoch(epoch) {
		return fmt.Errorf("epoch %q: want a year such as 2026, or a name of at most 32 of a-z, 0-9, '.', '_', '-' starting with a letter, such as spring-2026", epoch)
	}
	return nil
}
