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
//   - which of the envelopes this node awaits an answer for it stores (by
//     envelope id), so that they are marked delivered, the others
//     published again;
//   - how many envelopes, and records, it stores that this node's copy does
//     not know it sent (lost here: reported); it keeps keyed hashes of
//     the records it holds from this node and drops any sent it again;
//   - the erasure requests of this node it carried out since the copy, so
//     that the consents withdrawn since are withdrawn again (only a consent
//     this node holds, that covers that peer, for a subject whose token at
//     that peer the request names, under an agreement with it);
//
// and publishes again what it sent this node since the copy (records,
// erasure requests, agreement messages), which this node stores, erases or
// applies as when they first came. Recover then reopens the evidence log
// after the space's checkpoint with an entry that declares the entries
// lost, withdraws the consents again and ends the failing closed; its
// Report counts everything it could not recover.
//
// It owns the table recovery_withdrawals: the consents to withdraw again,
// written with the entry that reopens the log, so that a node killed
// before it withdrew them does so at its next start (Resume), before it
// sends anything. What else it changes, it changes through the packages
// that own it (outbox, receive, consent, checkpoint, evidence). It must
// never end the failing closed before the answers are applied, the log
// reopened and the consents withdrawn again, never let a peer's answer do
// more than confirm deliveries it names by id, raise sequence numbers and
// withdraw consents this node holds, and never put a subject's identifier
// in a report, log line or error.
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
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/consent"
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
	// Relearn looks up the consent an erasure request to a recipient
	// names; Withdraw withdraws it (consent.Ledger).
	Relearn  func(ctx context.Context, id, recipient, token string) (consent.Relearnt, error)
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

	mu       sync.Mutex
	waiting  map[string]chan<- Answer // by request id: the answer a Recover awaits
	running  bool
	answered map[string]time.Time // when each peer's last request was answered
}

// New is the Service of d.NodeID.
func New(d Deps) *Service {
	return &Service{d: d, waiting: map[string]chan<- Answer{}, answered: map[string]time.Time{}}
}

// AwaitAgreementsFor is how long what a peer sends under an agreement the
// restored copy lost waits for the agreement to be installed again: an
// envelope's default lifetime. Then it is refused (no_agreement), and the
// peer shares its records again once the agreement is back.
const AwaitAgreementsFor = 24 * time.Hour

// answerEvery is how often a peer's recovery requests are answered at
// most: answering reads and hashes everything held from it and publishes
// again what was sent to it.
const answerEvery = 10 * time.Second

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
	// Awaiting are the envelopes of records the node awaits an answer for
	// from the peer (at most outbox.MaxAsk); Known the highest sequence
	// number it knows it gave one the peer did not refuse.
	Awaiting []string `json:"awaiting,omitempty"`
	Known    int64    `json:"known"`
	// SeqIn is the highest sequence number of records envelopes the node
	// holds from the peer.
	SeqIn int64 `json:"seq_in"`
	// Since is when the node's copy was last written to (its newest
	// evidence entry); the zero time (and SeqIn 0) when that is not known
	// (a restore found by a replay refusal).
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
	// The first answer to a request counts; a redelivery finds none waiting.
	s.mu.Lock()
	ch := s.waiting[a.Request]
	delete(s.waiting, a.Request)
	s.mu.Unlock()
	if ch == nil {
		s.d.Log.Info("recovery answer to no recovery in progress; ignored", "peer", a.Peer, "request", a.Request)
		return nil
	}
	ch <- a // buffered for one answer per peer asked
	return nil
}

