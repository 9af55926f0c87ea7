package node

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/secagg"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy/privacy"
)

// Aggregate rounds (node/AGGREGATES.md): the center is the hub of a round
// of secure aggregation (crypto/secagg) with distributed discrete Gaussian
// noise (policy/privacy) among the university nodes its query names. Every
// message is an envelope of kind crypto.KindAggregate on the control
// subjects, signed by its sender and sealed to its recipient; share bundles
// travel inside an inner envelope sealed by one university to another, so
// the center relays them without reading them.

// evidenceKindAggregate is the evidence entry kind of aggregate events.
const evidenceKindAggregate = "aggregate"

// Reasons a university does not take part in a round, or a query is
// refused: evidence reasons and metric label values.
const (
	AggRefuseBadQuery       = "bad_query"         // malformed or invalid query
	AggRefuseSignature      = "bad_signature"     // unsigned, forged, or not from a center
	AggRefuseNotParticipant = "not_participant"   // this node is not in the query's participants
	AggRefuseExpired        = "expired"           // past the query's deadline or the round's time
	AggRefuseMember         = "unknown_member"    // a participant is not an admitted university
	AggRefuseNoAgreement    = "no_agreement"      // no active agreement with the center covering the query
	AggRefuseBudget         = "budget_exceeded"   // the release's worst-case ρ would overspend the ledger
	AggRefuseInternal       = "internal_error"    // this node failed (computing its table, sealing)
	AggRefuseTooFew         = "too_few_survivors" // a round failed: fewer than the minimum were left
)

var aggRefuseReasons = []string{AggRefuseBadQuery, AggRefuseSignature, AggRefuseNotParticipant, AggRefuseExpired,
	AggRefuseMember, AggRefuseNoAgreement, AggRefuseBudget, AggRefuseInternal}

// Message types of a round, in order.
const (
	aggMsgRound       = "round"       // center → university: the signed query and the round id
	aggMsgCommit      = "commit"      // university → center: its signed commitment
	aggMsgDecline     = "decline"     // university → center: it does not take part, with a reason
	aggMsgCommitments = "commitments" // center → university: every commitment (U1)
	aggMsgShares      = "shares"      // university → center: share bundles, each sealed to its recipient
	aggMsgBundles     = "bundles"     // center → university: the bundles addressed to it, and U2
	aggMsgMasked      = "masked"      // university → center: its masked, noised table
	aggMsgSurvivors   = "survivors"   // center → university: U3
	aggMsgUnmask      = "unmask"      // university → center: its unmask response
	aggMsgAbort       = "abort"       // center → university: the round failed; forget it
)

// aggMsg is the plaintext of an aggregate envelope.
type aggMsg struct {
	Type    string       `json:"type"`
	Round   string       `json:"round"`
	Query   *SignedQuery `json:"query,omitempty"`
	Data    []byte       `json:"data,omitempty"` // a secagg message
	KeyID   string       `json:"key_id,omitempty"`
	Sig     []byte       `json:"sig,omitempty"`
	Commits []aggCommit  `json:"commits,omitempty"`
	Bundles [][]byte     `json:"bundles,omitempty"` // inner envelopes
	Members []string     `json:"members,omitempty"`
	Reason  string       `json:"reason,omitempty"`
}

// aggCommit is a commitment signed by the participant that made it, so
// that the center cannot substitute key-agreement keys.
type aggCommit struct {
	From  string `json:"from"`
	KeyID string `json:"key_id"`
	Data  []byte `json:"data"`
	Sig   []byte `json:"sig"`
}

// AggregateTestKnobs are test-only settings: never set them in production.
type AggregateTestKnobs struct {
	// NoNoise sends tables without noise, so that a test can compare the
	// secure sum with the plain sum exactly. Budgets are still debited.
	NoNoise bool
	// DropAfter makes this node stop answering a round after the named step
	// ("commit" or "shares"), as if it had crashed.
	DropAfter string
}

// SetAggregateTestKnobs sets the test-only knobs (see AggregateTestKnobs).
func (n *Node) SetAggregateTestKnobs(k AggregateTestKnobs) {
	n.agg.mu.Lock()
	n.agg.knobs = k
	n.agg.mu.Unlock()
}

// aggState is a node's aggregate state, in memory: a node restarted
// mid-round drops out of it (AGGREGATES.md §4).
type aggState struct {
	mu     sync.Mutex
	knobs  AggregateTestKnobs
	parts  map[string]*partRound   // university side, by round id
	rounds map[string]*centerRound // center side, by round id
}

