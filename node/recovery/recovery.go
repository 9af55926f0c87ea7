// Package recovery brings a node restored from an older copy of its
// database back in step with the space, and answers for this node when a
// peer recovers.
//
// A restored node fails closed (package checkpoint finds the space's
// newest checkpoint of it ahead of its log) and its evidence log is
// frozen. Recover then asks every peer, in a signed recovery request
// (envelope kind 7), what it holds from this node; each answers with
//   - the highest sequence number of records it stored from this node, so
//     that sequences go on past it and nothing new is refused as replayed;
//   - which of the envelopes this node awaits an answer for it stores, so
//     that they are marked delivered, the others published again;
//   - how many envelopes, and records, it stores that this node's copy does
//     not know it sent (lost here: reported); it keeps keyed hashes of
//     the records it holds from this node and drops any sent it again;
//   - the erasure requests of this node it carried out since the copy, so
//     that the consents withdrawn since are withdrawn again;
//
// and publishes again what it sent this node since the copy (records,
// erasure requests, agreement messages), which this node stores, erases or
// applies as when they first came. Recover then reopens the evidence log
// after the space's checkpoint with an entry that declares the entries
// lost, withdraws the consents again and ends the failing closed; its
// Report counts everything it could not recover.
//
// It owns no table: what it changes, it changes through the packages that
// own it (outbox, receive, consent, checkpoint, evidence). It must never
// end the failing closed before the answers are applied and the log
// reopened, never let a peer's answer do more than confirm deliveries,
// raise sequence numbers and withdraw consents this node holds, and never
// put a subject's identifier in a report, log line or error.
package recovery

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/outbox"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy"
)

// Deps is what a Service is built from.
type Deps struct {
	NodeID   string
	DB       *store.DB
	Evidence *evidence.Log
	Keeper   *checkpoint.Keeper
	Outbox   *outbox.Outbox
	Receiver *receive.Receiver
	Registry *registry.Registry
	Layout   bus.Layout
	// Consent reports whether this node holds consent id and whether it is
	// withdrawn; Withdraw withdraws it (consent.Ledger).
	Consent  func(ctx context.Context, id string) (held, withdrawn bool, err error)
	Withdraw func(ctx context.Context, id string) error
	// AgreementsWith lists the ids of the agreements in force between this
	// node and peer.
	AgreementsWith func(ctx context.Context, peer string) ([]string, error)
	// ClockSkew widens the window of what peers publish again.
	ClockSkew time.Duration
	Now       func() time.Time
	Log       *slog.Logger
}

// Service runs recoveries and answers peers'.
type Service struct {
	d Deps

	mu      sync.Mutex
	waiting map[string]chan<- Answer // by request id: the answers a Recover awaits
	running bool
}

// New is the Service of d.NodeID.
func New(d Deps) *Service {
	return &Service{d: d, waiting: map[string]chan<- Answer{}}
}

// message is a recovery message's plaintext: one of the two.
type message struct {
	Request *Request `json:"request,omitempty"`
	Answer  *Answer  `json:"answer,omitempty"`
}

// Request is a restored node's question to one peer.
type Request struct {
	ID   string `json:"id"`
	Node string `json:"node"` // the restored node
	Peer string `json:"peer"` // the peer asked
	// Lo..Hi are the sequence numbers of the envelopes of records the node
	// awaits an answer for from the peer (0, 0: none); Known the highest it
	// knows it gave an envelope the peer did not refuse.
	Lo    int64 `json:"lo"`
	Hi    int64 `json:"hi"`
	Known int64 `json:"known"`
	// SeqIn is the highest sequence number of records envelopes the node
	// holds from the peer.
	SeqIn int64 `json:"seq_in"`
	// Since is when the node's copy was last written to (its newest
	// evidence entry).
	Since time.Time `json:"since"`
}

// Answer is a peer's answer to a Request.
type Answer struct {
	Request string `json:"request"`
	Node    string `json:"node"`
	Peer    string `json:"peer"`
	receive.SenderState
	// Republished is what the peer published again to the node.
	Republished outbox.Republished `json:"republished"`
	// Agreements are the ids of the agreements in force between the two
	// that the peer holds.
	Agreements []string `json:"agreements,omitempty"`
}