// answer answers a peer's recovery request: what this node holds from
// it, and publishes again what this node sent it since its copy.
func (s *Service) answer(ctx context.Context, h crypto.Header, sender *crypto.Credential, req Request) error {
	if req.Node != h.Sender || req.Peer != s.d.NodeID || req.ID == "" || len(req.Awaiting) > outbox.MaxAsk || req.Known < 0 || req.SeqIn < 0 {
		return envelope.Refuse(envelope.RefuseContent, errors.New("recovery request does not match its envelope"))
	}
	// An answer needs an evidence entry: a node itself restored answers
	// once it has recovered (the request waits in JetStream).
	if err := s.d.Evidence.Frozen(); err != nil {
		return err
	}
	s.mu.Lock()
	quiet := s.d.Now().Sub(s.answered[req.Node]) < answerEvery
	s.mu.Unlock()
	if quiet {
		s.d.Log.Warn("a peer's recovery request came too soon after the last; not answered", "peer", req.Node, "every", answerEvery)
		return nil
	}
	// What it sent after its copy, it may send again (its copy does not
	// know it did): those records are not stored twice.
	if _, err := s.d.Receiver.RememberSent(ctx, req.Node); err != nil {
		return err
	}
	since := req.Since
	if !since.IsZero() {
		since = since.Add(-s.d.ClockSkew)
	}
	st, err := s.d.Receiver.SenderState(ctx, req.Node, req.Awaiting, req.Known, since)
	if err != nil {
		return err
	}
	tag := "recovery-" + req.ID
	rep, err := s.d.Outbox.Republish(ctx, req.Node, req.SeqIn, since, tag)
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
	// Counted once answered: a request that failed on the way is answered
	// at its redelivery.
	s.mu.Lock()
	s.answered[req.Node] = s.d.Now()
	s.mu.Unlock()
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
	// Missing are the peers that did not answer in time, or could not be
	// asked (no longer members, no key to seal to).
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
	// what it sends under them meanwhile waits for them (AwaitAgreementsFor).
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
	// ForeignErasures: erasure requests in an answer that this node could
	// not have made (another consent's subject, recipient or agreement):
	// ignored, and logged with the peer.
	ForeignErasures int `json:"foreign_erasures"`
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
// are applied in one transaction with the entry that reopens the log, and
// the consents learnt back are withdrawn again before the node sends.
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
	// A restore found by a replay refusal: the node ran on the copy since,
	// so it tells neither when the copy was taken nor what arrived before:
	// the peers publish again everything not yet expired.
	var since time.Time
	replay := s.d.Keeper.FoundByReplay()
	if !replay {
		if since, err = s.copyTime(ctx); err != nil {
			return rep, err
		}
	}
	answers := make(chan Answer, len(peers))
	asked := map[string]string{}     // request id → peer
	awaited := map[string][]string{} // peer → envelope ids asked about
	defer func() {
		s.mu.Lock()
		for id := range asked {
			delete(s.waiting, id)
		}
		s.mu.Unlock()
	}()
	var unreachable []string
	for _, p := range peers {
		id, aw, err := s.ask(ctx, p, since, replay, answers)
		var ue unreachableError
		if errors.As(err, &ue) {
			progress("cannot ask %s: %v", p, ue.err)
			unreachable = append(unreachable, p)
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("ask %s: %w", p, err)
		}
		asked[id], awaited[p] = p, aw
		progress("asked %s", p)
	}

	got := map[string]Answer{}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for waiting := true; waiting && len(got) < len(asked); {
		select {
		case a := <-answers:
			if asked[a.Request] != a.Peer {
				continue
			}
			got[a.Peer] = a
			progress("%s answered (%d of %d)", a.Peer, len(got), len(asked))
		case <-timer.C:
			waiting = false
		case <-ctx.Done():
			return rep, ctx.Err()
		}
	}
	rep.Missing = unreachable
	for _, p := range asked {
		if _, ok := got[p]; !ok {
			rep.Missing = append(rep.Missing, p)
		}
	}
	slices.Sort(rep.Missing)
	if len(rep.Missing) > 0 && !opt.AllowMissing {
		return rep, fmt.Errorf("%w within %s: %v; nothing was changed. Start them, or recover without them (--allow-missing)",
			ErrMissing, timeout, rep.Missing)
	}
	rep.Unrecoverable.SilentPeers = len(rep.Missing)

	// Apply: reopen the log after the space's checkpoint, settle each
	// peer's part and note the consents to withdraw again, in one
	// transaction.
	order := slices.Sorted(maps.Keys(got))
	err = s.d.DB.Write(ctx, func(tx *sql.Tx) error {
		rep.Peers = rep.Peers[:0]
		rep.Unrecoverable.UnknownConsents, rep.Unrecoverable.ForeignErasures = 0, 0
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
		rep.EvidenceLost = evidence.Gap{}
		if after.Count > count {
			rep.EvidenceLost = evidence.Gap{From: count + 1, To: after.Count}
		}
		for _, p := range order {
			a := got[p]
			settled, err := s.d.Outbox.Recovered(ctx, tx, p, a.Last, awaited[p], a.Held)
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
			if err := s.relearn(ctx, tx, p, own, a.Erasures, &rep.Unrecoverable); err != nil {
				return err
			}
			// What p sends under them waits for them to be installed again.
			if err := s.d.Receiver.AwaitAgreements(ctx, tx, p, missing, s.d.Now().Add(AwaitAgreementsFor)); err != nil {
				return err
			}
			rep.Peers = append(rep.Peers, PeerReport{Peer: p, Last: a.Last, Settled: settled, LostEnvelopes: a.Beyond,
				LostRecords: a.BeyondRecords, Republished: a.Republished, Erasures: len(a.Erasures), MissingAgreements: missing})
		}
		return s.d.Keeper.KeepRecovered(ctx, tx)
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

	// Sending is still blocked: the consents withdrawn after the copy are
	// withdrawn again first (and at the next start, if this stops here).
	if rep.ConsentsWithdrawn, err = s.Resume(ctx); err != nil {
		return rep, err
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

// relearn notes, inside tx, the consents peer's erasures show withdrawn
// after the copy: only a request this node could have made (to that peer,
// under an agreement with it, naming the subject's token there, for a
// consent that covers it) counts.
func (s *Service) relearn(ctx context.Context, tx *sql.Tx, peer string, agreements []string, erasures [][]byte, u *Unrecoverable) error {
	for _, raw := range erasures {
		var req policy.ErasureRequest
		if err := json.Unmarshal(raw, &req); err != nil || req.Provider != s.d.NodeID || req.Recipient != peer ||
			req.Consent == "" || !slices.Contains(agreements, req.Agreement) {
			u.ForeignErasures++
			s.d.Log.Warn("an erasure request in a recovery answer is not one this node made to that peer; ignored", "peer", peer)
			continue
		}
		c, err := s.d.Relearn(ctx, req.Consent, peer, req.Subject)
		if err != nil {
			return fmt.Errorf("consents withdrawn since the copy: %w", err)
		}
		switch {
		case !c.Held:
			u.UnknownConsents++
		case !c.Matches:
			u.ForeignErasures++
			s.d.Log.Warn("an erasure request in a recovery answer names a consent of another subject or recipient; ignored", "peer", peer)
		case !c.Withdrawn:
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO recovery_withdrawals(consent, peer) VALUES (?, ?)`, req.Consent, peer); err != nil {
				return fmt.Errorf("note a consent to withdraw again: %w", err)
			}
		}
	}
	return nil
}

// Resume withdraws again the consents a recovery learnt were withdrawn
// after the copy and has not yet withdrawn (table recovery_withdrawals),
// and returns how many. The node calls it at start, before it sends: a
// recovery killed after it reopened the log finishes here.
func (s *Service) Resume(ctx context.Context) (int, error) {
	ids, err := store.Strings(ctx, s.d.DB.R, `SELECT consent FROM recovery_withdrawals ORDER BY consent`)
	if err != nil {
		return 0, fmt.Errorf("read consents to withdraw again: %w", err)
	}
	n := 0
	for _, id := range ids {
		if err := s.d.Withdraw(ctx, id); err != nil && !errors.Is(err, consent.ErrWithdrawn) {
			return n, fmt.Errorf("withdraw again consent %s, withdrawn after the copy: %w", id, err)
		} else if err == nil {
			n++
		}
		if err := s.d.DB.Write(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM recovery_withdrawals WHERE consent = ?`, id)
			return err
		}); err != nil {
			return n, fmt.Errorf("withdrew again consent %s: %w", id, err)
		}
	}
	return n, nil
}

// unreachableError is a peer that cannot be asked: no longer a member, or
// without a key to seal to.
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }

// ask sends peer a recovery request; its answer comes on answers. It
// returns the request id and the envelopes asked about.
func (s *Service) ask(ctx context.Context, peer string, since time.Time, replay bool, answers chan<- Answer) (string, []string, error) {
	cred, err := s.d.Registry.Lookup(ctx, peer)
	if err != nil {
		return "", nil, unreachableError{err}
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return "", nil, unreachableError{errors.New("no KEM key")}
	}
	aw, err := s.d.Outbox.AwaitingFrom(ctx, peer)
	if err != nil {
		return "", nil, err
	}
	var seqIn int64
	if !replay {
		if seqIn, err = s.d.Receiver.SeqIn(ctx, peer); err != nil {
			return "", nil, err
		}
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	req := Request{ID: hex.EncodeToString(b[:]), Node: s.d.NodeID, Peer: peer, Awaiting: aw.IDs, Known: aw.Known,
		SeqIn: seqIn, Since: since}
	body, err := json.Marshal(message{Request: &req})
	if err != nil {
		return "", nil, err
	}
	s.mu.Lock()
	s.waiting[req.ID] = answers
	s.mu.Unlock()
	if _, err := s.d.Outbox.SendNow(ctx, crypto.Header{Recipient: peer, Count: 1, Kind: crypto.KindRecovery}, to,
		s.d.Layout.ControlSubject(peer, s.d.NodeID), body); err != nil {
		return "", nil, err
	}
	return req.ID, aw.IDs, nil
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