// partRound is a university's side of one round.
type partRound struct {
	id, center, digest, agreement string
	q                             *AggregateQuery
	plan                          aggPlan
	r                             *secagg.Round
	p                             *secagg.Participant
	x                             []int64 // the exact table until masked, then nil
	step                          string  // committed, shared, masked, unmasked
	dropped                       bool
	expires                       time.Time
}

// ---------------------------------------------------------------------------
// Sending

// sendAgg queues one aggregate message to each recipient in one transaction,
// with extra (evidence, ledger) in the same transaction.
func (n *Node) sendAgg(ctx context.Context, q *AggregateQuery, msgs map[string]aggMsg, extra func(*sql.Tx) error) error {
	type out struct {
		to   string
		key  *crypto.KEMPublicKey
		body []byte
	}
	var outs []out
	for _, to := range slices.Sorted(maps.Keys(msgs)) {
		cred, err := n.reg.Lookup(ctx, to)
		if err != nil {
			return fmt.Errorf("aggregate message to %s: %w", to, err)
		}
		key := cred.CurrentKEMKey()
		if key == nil {
			return fmt.Errorf("aggregate message to %s: no KEM key", to)
		}
		body, err := json.Marshal(msgs[to])
		if err != nil {
			return err
		}
		outs = append(outs, out{to, key, body})
	}
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		for _, o := range outs {
			if _, err := n.enqueue(ctx, tx, crypto.Header{Recipient: o.to, Purpose: string(q.Purpose), RecordType: q.RecordType,
				Count: 1, Kind: crypto.KindAggregate}, o.key, n.layout.ControlSubject(o.to, n.cfg.NodeID), o.body, 0); err != nil {
				return fmt.Errorf("aggregate message: %w", err)
			}
		}
		if extra != nil {
			return extra(tx)
		}
		return nil
	})
	if err == nil {
		n.wakeRelay()
	}
	return err
}

// aggEntry is an evidence entry of an aggregate event. Envelope holds the
// round id, Rule "query:" and the query digest; Detail holds ρ in nano-ρ
// and, for survivor lists, one "survivor:<node>" key per survivor.
func aggEntry(round, digest, reason string) evidence.Entry {
	return evidence.Entry{Kind: evidenceKindAggregate, Envelope: round, Rule: "query:" + digest, Reason: reason}
}

func nanoRho(rho float64) int { return int(rho*1e9 + 0.999999) }

func survivorDetail(d map[string]int, survivors []string) map[string]int {
	if d == nil {
		d = map[string]int{}
	}
	d["survivors"] = len(survivors)
	for _, s := range survivors {
		d["survivor:"+s] = 1
	}
	return d
}

// ---------------------------------------------------------------------------
// Dispatch

// aggregateMessage handles an aggregate envelope from the control subject.
func (n *Node) aggregateMessage(ctx context.Context, h crypto.Header, sender *crypto.Credential, plain []byte) error {
	var m aggMsg
	if err := json.Unmarshal(plain, &m); err != nil || m.Round == "" || len(m.Round) > 128 {
		n.m.Aggregate.Refused.WithLabelValues(AggRefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("not an aggregate message"))
	}
	switch m.Type {
	case aggMsgRound:
		return n.partRoundStart(ctx, h, m)
	case aggMsgCommitments, aggMsgBundles, aggMsgSurvivors, aggMsgAbort:
		return n.partStep(ctx, h, m)
	case aggMsgCommit, aggMsgDecline, aggMsgShares, aggMsgMasked, aggMsgUnmask:
		if n.cred.Role != crypto.RoleCenter {
			return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("aggregate %s message to a node that is not a center", m.Type))
		}
		n.centerMessage(ctx, h.Sender, m)
		return nil
	}
	return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("unknown aggregate message type %q", m.Type))
}

// ---------------------------------------------------------------------------
// University side