// Handle takes a recovery message, as the control consumer delivers it
// (receive.Deps.Recovery): a peer's request, which this node answers, or
// an answer to a recovery of this node that is waiting for it.
func (s *Service) Handle(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var m message
	if err := json.Unmarshal(plain, &m); err != nil || (m.Request == nil) == (m.Answer == nil) {
		return envelope.Refuse(envelope.RefuseContent, errors.New("not a recovery request or answer"))
	}
	if m.Request != nil {
		return s.answer(ctx, h, sender, *m.Request)
	}
	a := *m.Answer
	if a.Peer != h.Sender || a.Node != s.d.NodeID {
		return envelope.Refuse(envelope.RefuseContent, errors.New("recovery answer does not match its envelope"))
	}
	s.mu.Lock()
	ch := s.waiting[a.Request]
	s.mu.Unlock()
	if ch == nil {
		s.d.Log.Info("recovery answer to no recovery in progress; ignored", "peer", a.Peer, "request", a.Request)
		return nil
	}
	select {
	case ch <- a:
	default: // answered twice (a redelivery): the first counts
	}
	return nil
}

// answer answers a peer's recovery request: what this node holds from
// it, and publishes again what this node sent it since its copy.
func (s *Service) answer(ctx context.Context, h crypto.Header, sender *crypto.Credential, req Request) error {
	if req.Node != h.Sender || req.Peer != s.d.NodeID || req.ID == "" || req.Lo < 0 || req.Hi < req.Lo || req.Known < 0 || req.SeqIn < 0 {
		return envelope.Refuse(envelope.RefuseContent, errors.New("recovery request does not match its envelope"))
	}
	// What it sent after its copy, it may send again (its copy does not
	// know it did): those records are not stored twice.
	if _, err := s.d.Receiver.RememberSent(ctx, req.Node); err != nil {
		return err
	}
	st, err := s.d.Receiver.SenderState(ctx, req.Node, req.Lo, req.Hi, req.Known, req.Since.Add(-s.d.ClockSkew))
	if err != nil {
		return err
	}
	tag := "recovery-" + req.ID
	rep, err := s.d.Outbox.Republish(ctx, req.Node, req.SeqIn, req.Since.Add(-s.d.ClockSkew), tag)
	if err != nil {
		return err
	}
	agreements, err := s.d.AgreementsWith(ctx, req.Node)
	if err != nil {
		return err
	}
	body, err := json.Marshal(message{Answer: &Answer{Request: req.ID, Node: req.Node, Peer: s.d.NodeID, SenderState: st,
		Republished: rep, Agreements: agreements}})
	if err != nil {
		return err
	}
	to := sender.CurrentKEMKey()
	if to == nil {
		return fmt.Errorf("recovery answer: %s has no KEM key", req.Node)
	}
	err = s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		if err := s.d.Evidence.Append(ctx, tx, evidence.Entry{Kind: evidence.KindRecover, Peer: req.Node, Reason: "answered",
			Count: rep.Envelopes, Detail: map[string]int{"beyond": int(st.Beyond), "expired": rep.Expired, "erasures": len(st.Erasures)}}); err != nil {
			return err
		}
		_, err := s.d.Outbox.Enqueue(ctx, tx, crypto.Header{Recipient: req.Node, Count: 1, Kind: crypto.KindRecovery}, to,
			s.d.Layout.ControlSubject(req.Node, s.d.NodeID), body, 0)
		return err
	})
	if err != nil {
		return err
	}
	s.d.Outbox.Wake()
	s.d.Log.Info("answered a restored peer's recovery request", "peer", req.Node, "republished", rep.Envelopes, "expired", rep.Expired)
	return nil
}

// Options are a recovery's settings.
type Options struct {
	// Timeout bounds the wait for the peers' answers.
	Timeout time.Duration
	// AllowMissing recovers with the answers that came when some peer did
	// not answer in time; what that peer holds is then not known.
	AllowMissing bool
	// Peers are asked besides those the node's database names: peers this
	// node exchanged with only after the copy was taken.
	Peers []string
	// Progress, when set, is told of each step.
	Progress func(msg string)
}

// Report is what a recovery did and could not do.
type Report struct {
	// Reason is why the node was failing closed.
	Reason string `json:"reason"`
	// EvidenceLost are the entries of the evidence log lost with the copy,
	// declared by the recovery entry after them; zero when the space
	// attests none (a copy newer than the newest checkpoint, found out by a
	// peer's refusal of reused sequence numbers).
	EvidenceLost evidence.Gap `json:"evidence_lost"`
	Peers        []PeerReport `json:"peers"`
	// Missing are the peers that did not answer in time.
	Missing []string `json:"missing,omitempty"`
	// Consents withdrawn again (their withdrawal was lost with the copy
	// and learnt back from a peer that carried out its erasure).
	ConsentsWithdrawn int `json:"consents_withdrawn"`
	// Unrecoverable counts what could not be recovered.
	Unrecoverable Unrecoverable `json:"unrecoverable"`
}

// PeerReport is one peer's part of a recovery.
type PeerReport struct {
	Peer string `json:"peer"`
	// Last is the highest sequence number of records it stored from this
	// node: sequences go on after it.
	Last int64 `json:"last"`
	outbox.Settled
	// LostEnvelopes and LostRecords it stores from this node that the copy
	// does not know were sent.
	LostEnvelopes int64 `json:"lost_envelopes"`
	LostRecords   int64 `json:"lost_records"`
	// Republished is what it published again to this node.
	Republished outbox.Republished `json:"republished"`
	// Erasures are the erasure requests of this node it reported carried
	// out since the copy.
	Erasures int `json:"erasures"`
	// MissingAgreements are agreements in force that it holds with this
	// node and the copy does not: install them again (deploy/README.md);
	// what it sends under them meanwhile is refused, and shared again by it
	// once they are.
	MissingAgreements []string `json:"missing_agreements,omitempty"`
}

// Unrecoverable counts what a recovery could not bring back.
type Unrecoverable struct {
	// EvidenceEntries lost with the copy (their checkpoints stand on the
	// space).
	EvidenceEntries int64 `json:"evidence_entries"`
	// SentEnvelopes and SentRecords: shares made after the copy, held by
	// peers, of which this node keeps no record (which records went, under
	// which decision). Shared again, those records are dropped by the peer,
	// not stored twice.
	SentEnvelopes int64 `json:"sent_envelopes"`
	SentRecords   int64 `json:"sent_records"`
	// ExpiredEnvelopes this node received after the copy, which their
	// senders could not publish again before their expiry.
	ExpiredEnvelopes int `json:"expired_envelopes"`
	// UnknownConsents: erasures carried out for consents the copy does not
	// hold (granted after it): nothing to withdraw.
	UnknownConsents int `json:"unknown_consents"`
	// SilentPeers did not answer; what they hold is not known.
	SilentPeers int `json:"silent_peers"`
	// MissingAgreements: agreements made after the copy (PeerReport).
	MissingAgreements int `json:"missing_agreements"`
}

// ErrNotRestored is Recover's error for a node that is not restored from
// an older copy.
var ErrNotRestored = errors.New("this node's database is not older than the space's record of it: nothing to recover")

// ErrMissing is Recover's error when some peer did not answer and missing
// answers were not allowed; nothing was changed.
var ErrMissing = errors.New("not every peer answered")