// partRoundStart checks a round's query and, if this node takes part,
// computes its table and commits.
func (n *Node) partRoundStart(ctx context.Context, h crypto.Header, m aggMsg) error {
	if m.Query == nil {
		n.m.Aggregate.Refused.WithLabelValues(AggRefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("aggregate round without a query"))
	}
	q, err := n.verifyQuery(ctx, m.Query)
	var qe *queryError
	if errors.As(err, &qe) {
		reason := AggRefuseBadQuery
		if qe.signature {
			reason = AggRefuseSignature
		}
		n.m.Aggregate.Refused.WithLabelValues(reason).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("%s: %w", reason, err))
	}
	if err != nil {
		return err // transient: the registry could not be read
	}
	if h.Sender != q.Center {
		n.m.Aggregate.Refused.WithLabelValues(AggRefuseSignature).Inc()
		return envelope.Refuse(envelope.RefuseContent, fmt.Errorf("aggregate query of center %q relayed by %q", q.Center, h.Sender))
	}
	if !strings.HasPrefix(m.Round, q.ID+"-r") {
		n.m.Aggregate.Refused.WithLabelValues(AggRefuseBadQuery).Inc()
		return envelope.Refuse(envelope.RefuseContent, errors.New("round id does not belong to the query"))
	}
	digest := m.Query.Digest()
	n.agg.mu.Lock()
	defer n.agg.mu.Unlock()
	if n.agg.parts[m.Round] != nil {
		return nil // a redelivery: answered already
	}
	now := n.now()
	if n.agg.parts == nil {
		n.agg.parts = map[string]*partRound{}
	}
	decline := func(reason string, cause error) error {
		n.log.Info("aggregate round declined", "round", m.Round, "reason", reason, "err", cause)
		e := aggEntry(m.Round, digest, reason)
		e.Peer, e.Purpose = q.Center, string(q.Purpose)
		if err := n.sendAgg(ctx, q, map[string]aggMsg{q.Center: {Type: aggMsgDecline, Round: m.Round, Reason: reason}},
			func(tx *sql.Tx) error { return n.ev.Append(ctx, tx, e) }); err != nil {
			return err
		}
		n.m.Aggregate.Refused.WithLabelValues(reason).Inc()
		n.m.Aggregate.Participation.WithLabelValues("declined").Inc()
		// Remembered, so that a redelivered round message is not declined twice.
		n.agg.parts[m.Round] = &partRound{id: m.Round, center: q.Center, dropped: true,
			expires: now.Add(time.Duration(q.RoundTimeout) + time.Minute)}
		return nil
	}
	if !slices.Contains(q.Participants, n.cfg.NodeID) {
		return decline(AggRefuseNotParticipant, nil)
	}
	if !now.Before(q.Deadline) || !now.Before(h.Created.Add(time.Duration(q.RoundTimeout))) {
		return decline(AggRefuseExpired, nil)
	}
	for _, p := range q.Participants {
		cred, err := n.reg.Lookup(ctx, p)
		if err != nil || cred.Role != crypto.RoleUniversity {
			return decline(AggRefuseMember, fmt.Errorf("participant %s", p))
		}
	}
	agreement, err := n.aggAgreement(ctx, q, now)
	if err != nil {
		return err
	}
	if agreement == "" {
		return decline(AggRefuseNoAgreement, nil)
	}
	plan, err := planQuery(q)
	if err != nil {
		return decline(AggRefuseBadQuery, err)
	}
	if ok, err := n.budgetAllows(ctx, q.Center, q.Dataset, plan.rho); err != nil {
		return err
	} else if !ok {
		return decline(AggRefuseBudget, nil)
	}
	x, err := n.aggregateTable(ctx, q)
	if err != nil {
		return decline(AggRefuseInternal, err)
	}
	r, err := secagg.NewRound(secagg.Params{RoundID: m.Round, Participants: q.Participants, Threshold: q.Threshold,
		VectorLen: q.vectorLen(), MinSurvivors: q.minSurvivors()})
	if err != nil {
		return decline(AggRefuseBadQuery, err)
	}
	p, err := r.NewParticipant(n.cfg.NodeID, nil)
	if err != nil {
		return decline(AggRefuseInternal, err)
	}
	data, err := p.Commit().MarshalBinary()
	if err != nil {
		return decline(AggRefuseInternal, err)
	}
	pr := &partRound{id: m.Round, center: q.Center, digest: digest, agreement: agreement, q: q, plan: plan, r: r, p: p, x: x,
		step: "committed", expires: now.Add(time.Duration(q.RoundTimeout) + time.Minute)}
	e := aggEntry(m.Round, digest, "joined")
	e.Peer, e.Agreement, e.Purpose = q.Center, agreement, string(q.Purpose)
	e.Detail = map[string]int{"participants": len(q.Participants), "cells": plan.cells}
	if err := n.sendAgg(ctx, q, map[string]aggMsg{q.Center: {Type: aggMsgCommit, Round: m.Round, Data: data,
		KeyID: n.keys.Signing.Public().KeyID(), Sig: n.keys.Signing.Sign(append([]byte(aggCommitLabel), data...))}},
		func(tx *sql.Tx) error { return n.ev.Append(ctx, tx, e) }); err != nil {
		return err
	}
	n.agg.parts[m.Round] = pr
	pr.dropped = n.agg.knobs.DropAfter == "commit"
	n.m.Aggregate.Participation.WithLabelValues("joined").Inc()
	return nil
}

// aggAgreement returns the id of an active agreement under which this node
// gives the center the query's fields for the query's purpose, "" if none.
func (n *Node) aggAgreement(ctx context.Context, q *AggregateQuery, now time.Time) (string, error) {
	list, err := n.Agreements(ctx)
	if err != nil {
		return "", err
	}
	for _, a := range list {
		if a.State != agreementActive || a.Revoked || a.Provider != n.cfg.NodeID || a.Recipient != q.Center ||
			a.Purpose != q.Purpose || !a.ValidAt(now) {
			continue
		}
		if _, ok := a.RecordTypes[q.RecordType]; !ok {
			continue
		}
		covered := true
		for _, f := range q.fields() {
			covered = covered && a.Allows(q.RecordType, f)
		}
		if covered {
			return a.ID, nil
		}
	}
	return "", nil
}

// partStep handles the center's messages after the round started.
func (n *Node) partStep(ctx context.Context, h crypto.Header, m aggMsg) error {
	n.agg.mu.Lock()
	defer n.agg.mu.Unlock()
	pr := n.agg.parts[m.Round]
	if pr == nil || h.Sender != pr.center {
		return nil // unknown round (this node restarted, or declined): it is out of it
	}
	if pr.dropped {
		return nil
	}
	var err error
	switch m.Type {
	case aggMsgAbort:
		pr.x = nil
		delete(n.agg.parts, m.Round)
		n.log.Info("aggregate round aborted by the center", "round", m.Round, "reason", m.Reason)
		return nil
	case aggMsgCommitments:
		if pr.step != "committed" {
			return nil
		}
		err = n.partShares(ctx, pr, m)
	case aggMsgBundles:
		if pr.step != "shared" {
			return nil
		}
		err = n.partMask(ctx, pr, m)
	case aggMsgSurvivors:
		if pr.step != "masked" {
			return nil
		}
		err = n.partUnmask(ctx, pr, m)
	}
	if err != nil {
		// This node leaves the round; the center goes on without it.
		n.log.Warn("aggregate round: dropping out", "round", m.Round, "step", m.Type, "err", err)
		pr.x, pr.dropped = nil, true
	}
	return nil
}

func (n *Node) partShares(ctx context.Context, pr *partRound, m aggMsg) error {
	commits := make([]secagg.Commitment, 0, len(m.Commits))
	for _, c := range m.Commits {
		cred, err := n.reg.Lookup(ctx, c.From)
		if err != nil {
			return fmt.Errorf("commitment of %s: %w", c.From, err)
		}
		vk, ok := cred.SigningKey(c.KeyID)
		if !ok || !vk.Verify(append([]byte(aggCommitLabel), c.Data...), c.Sig) {
			return fmt.Errorf("commitment of %s: signature does not verify", c.From)
		}
		sc, err := pr.r.ParseCommitment(c.Data)
		if err != nil || sc.From != c.From {
			return fmt.Errorf("commitment of %s: malformed", c.From)
		}
		commits = append(commits, sc)
	}
	bundles, err := pr.p.Shares(commits)
	if err != nil {
		return err
	}
	var inner [][]byte
	now := n.now()
	for _, b := range bundles {
		if b.To == n.cfg.NodeID {
			continue
		}
		cred, err := n.reg.Lookup(ctx, b.To)
		if err != nil {
			return err
		}
		to := cred.CurrentKEMKey()
		if to == nil {
			return fmt.Errorf("share bundle to %s: no KEM key", b.To)
		}
		plain, err := b.MarshalBinary()
		if err != nil {
			return err
		}
		h := crypto.Header{Suite: to.Suite(), Sender: n.cfg.NodeID, SenderKeyID: n.keys.Signing.Public().KeyID(),
			Recipient: b.To, RecipientKeyID: to.KeyID(), Created: now, Expires: pr.expires,
			Purpose: string(pr.q.Purpose), RecordType: pr.q.RecordType, Count: 1, Kind: crypto.KindAggregate}
		if _, err := rand.Read(h.ID[:]); err != nil {
			return err
		}
		env, err := crypto.Seal(rand.Reader, h, to, n.keys.Signing, plain)
		if err != nil {
			return fmt.Errorf("seal share bundle: %w", err)
		}
		inner = append(inner, env)
	}
	if err := n.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgShares, Round: pr.id, Bundles: inner}}, nil); err != nil {
		return err
	}
	pr.step = "shared"
	pr.dropped = n.agg.knobs.DropAfter == "shares"
	return nil
}