// Recover brings this node, restored from an older copy, back in step
// with the space (see the package comment). Nothing changes until every
// peer answered (or, with AllowMissing, the wait ended); then the answers
// are applied in one transaction with the entry that reopens the log.
func (s *Service) Recover(ctx context.Context, opt Options) (Report, error) {
	progress := func(format string, args ...any) {
		if opt.Progress != nil {
			opt.Progress(fmt.Sprintf(format, args...))
		}
	}
	var rep Report
	rep.Reason = s.d.Keeper.Restored()
	after, ok := s.d.Keeper.SpaceCheckpoint()
	if rep.Reason == "" || !ok {
		return rep, ErrNotRestored
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return rep, errors.New("a recovery is running already")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	peers, err := s.peers(ctx, opt.Peers)
	if err != nil {
		return rep, err
	}
	since, err := s.copyTime(ctx)
	if err != nil {
		return rep, err
	}
	answers := make(chan Answer, len(peers))
	asked := map[string]string{} // request id → peer
	defer func() {
		s.mu.Lock()
		for id := range asked {
			delete(s.waiting, id)
		}
		s.mu.Unlock()
	}()
	for _, p := range peers {
		id, err := s.ask(ctx, p, since, answers)
		if err != nil {
			return rep, fmt.Errorf("ask %s: %w", p, err)
		}
		asked[id] = p
		progress("asked %s", p)
	}

	got := map[string]Answer{}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(got) < len(peers) {
		select {
		case a := <-answers:
			if asked[a.Request] != a.Peer {
				continue
			}
			got[a.Peer] = a
			progress("%s answered (%d of %d)", a.Peer, len(got), len(peers))
		case <-timer.C:
			for _, p := range peers {
				if _, ok := got[p]; !ok {
					rep.Missing = append(rep.Missing, p)
				}
			}
			if !opt.AllowMissing {
				return rep, fmt.Errorf("%w within %s: %v; nothing was changed. Start them, or recover without them (--allow-missing)",
					ErrMissing, timeout, rep.Missing)
			}
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		if rep.Missing != nil {
			break
		}
	}
	rep.Unrecoverable.SilentPeers = len(rep.Missing)

	// Apply: reopen the log after the space's checkpoint, settle each
	// peer's part, in one transaction.
	order := slices.Sorted(func(yield func(string) bool) {
		for p := range got {
			if !yield(p) {
				return
			}
		}
	})
	err = s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		rep.Peers = rep.Peers[:0]
		count, _, err := s.d.Evidence.Head(ctx)
		if err != nil {
			return err
		}
		var lostEnv, lostRec int64
		for _, p := range order {
			lostEnv += got[p].Beyond
			lostRec += got[p].BeyondRecords
		}
		if err := s.d.Evidence.AppendRecovery(ctx, tx, after, evidence.Entry{Reason: "restored", Count: len(got),
			Detail: map[string]int{"peers_silent": len(rep.Missing), "sent_envelopes_lost": int(lostEnv), "sent_records_lost": int(lostRec)}}); err != nil {
			return err
		}
		if after.Count > count {
			rep.EvidenceLost = evidence.Gap{From: count + 1, To: after.Count}
		}
		for _, p := range order {
			a := got[p]
			settled, err := s.d.Outbox.Recovered(ctx, tx, p, a.Last, a.Held)
			if err != nil {
				return err
			}
			own, err := s.d.AgreementsWith(ctx, p)
			if err != nil {
				return err
			}
			var missing []string
			for _, id := range a.Agreements {
				if !slices.Contains(own, id) {
					missing = append(missing, id)
				}
			}
			rep.Peers = append(rep.Peers, PeerReport{Peer: p, Last: a.Last, Settled: settled, LostEnvelopes: a.Beyond,
				LostRecords: a.BeyondRecords, Republished: a.Republished, Erasures: len(a.Erasures), MissingAgreements: missing})
		}
		return nil
	})
	if err != nil {
		s.d.Evidence.Freeze(rep.Reason)
		return rep, fmt.Errorf("apply the peers' answers: %w", err)
	}
	if rep.EvidenceLost.To > 0 {
		progress("evidence log reopened after entry %d (entries %d to %d lost with the copy)", after.Count, rep.EvidenceLost.From, rep.EvidenceLost.To)
	} else {
		progress("evidence log reopened: no entry the space attests was lost")
	}

	// Withdrawals made after the copy, learnt back from the erasures the
	// peers carried out. Sending is still blocked: nothing leaves before.
	seen := map[string]bool{}
	for _, p := range order {
		for _, raw := range got[p].Erasures {
			var req policy.ErasureRequest
			if err := json.Unmarshal(raw, &req); err != nil || req.Provider != s.d.NodeID || req.Recipient != p {
				s.d.Log.Warn("an erasure request in a recovery answer is not one of this node's to that peer; ignored", "peer", p)
				continue
			}
			if req.Consent == "" || seen[req.Consent] {
				continue
			}
			seen[req.Consent] = true
			held, withdrawn, err := s.d.Consent(ctx, req.Consent)
			if err != nil {
				return rep, fmt.Errorf("consents withdrawn since the copy: %w", err)
			}
			switch {
			case !held:
				rep.Unrecoverable.UnknownConsents++
			case !withdrawn:
				if err := s.d.Withdraw(ctx, req.Consent); err != nil {
					return rep, fmt.Errorf("withdraw again a consent withdrawn since the copy: %w", err)
				}
				rep.ConsentsWithdrawn++
			}
		}
	}
	if rep.ConsentsWithdrawn > 0 {
		progress("%d consents withdrawn again", rep.ConsentsWithdrawn)
	}
	if err := s.d.Keeper.Recovered(ctx); err != nil {
		return rep, err
	}
	s.d.Outbox.Wake()
	if rep.EvidenceLost.To > 0 {
		rep.Unrecoverable.EvidenceEntries = rep.EvidenceLost.To - rep.EvidenceLost.From + 1
	}
	for _, p := range rep.Peers {
		rep.Unrecoverable.SentEnvelopes += p.LostEnvelopes
		rep.Unrecoverable.SentRecords += p.LostRecords
		rep.Unrecoverable.ExpiredEnvelopes += p.Republished.Expired
		rep.Unrecoverable.MissingAgreements += len(p.MissingAgreements)
	}
	s.d.Log.Info("recovered from a restore", "peers", len(rep.Peers), "silent", len(rep.Missing),
		"evidence_lost", rep.Unrecoverable.EvidenceEntries, "sent_envelopes_lost", rep.Unrecoverable.SentEnvelopes,
		"consents_withdrawn", rep.ConsentsWithdrawn)
	return rep, nil
}