// partMask opens the bundles relayed to this node, debits the ledger, adds
// the noise share and sends the masked table, the debit and the evidence in
// one transaction.
func (n *Node) partMask(ctx context.Context, pr *partRound, m aggMsg) error {
	var received []secagg.ShareBundle
	from := map[string]bool{}
	for _, data := range m.Bundles {
		env, _, err := n.codec.Check(ctx, data, crypto.KindAggregate)
		if err != nil {
			return fmt.Errorf("share bundle: %w", err)
		}
		plain, err := n.codec.Open(env)
		if err != nil {
			return fmt.Errorf("share bundle: %w", err)
		}
		b, err := pr.r.ParseShareBundle(plain)
		if err != nil || b.From != env.Header.Sender || b.To != n.cfg.NodeID {
			return fmt.Errorf("share bundle from %s: malformed", env.Header.Sender)
		}
		from[b.From] = true
		received = append(received, b)
	}
	for _, u := range m.Members {
		if u != n.cfg.NodeID && !from[u] {
			return fmt.Errorf("no share bundle from %s, which the center says shared", u)
		}
	}
	if len(from) != len(m.Members)-1 || !slices.Contains(m.Members, n.cfg.NodeID) {
		return errors.New("share bundles do not match the members the center lists")
	}
	x := pr.x
	if !n.agg.knobs.NoNoise {
		z, err := pr.plan.noise(privacy.NewSampler(rand.Reader), len(x))
		if err != nil {
			return err
		}
		if err := privacy.AddNoise(x, z); err != nil {
			return err
		}
	}
	masked, err := pr.p.Mask(x, received)
	clear(x)
	pr.x = nil
	if err != nil {
		return err
	}
	data, err := masked.MarshalBinary()
	if err != nil {
		return err
	}
	e := aggEntry(pr.id, pr.digest, "contributed")
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Detail = map[string]int{"rho_nano": nanoRho(pr.plan.rho), "shared": len(m.Members)}
	err = n.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgMasked, Round: pr.id, Data: data}}, func(tx *sql.Tx) error {
		if err := n.spendTx(ctx, tx, pr.center, pr.q.Dataset, pr.plan.rho); err != nil {
			return err
		}
		return n.ev.Append(ctx, tx, e)
	})
	if errors.Is(err, privacy.ErrBudgetExceeded) || errors.Is(err, privacy.ErrNoBudget) {
		// Another round spent the budget meanwhile: decline now.
		n.m.Aggregate.Refused.WithLabelValues(AggRefuseBudget).Inc()
		n.m.Aggregate.Participation.WithLabelValues("declined").Inc()
		e := aggEntry(pr.id, pr.digest, AggRefuseBudget)
		e.Peer, e.Purpose = pr.center, string(pr.q.Purpose)
		if err := n.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgDecline, Round: pr.id, Reason: AggRefuseBudget}},
			func(tx *sql.Tx) error { return n.ev.Append(ctx, tx, e) }); err != nil {
			return err
		}
		pr.dropped = true
		return nil
	}
	if err != nil {
		return err
	}
	pr.step = "masked"
	n.m.Aggregate.Participation.WithLabelValues("contributed").Inc()
	n.m.Aggregate.Rho.Add(pr.plan.rho)
	return nil
}

func (n *Node) partUnmask(ctx context.Context, pr *partRound, m aggMsg) error {
	resp, err := pr.p.Unmask(m.Members)
	if err != nil {
		return err
	}
	data, err := resp.MarshalBinary()
	if err != nil {
		return err
	}
	e := aggEntry(pr.id, pr.digest, "unmasked")
	e.Peer, e.Agreement, e.Purpose = pr.center, pr.agreement, string(pr.q.Purpose)
	e.Count = len(m.Members)
	e.Detail = survivorDetail(map[string]int{"rho_nano": nanoRho(pr.plan.rho)}, m.Members)
	if err := n.sendAgg(ctx, pr.q, map[string]aggMsg{pr.center: {Type: aggMsgUnmask, Round: pr.id, Data: data}},
		func(tx *sql.Tx) error { return n.ev.Append(ctx, tx, e) }); err != nil {
		return err
	}
	pr.step = "unmasked"
	return nil
}