// ask sends peer a recovery request; its answer comes on answers.
func (s *Service) ask(ctx context.Context, peer string, since time.Time, answers chan<- Answer) (string, error) {
	aw, err := s.d.Outbox.AwaitingFrom(ctx, peer)
	if err != nil {
		return "", err
	}
	seqIn, err := s.d.Receiver.SeqIn(ctx, peer)
	if err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	req := Request{ID: hex.EncodeToString(b[:]), Node: s.d.NodeID, Peer: peer, Lo: aw.Lo, Hi: aw.Hi, Known: aw.Known,
		SeqIn: seqIn, Since: since}
	body, err := json.Marshal(message{Request: &req})
	if err != nil {
		return "", err
	}
	cred, err := s.d.Registry.Lookup(ctx, peer)
	if err != nil {
		return "", err
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return "", fmt.Errorf("%s has no KEM key", peer)
	}
	s.mu.Lock()
	s.waiting[req.ID] = answers
	s.mu.Unlock()
	if _, err := s.d.Outbox.SendNow(ctx, crypto.Header{Recipient: peer, Count: 1, Kind: crypto.KindRecovery}, to,
		s.d.Layout.ControlSubject(peer, s.d.NodeID), body); err != nil {
		return "", err
	}
	return req.ID, nil
}

// peers are the nodes to ask: those this node's database names as ones it
// exchanged envelopes with, and extra.
func (s *Service) peers(ctx context.Context, extra []string) ([]string, error) {
	out, err := s.d.Outbox.Peers(ctx)
	if err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	in, err := s.d.Receiver.Peers(ctx)
	if err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	all := append(append(out, in...), extra...)
	slices.Sort(all)
	all = slices.Compact(all)
	return slices.DeleteFunc(all, func(p string) bool { return p == s.d.NodeID || !bus.ValidName(p) }), nil
}

// copyTime is when the restored copy was last written to: the time of its
// newest evidence entry (the zero time for an empty log).
func (s *Service) copyTime(ctx context.Context) (time.Time, error) {
	count, _, err := s.d.Evidence.Head(ctx)
	if err != nil || count == 0 {
		return time.Time{}, err
	}
	return s.d.Evidence.EntryTime(ctx, count)
}