// ---------------------------------------------------------------------------
// The privacy ledger, persisted in the privacy_ledger table.

func loadLedger(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (*privacy.Ledger, error) {
	var body []byte
	err := q.QueryRowContext(ctx, `SELECT body FROM privacy_ledger WHERE id = 1`).Scan(&body)
	l := &privacy.Ledger{}
	if errors.Is(err, sql.ErrNoRows) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read privacy ledger: %w", err)
	}
	if err := json.Unmarshal(body, l); err != nil {
		return nil, fmt.Errorf("privacy ledger: %w", err)
	}
	return l, nil
}

func (n *Node) storeLedger(ctx context.Context, tx *sql.Tx, l *privacy.Ledger) error {
	body, err := json.Marshal(l)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO privacy_ledger(id, body, updated_ms) VALUES (1, ?, ?)
		ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms`, body, n.now().UnixMilli())
	return err
}

func hasAccount(l *privacy.Ledger, recipient, dataset string) bool {
	for _, a := range l.Accounts() {
		if a.Recipient == recipient && a.Dataset == dataset {
			return true
		}
	}
	return false
}

// budgetAllows reports whether rho fits in what is left of the account,
// which starts at DefaultPrivacyBudget when none was set.
func (n *Node) budgetAllows(ctx context.Context, recipient, dataset string, rho float64) (bool, error) {
	l, err := loadLedger(ctx, n.db.R)
	if err != nil {
		return false, err
	}
	left := DefaultPrivacyBudget
	if hasAccount(l, recipient, dataset) {
		left = l.Remaining(recipient, dataset)
	}
	return rho <= left, nil
}

// spendTx debits rho inside tx, opening the account at DefaultPrivacyBudget
// when it has none.
func (n *Node) spendTx(ctx context.Context, tx *sql.Tx, recipient, dataset string, rho float64) error {
	l, err := loadLedger(ctx, tx)
	if err != nil {
		return err
	}
	if !hasAccount(l, recipient, dataset) {
		if err := l.SetBudget(recipient, dataset, DefaultPrivacyBudget); err != nil {
			return err
		}
	}
	if err := l.Spend(recipient, dataset, rho); err != nil {
		return err
	}
	return n.storeLedger(ctx, tx, l)
}

// SetPrivacyBudget sets the total ρ this node grants recipient about
// dataset (a record type); it may not go below what is spent. The change is
// recorded in the evidence log.
func (n *Node) SetPrivacyBudget(ctx context.Context, recipient, dataset string, rho float64) error {
	if _, ok := n.std.Type(dataset); !ok {
		return fmt.Errorf("privacy budget: dataset: %q is not a record type", dataset)
	}
	return n.db.Write(ctx, func(tx *sql.Tx) error {
		l, err := loadLedger(ctx, tx)
		if err != nil {
			return err
		}
		if err := l.SetBudget(recipient, dataset, rho); err != nil {
			return fmt.Errorf("privacy budget: %w", err)
		}
		if err := n.storeLedger(ctx, tx, l); err != nil {
			return err
		}
		return n.ev.Append(ctx, tx, evidence.Entry{Kind: evidenceKindAggregate, Peer: recipient, Reason: "budget_set",
			Detail: map[string]int{"budget_nano_rho": nanoRho(rho)}})
	})
}

// PrivacyBudgets lists this node's ledger accounts.
func (n *Node) PrivacyBudgets(ctx context.Context) ([]privacy.Account, error) {
	l, err := loadLedger(ctx, n.db.R)
	if err != nil {
		return nil, err
	}
	return l.Accounts(), nil
}

// ---------------------------------------------------------------------------
// Housekeeping

// aggregator runs the center's schedule and step deadlines, and forgets
// university rounds past their time, until ctx ends.
func (n *Node) aggregator(ctx context.Context) {
	every := 5 * time.Second
	if n.cred.Role == crypto.RoleCenter {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := n.now()
		n.agg.mu.Lock()
		for id, pr := range n.agg.parts {
			if now.After(pr.expires) {
				clear(pr.x)
				delete(n.agg.parts, id)
			}
		}
		n.agg.mu.Unlock()
		if n.cred.Role == crypto.RoleCenter {
			n.centerTick(ctx, now)
		}
	}
}
