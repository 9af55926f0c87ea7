package aggregate

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/crypto/secagg"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
	"github.com/eduspace/eduspace/policy/privacy"
)

// The center's side of aggregate rounds: queries and their schedule,
// relaying, summing, suppressing and storing releases (AGGREGATES.md §3).

// Steps of a round at the center: what it is collecting.
const (
	stepCommit = iota
	stepShares
	stepMasked
	stepConsist
	stepUnmask
	stepDone
)

// ErrNotCenter is returned when a node without the center role is asked to
// run an aggregate query.
var ErrNotCenter = errors.New("only a node with the center role runs aggregate queries")

// ErrUnknownRelease is returned for a release id the center does not hold.
var ErrUnknownRelease = errors.New("unknown aggregate")

// centerRound is the center's state of one round, in memory.
type centerRound struct {
	id, queryID, digest string
	sq                  SignedQuery
	q                   *Query
	plan                aggPlan
	r                   *secagg.Round
	started, stepAt     time.Time
	step                int
	declined            map[string]string
	commits             map[string]aggCommit
	commitments         map[string]secagg.Commitment
	shares              map[string][][]byte
	shared              []string // U2
	masked              map[string]secagg.MaskedInput
	survivors           []string            // U3
	u3For               map[string][]string // the list U3 sent to each survivor (the same for all, unless a test knob deviates)
	sigs                map[string]aggSig   // survivors' signatures over the list they were sent
	signers             []string            // the survivors whose signatures were relayed: they answer the unmask step
	responses           map[string]secagg.UnmaskResponse
	done                chan struct{}
	release             *Release
	err                 error
	finished            time.Time
}

// QueryInfo is what submitting a query started.
type QueryInfo struct {
	ID      string  `json:"id"`
	Digest  string  `json:"digest"`
	Round   string  `json:"round"`   // the first round
	Rho     float64 `json:"rho"`     // worst-case ρ of one release
	Epsilon float64 `json:"epsilon"` // at δ = Delta
}

// ReleasedCell is one cell of a release: its key (one value per group-by
// dimension, "" for other) and its noisy count (and sum), or nothing when
// suppressed.
type ReleasedCell struct {
	Key        []string `json:"key"`
	Count      *int64   `json:"count,omitempty"`
	Sum        *int64   `json:"sum,omitempty"`
	Suppressed bool     `json:"suppressed,omitempty"`
}

// Release is one released aggregate: noisy, with cells under k
// suppressed. Nothing else of a round is kept.
type Release struct {
	ID          string   `json:"id"` // the round id
	Query       string   `json:"query"`
	QueryDigest string   `json:"query_digest"`
	RecordType  string   `json:"record_type"`
	Dataset     string   `json:"dataset"`
	Purpose     string   `json:"purpose"`
	GroupBy     []string `json:"group_by"`
	Measure     Measure  `json:"measure"`
	// K is the minimum cell size applied: the larger of the query's k and
	// the minimum cell size the standard declares for each dimension.
	K               int64     `json:"k"`
	Rho             float64   `json:"rho"`     // worst-case ρ each contributor debited
	Epsilon         float64   `json:"epsilon"` // ρ converted at δ
	Delta           float64   `json:"delta"`
	Participants    []string  `json:"participants"`
	Survivors       []string  `json:"survivors"`
	Started         time.Time `json:"started"`
	Released        time.Time `json:"released"`
	CellsReleased   int       `json:"cells_released"`
	CellsSuppressed int       `json:"cells_suppressed"`
	// Declined are the participants that took no part, with their reason
	// code (budget_exceeded, revoked, …: AGGREGATES.md).
	Declined map[string]string `json:"declined,omitempty"`
	Cells    []ReleasedCell    `json:"cells,omitempty"`
	// Joined is the release of a joined query (AGGREGATES.md §7): its
	// cells in place of Cells.
	Joined *JoinedRelease `json:"joined,omitempty"`
}

// Submit signs q as this center's query, stores it and starts
// its first round; a standing query (Interval set) gets a new round every
// interval until its deadline. Unset fields take defaults: center, issued
// (now), dataset (the record type), contribution bound 1, round timeout
// 60s, deadline an hour after issue.
func (a *Aggregator) Submit(ctx context.Context, q Query) (QueryInfo, error) {
	if a.cred.Role != crypto.RoleCenter {
		return QueryInfo{}, ErrNotCenter
	}
	now := a.now()
	q.SetDefaults(a.nodeID, now)
	if q.Center != a.nodeID {
		return QueryInfo{}, fmt.Errorf("aggregate query: center: must be this node, %s", a.nodeID)
	}
	if err := q.Validate(a.std); err != nil {
		var de *DimensionError
		if errors.As(err, &de) {
			a.m.Aggregate.Refused.WithLabelValues(de.Reason()).Inc()
		}
		return QueryInfo{}, err
	}
	if q.Colluders < a.minColluders {
		return QueryInfo{}, fmt.Errorf("aggregate query: colluders: %d, this node requires at least %d (aggregate.colluders)", q.Colluders, a.minColluders)
	}
	plan, err := planQuery(&q)
	if err != nil {
		return QueryInfo{}, fmt.Errorf("aggregate query: rho: %w", err)
	}
	for i, p := range q.Participants {
		cred, err := a.reg.Lookup(ctx, p)
		if err != nil || cred.Role != crypto.RoleUniversity {
			return QueryInfo{}, fmt.Errorf("aggregate query: participants[%d]: %q is not an admitted university", i, p)
		}
	}
	sq, err := a.signQuery(&q)
	if err != nil {
		return QueryInfo{}, err
	}
	signed, err := json.Marshal(sq)
	if err != nil {
		return QueryInfo{}, err
	}
	info := QueryInfo{ID: q.ID, Digest: sq.Digest(), Rho: plan.rho}
	if info.Epsilon, err = privacy.Epsilon(plan.rho, Delta); err != nil {
		return QueryInfo{}, fmt.Errorf("aggregate query: rho: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	err = a.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO aggregate_queries(id, signed, state, rounds, next_ms, created_ms)
			VALUES (?, ?, 'active', 0, NULL, ?)`, q.ID, signed, now.UnixMilli()); err != nil {
			return fmt.Errorf("aggregate query: id: %q exists already", q.ID)
		}
		e := aggEntry("", info.Digest, "query_submitted")
		e.Purpose = string(q.Purpose)
		e.Detail = map[string]int{"participants": len(q.Participants), "cells": plan.cells, "rho_nano": nanoRho(plan.rho)}
		return a.ev.Append(ctx, tx, e)
	})
	if err != nil {
		return QueryInfo{}, err
	}
	info.Round, err = a.startRound(ctx, q.ID)
	return info, err
}

// startRound starts the next round of a stored query; agg.mu is held.
func (a *Aggregator) startRound(ctx context.Context, queryID string) (string, error) {
	var signed []byte
	var rounds int
	var state string
	if err := a.db.R.QueryRowContext(ctx, `SELECT signed, rounds, state FROM aggregate_queries WHERE id = ?`, queryID).Scan(&signed, &rounds, &state); err != nil {
		return "", fmt.Errorf("aggregate query %s: %w", queryID, err)
	}
	if state == "cancelled" {
		return "", fmt.Errorf("aggregate query %s: %w", queryID, ErrQueryNotActive)
	}
	var sq SignedQuery
	if err := json.Unmarshal(signed, &sq); err != nil {
		return "", err
	}
	q, err := a.verifyQuery(ctx, &sq)
	if err != nil {
		return "", err
	}
	plan, err := planQuery(q)
	if err != nil {
		return "", err
	}
	now := a.now()
	if !now.Before(q.Deadline) {
		a.setQueryState(ctx, q.ID, "done", sql.NullInt64{})
		return "", fmt.Errorf("aggregate query %s: past its deadline", q.ID)
	}
	id := fmt.Sprintf("%s-r%d", q.ID, rounds+1)
	r, err := secagg.NewRound(secagg.Params{RoundID: id, Participants: q.Participants, Threshold: q.shamirDegree(),
		VectorLen: q.vectorLen(), MinSurvivors: q.minSurvivors()})
	if err != nil {
		return "", err
	}
	cr := &centerRound{id: id, queryID: q.ID, digest: sq.Digest(), sq: sq, q: q, plan: plan, r: r, started: now, stepAt: now,
		declined: map[string]string{}, commits: map[string]aggCommit{}, commitments: map[string]secagg.Commitment{},
		shares: map[string][][]byte{}, masked: map[string]secagg.MaskedInput{}, responses: map[string]secagg.UnmaskResponse{},
		u3For: map[string][]string{}, sigs: map[string]aggSig{},
		done: make(chan struct{})}
	var next sql.NullInt64
	state = "done"
	if iv := time.Duration(q.Interval); iv > 0 && now.Add(iv).Before(q.Deadline) {
		next, state = sql.NullInt64{Int64: now.Add(iv).UnixMilli(), Valid: true}, "active"
	}
	// A member the authority revoked takes no part: nothing is sealed to
	// it, and the round counts it out from the start, as one that declined.
	msgs := map[string]aggMsg{}
	for _, p := range q.Participants {
		if a.reg.Revoked(p, "", now) {
			cr.declined[p] = "revoked"
			continue
		}
		msgs[p] = aggMsg{Type: aggMsgRound, Round: id, Query: &sq}
	}
	if len(msgs) < q.minSurvivors() {
		return "", fmt.Errorf("aggregate query %s: %d of its %d participants are revoked, %d remain, it needs %d",
			q.ID, len(cr.declined), len(q.Participants), len(msgs), q.minSurvivors())
	}
	e := aggEntry(id, cr.digest, "round_started")
	e.Purpose = string(q.Purpose)
	e.Detail = map[string]int{"participants": len(q.Participants)}
	if len(cr.declined) > 0 {
		e.Detail["revoked"] = len(cr.declined)
	}
	err = a.sendAgg(ctx, q, msgs, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE aggregate_queries SET rounds = rounds + 1, next_ms = ?, state = ? WHERE id = ?`,
			next, state, q.ID); err != nil {
			return err
		}
		return a.ev.Append(ctx, tx, e)
	})
	if err != nil {
		return "", err
	}
	a.rounds[id] = cr
	a.m.Aggregate.Rounds.WithLabelValues("started").Inc()
	a.log.Info("aggregate round started", "round", id, "participants", len(q.Participants))
	return id, nil
}

// centerTick starts the rounds standing queries are due, and moves rounds
// whose step has timed out on.
func (a *Aggregator) centerTick(ctx context.Context, now time.Time) {
	due, err := a.dueQueries(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("standing aggregate queries not read", "err", err)
		}
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range due {
		if _, err := a.startRound(ctx, id); err != nil && ctx.Err() == nil {
			// Skip this round (a participant's credential could not be
			// read, say): the next one is due an interval later.
			a.log.Warn("standing aggregate query: round not started", "query", id, "err", err)
			a.skipRound(ctx, id, now)
		}
	}
	for id, cr := range a.rounds {
		if cr.step == stepDone {
			if now.Sub(cr.finished) > 10*time.Minute {
				delete(a.rounds, id)
			}
			continue
		}
		if now.Sub(cr.stepAt) >= time.Duration(cr.q.RoundTimeout)/4 {
			a.centerAdvance(ctx, cr, true)
		}
	}
}

// dueQueries lists the standing queries whose next round is due.
func (a *Aggregator) dueQueries(ctx context.Context, now time.Time) ([]string, error) {
	return store.Strings(ctx, a.db.R, `SELECT id FROM aggregate_queries WHERE state = 'active' AND next_ms IS NOT NULL AND next_ms <= ?`, now.UnixMilli())
}

// centerMessage records a participant's message and moves the round on
// when the step is complete.
func (a *Aggregator) centerMessage(ctx context.Context, from string, m aggMsg) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cr := a.rounds[m.Round]
	if cr == nil || cr.step == stepDone || !slices.Contains(cr.q.Participants, from) {
		return
	}
	if err := cr.record(a, ctx, from, m); err != nil {
		a.log.Warn("aggregate message ignored", "round", cr.id, "from", from, "type", m.Type, "err", err)
		return
	}
	a.centerAdvance(ctx, cr, false)
}

func (cr *centerRound) record(a *Aggregator, ctx context.Context, from string, m aggMsg) error {
	switch m.Type {
	case aggMsgDecline:
		if _, ok := cr.declined[from]; ok {
			return nil
		}
		reason := "declined"
		if slices.Contains(RefuseReasons, m.Reason) {
			reason = m.Reason
		}
		cr.declined[from] = reason
		e := aggEntry(cr.id, cr.digest, reason)
		e.Peer, e.Purpose = from, string(cr.q.Purpose)
		return a.db.Write(ctx, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) })
	case aggMsgCommit:
		if cr.step != stepCommit {
			return errors.New("late commitment")
		}
		cred, err := a.reg.Lookup(ctx, from)
		if err != nil {
			return err
		}
		vk, ok := cred.SigningKey(m.KeyID)
		if !ok || !vk.Verify(append([]byte(aggCommitLabel), m.Data...), m.Sig) {
			return errors.New("commitment signature does not verify")
		}
		c, err := cr.r.ParseCommitment(m.Data)
		if err != nil || c.From != from {
			return errors.New("malformed commitment")
		}
		cr.commits[from] = aggCommit{From: from, KeyID: m.KeyID, Data: m.Data, Sig: m.Sig}
		cr.commitments[from] = c
	case aggMsgShares:
		if cr.step != stepShares {
			return errors.New("late share bundles")
		}
		if _, ok := cr.commits[from]; !ok {
			return errors.New("share bundles from a participant that did not commit")
		}
		to := map[string]bool{}
		for _, b := range m.Bundles {
			env, err := crypto.ParseEnvelope(b)
			if err != nil {
				return err
			}
			h := env.Header
			if h.Sender != from || h.Kind != crypto.KindAggregate || h.Recipient == from || to[h.Recipient] {
				return errors.New("share bundle misaddressed")
			}
			if _, ok := cr.commits[h.Recipient]; !ok {
				return errors.New("share bundle to a participant that did not commit")
			}
			to[h.Recipient] = true
		}
		if len(to) != len(cr.commits)-1 {
			return fmt.Errorf("%d share bundles for %d other committed participants", len(to), len(cr.commits)-1)
		}
		cr.shares[from] = m.Bundles
	case aggMsgMasked:
		if cr.step != stepMasked || !slices.Contains(cr.shared, from) {
			return errors.New("masked table out of turn")
		}
		mi, err := cr.r.ParseMaskedInput(m.Data)
		if err != nil || mi.From != from {
			return errors.New("malformed masked table")
		}
		cr.masked[from] = mi
	case aggMsgConsistency:
		if cr.step != stepConsist || !slices.Contains(cr.survivors, from) {
			return errors.New("signature over U3 out of turn")
		}
		d, err := cr.r.SurvivorsDigest(cr.u3For[from])
		if err != nil {
			return err
		}
		s := aggSig{From: from, KeyID: m.KeyID, Sig: m.Sig}
		if !a.verifySurvivorsSig(ctx, cr.id, d, s) {
			return errors.New("signature over U3 does not verify over the list sent")
		}
		cr.sigs[from] = s
	case aggMsgUnmask:
		if cr.step != stepUnmask || !slices.Contains(cr.signers, from) {
			return errors.New("unmask response out of turn")
		}
		u, err := cr.r.ParseUnmaskResponse(m.Data)
		if err != nil || u.From != from {
			return errors.New("malformed unmask response")
		}
		cr.responses[from] = u
	}
	return nil
}

// pending reports how many answers of the current step are still expected
// and how many arrived.
func (cr *centerRound) pending() (expected, have int) {
	var from []string
	switch cr.step {
	case stepCommit:
		from, have = cr.q.Participants, len(cr.commits)
	case stepShares:
		from, have = slices.Collect(maps.Keys(cr.commits)), len(cr.shares)
	case stepMasked:
		from, have = cr.shared, len(cr.masked)
	case stepConsist:
		from, have = cr.survivors, len(cr.sigs)
	case stepUnmask:
		from, have = cr.signers, len(cr.responses)
	}
	for _, p := range from {
		if _, gone := cr.declined[p]; !gone {
			expected++
		}
	}
	return max(expected, have), have
}

// centerAdvance moves the round to its next step once every expected
// answer arrived, or when the step timed out with enough of them; agg.mu is
// held.
func (a *Aggregator) centerAdvance(ctx context.Context, cr *centerRound, timedOut bool) {
	expected, have := cr.pending()
	if have < expected && !timedOut {
		return
	}
	m := cr.q.minSurvivors()
	var err error
	switch cr.step {
	case stepCommit:
		u1 := slices.Sorted(maps.Keys(cr.commits))
		if len(u1) < m {
			a.centerFail(ctx, cr, RefuseTooFew, fmt.Errorf("%d committed, need %d", len(u1), m))
			return
		}
		if cr.q.Join != nil {
			sides := map[string]bool{}
			for _, u := range u1 {
				sides[cr.q.side(u)] = true
			}
			if !sides["population"] || !sides["outcome"] {
				a.centerFail(ctx, cr, RefuseTooFew, errors.New("a joined round needs a population participant and an outcome participant"))
				return
			}
		}
		commits := make([]aggCommit, 0, len(u1))
		for _, u := range u1 {
			commits = append(commits, cr.commits[u])
		}
		msgs := map[string]aggMsg{}
		for _, u := range u1 {
			msgs[u] = aggMsg{Type: aggMsgCommitments, Round: cr.id, Commits: commits}
		}
		err = a.sendAgg(ctx, cr.q, msgs, nil)
	case stepShares:
		u2 := slices.Sorted(maps.Keys(cr.shares))
		if len(u2) < m {
			a.centerFail(ctx, cr, RefuseTooFew, fmt.Errorf("%d shared, need %d", len(u2), m))
			return
		}
		msgs := map[string]aggMsg{}
		for _, v := range u2 {
			msgs[v] = aggMsg{Type: aggMsgBundles, Round: cr.id, Members: u2}
		}
		err = routeBundles(msgs, u2, cr.shares)
		cr.shared = u2
		if a.knobs.deviate == "short_u2" {
			for _, v := range u2 {
				msgs[v] = aggMsg{Type: aggMsgBundles, Round: cr.id, Members: []string{v}}
			}
		}
		var e evidence.Entry
		if err == nil {
			e, err = a.listEntry(cr, "shared_list", u2, cr.r.SharedDigest)
		}
		if err == nil {
			err = a.sendAgg(ctx, cr.q, msgs, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) })
		}
	case stepMasked:
		u3 := slices.Sorted(maps.Keys(cr.masked))
		if len(u3) < m {
			a.centerFail(ctx, cr, RefuseTooFew, fmt.Errorf("%d masked tables, need %d", len(u3), m))
			return
		}
		msgs := map[string]aggMsg{}
		for _, u := range u3 {
			msgs[u] = aggMsg{Type: aggMsgSurvivors, Round: cr.id, Members: u3}
			cr.u3For[u] = u3
		}
		cr.survivors = u3
		if d := a.knobs.deviate; d == "split_u3" || d == "split_u3_filter" {
			short := u3[:len(u3)-1]
			msgs[u3[0]] = aggMsg{Type: aggMsgSurvivors, Round: cr.id, Members: short}
			cr.u3For[u3[0]] = short
		}
		var e evidence.Entry
		e, err = a.listEntry(cr, "survivors_list", u3, cr.r.SurvivorsDigest)
		if err == nil && a.knobs.deviate == "equivocate_u3" {
			err = a.sendAgg(ctx, cr.q, equivocate(cr.id, u3), nil)
		}
		if err == nil {
			err = a.sendAgg(ctx, cr.q, msgs, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) })
		}
	case stepConsist:
		signers := slices.Sorted(maps.Keys(cr.sigs))
		if len(signers) < cr.q.Threshold {
			a.centerFail(ctx, cr, RefuseTooFew, fmt.Errorf("%d signatures over U3, need %d", len(signers), cr.q.Threshold))
			return
		}
		msgs := map[string]aggMsg{}
		for _, u := range signers {
			var sigs []aggSig
			for _, v := range signers {
				if a.knobs.deviate != "split_u3_filter" || slices.Equal(cr.u3For[u], cr.u3For[v]) {
					sigs = append(sigs, cr.sigs[v])
				}
			}
			msgs[u] = aggMsg{Type: aggMsgSignatures, Round: cr.id, Sigs: sigs}
		}
		cr.signers = signers
		var e evidence.Entry
		e, err = a.listEntry(cr, "survivors_signed", cr.survivors, cr.r.SurvivorsDigest)
		if err == nil {
			e.Detail["signers"] = len(signers)
			for _, v := range signers {
				e.Detail["signer:"+v] = 1
			}
			err = a.sendAgg(ctx, cr.q, msgs, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) })
		}
	case stepUnmask:
		a.centerRelease(ctx, cr)
		return
	default:
		return
	}
	if err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	cr.step++
	cr.stepAt = a.now()
}

// listEntry is the center's evidence entry of a list it sends (U2 or U3):
// the members, and the digest the round binds the list to, which each
// university's contributed or unmasked entry carries too.
func (a *Aggregator) listEntry(cr *centerRound, reason string, list []string, digest func([]string) ([32]byte, error)) (evidence.Entry, error) {
	d, err := digest(list)
	if err != nil {
		return evidence.Entry{}, err
	}
	e := aggEntry(cr.id, cr.digest, reason)
	e.Purpose, e.Count, e.Digest = string(cr.q.Purpose), len(list), hex.EncodeToString(d[:])
	e.Detail = survivorDetail(nil, list)
	return e, nil
}

// equivocate is the deviation the test knob "equivocate_u3" makes: each
// survivor is first told that another survivor dropped.
func equivocate(round string, u3 []string) map[string]aggMsg {
	msgs := map[string]aggMsg{}
	for _, u := range u3 {
		other := u3[len(u3)-1]
		if other == u {
			other = u3[0]
		}
		msgs[u] = aggMsg{Type: aggMsgSurvivors, Round: round, Members: slices.DeleteFunc(slices.Clone(u3), func(v string) bool { return v == other })}
	}
	return msgs
}

// routeBundles adds to the message of each member of u2 the inner
// envelopes addressed to it, as members of u2 sent them.
func routeBundles(msgs map[string]aggMsg, u2 []string, shares map[string][][]byte) error {
	for _, u := range u2 {
		for _, b := range shares[u] {
			env, err := crypto.ParseEnvelope(b) // parsed already when recorded
			if err != nil {
				return fmt.Errorf("share bundle of %s: %w", u, err)
			}
			if msg, ok := msgs[env.Header.Recipient]; ok {
				msg.Bundles = append(msg.Bundles, b)
				msgs[env.Header.Recipient] = msg
			}
		}
	}
	return nil
}

// centerFail ends a round without a release and tells the participants.
func (a *Aggregator) centerFail(ctx context.Context, cr *centerRound, reason string, cause error) {
	a.log.Warn("aggregate round failed", "round", cr.id, "reason", reason, "err", cause)
	msgs := map[string]aggMsg{}
	for _, p := range cr.q.Participants {
		if _, gone := cr.declined[p]; !gone {
			msgs[p] = aggMsg{Type: aggMsgAbort, Round: cr.id, Reason: reason}
		}
	}
	e := aggEntry(cr.id, cr.digest, "round_failed")
	e.Purpose = string(cr.q.Purpose)
	e.Detail = map[string]int{"step": cr.step}
	if err := a.sendAgg(ctx, cr.q, msgs, func(tx *sql.Tx) error { return a.ev.Append(ctx, tx, e) }); err != nil {
		a.log.Warn("aggregate round: abort not sent", "round", cr.id, "err", err)
	}
	cr.err = fmt.Errorf("aggregate round %s failed: %s: %w", cr.id, reason, cause)
	a.centerFinish(cr)
	a.m.Aggregate.Rounds.WithLabelValues("failed").Inc()
}

func (a *Aggregator) centerFinish(cr *centerRound) {
	cr.step, cr.finished = stepDone, a.now()
	cr.commits, cr.commitments, cr.shares, cr.masked, cr.responses, cr.sigs = nil, nil, nil, nil, nil, nil
	close(cr.done)
}

// centerRelease sums the masked tables, suppresses cells under k, and
// stores the release with its evidence.
func (a *Aggregator) centerRelease(ctx context.Context, cr *centerRound) {
	t := cr.q.Threshold
	if len(cr.responses) < t {
		a.centerFail(ctx, cr, RefuseTooFew, fmt.Errorf("%d unmask responses, need %d", len(cr.responses), t))
		return
	}
	tr := secagg.Transcript{Shared: cr.shared}
	for _, u := range slices.Sorted(maps.Keys(cr.commitments)) {
		tr.Commitments = append(tr.Commitments, cr.commitments[u])
	}
	for _, u := range cr.survivors {
		tr.Masked = append(tr.Masked, cr.masked[u])
	}
	for _, u := range slices.Sorted(maps.Keys(cr.responses)) {
		tr.Responses = append(tr.Responses, cr.responses[u])
	}
	sum, err := cr.r.Sum(tr)
	if err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	q := cr.q
	if q.Join != nil {
		a.centerReleaseJoined(ctx, cr, sum)
		return
	}
	cells := q.cells()
	counts := sum[:cells]
	k := q.minCell(a.std)
	cc, suppressed := privacy.Suppress(counts, k)
	var sc []privacy.Cell
	if q.Measure.Kind == "sum" {
		sc, _ = privacy.SuppressBy(sum[cells:], counts, k)
	}
	clear(sum)
	rel := &Release{ID: cr.id, Query: q.ID, QueryDigest: cr.digest, RecordType: q.RecordType, Dataset: q.Dataset,
		Purpose: string(q.Purpose), Measure: q.Measure, K: k, Rho: cr.plan.rho, Delta: Delta,
		Participants: slices.Sorted(slices.Values(q.Participants)), Survivors: cr.survivors, Started: cr.started.UTC(),
		Released: a.now().UTC(), CellsReleased: cells - suppressed, CellsSuppressed: suppressed, GroupBy: []string{}}
	if len(cr.declined) > 0 {
		rel.Declined = maps.Clone(cr.declined)
	}
	if rel.Epsilon, err = privacy.Epsilon(cr.plan.rho, Delta); err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	for _, d := range q.GroupBy {
		rel.GroupBy = append(rel.GroupBy, d.Field)
	}
	for i := range cells {
		c := ReleasedCell{Key: q.cellKey(i), Suppressed: cc[i].Suppressed}
		if !c.Suppressed {
			v := cc[i].Value
			c.Count = &v
			if sc != nil {
				s := sc[i].Value
				c.Sum = &s
			}
		}
		rel.Cells = append(rel.Cells, c)
	}
	a.storeRelease(ctx, cr, rel)
}

// storeRelease stores a release with its evidence and ends the round.
func (a *Aggregator) storeRelease(ctx context.Context, cr *centerRound, rel *Release) {
	q := cr.q
	body, err := json.Marshal(rel)
	if err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	e := aggEntry(cr.id, cr.digest, "released")
	e.Purpose, e.Count = string(q.Purpose), len(cr.survivors)
	e.Detail = survivorDetail(map[string]int{"rho_nano": nanoRho(cr.plan.rho), "cells_released": rel.CellsReleased,
		"cells_suppressed": rel.CellsSuppressed}, cr.survivors)
	err = a.db.Write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO aggregate_releases(id, query, body, released_ms) VALUES (?, ?, ?, ?)`,
			rel.ID, rel.Query, body, rel.Released.UnixMilli()); err != nil {
			return fmt.Errorf("store release: %w", err)
		}
		return a.ev.Append(ctx, tx, e)
	})
	if err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	cr.release = rel
	a.centerFinish(cr)
	a.m.Aggregate.Rounds.WithLabelValues("completed").Inc()
	a.m.Aggregate.Cells.WithLabelValues("released").Add(float64(rel.CellsReleased))
	a.m.Aggregate.Cells.WithLabelValues("suppressed").Add(float64(rel.CellsSuppressed))
	a.m.Aggregate.Rho.Add(rel.Rho)
	a.log.Info("aggregate released", "round", cr.id, "survivors", len(cr.survivors), "cells_released", rel.CellsReleased,
		"cells_suppressed", rel.CellsSuppressed, "seconds", rel.Released.Sub(rel.Started).Seconds())
}

// Wait waits until round ends and returns its release, or the
// error that ended it. A round not running here is looked up among the
// stored releases (ErrUnknownRelease when it is not there).
func (a *Aggregator) Wait(ctx context.Context, round string) (*Release, error) {
	a.mu.Lock()
	cr := a.rounds[round]
	a.mu.Unlock()
	if cr == nil {
		return a.Release(ctx, round)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-cr.done:
	}
	return cr.release, cr.err
}

// Release returns a stored release.
func (a *Aggregator) Release(ctx context.Context, id string) (*Release, error) {
	var body []byte
	err := a.db.R.QueryRowContext(ctx, `SELECT body FROM aggregate_releases WHERE id = ?`, id).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("aggregate %q: %w", id, ErrUnknownRelease)
	}
	if err != nil {
		return nil, err
	}
	var rel Release
	if err := json.Unmarshal(body, &rel); err != nil {
		return nil, err
	}
	return &rel, nil
}

// Releases lists the stored releases, newest first, without their cells.
func (a *Aggregator) Releases(ctx context.Context) ([]Release, error) {
	rows, err := a.db.R.QueryContext(ctx, `SELECT body FROM aggregate_releases ORDER BY released_ms DESC, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Release{}
	for rows.Next() {
		var body []byte
		if err := rows.Scan(&body); err != nil {
			return nil, err
		}
		var rel Release
		if err := json.Unmarshal(body, &rel); err != nil {
			return nil, err
		}
		rel.Cells = nil
		if rel.Joined != nil {
			rel.Joined.Cells = nil
		}
		out = append(out, rel)
	}
	return out, rows.Err()
}

func (a *Aggregator) setQueryState(ctx context.Context, id, state string, next sql.NullInt64) {
	err := a.db.Write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE aggregate_queries SET state = ?, next_ms = ? WHERE id = ?`, state, next, id)
		return err
	})
	if err != nil {
		a.log.Warn("aggregate query state not stored", "query", id, "err", err)
	}
}

// skipRound moves a standing query whose round could not start to its next
// due time, or ends it.
func (a *Aggregator) skipRound(ctx context.Context, id string, now time.Time) {
	var signed []byte
	var sq SignedQuery
	var q Query
	err := a.db.R.QueryRowContext(ctx, `SELECT signed FROM aggregate_queries WHERE id = ?`, id).Scan(&signed)
	if err == nil {
		err = json.Unmarshal(signed, &sq)
	}
	if err == nil {
		err = json.Unmarshal(sq.Query, &q)
	}
	if err != nil {
		a.log.Warn("standing aggregate query unreadable: failed", "query", id, "err", err)
		a.setQueryState(ctx, id, "failed", sql.NullInt64{})
		return
	}
	if iv := time.Duration(q.Interval); iv > 0 && now.Add(iv).Before(q.Deadline) {
		a.setQueryState(ctx, id, "active", sql.NullInt64{Int64: now.Add(iv).UnixMilli(), Valid: true})
		return
	}
	a.setQueryState(ctx, id, "done", sql.NullInt64{})
}

// centerReleaseJoined releases a joined round: per (population cell,
// outcome cell) the noised population and outcome counts, the rate or the
// mean and their accuracy; cells under k suppressed.
func (a *Aggregator) centerReleaseJoined(ctx context.Context, cr *centerRound, sum []int64) {
	q := cr.q
	k := q.joinMinCell(a.std)
	jr, released, suppressed := joinedRelease(q, cr.plan, len(cr.survivors), sum, k)
	clear(sum)
	rel := &Release{ID: cr.id, Query: q.ID, QueryDigest: cr.digest, RecordType: q.RecordType, Dataset: q.Dataset,
		Purpose: string(q.Purpose), Measure: q.Measure, K: k, Rho: cr.plan.rho, Delta: Delta,
		Participants: slices.Sorted(slices.Values(q.Participants)), Survivors: cr.survivors, Started: cr.started.UTC(),
		Released: a.now().UTC(), CellsReleased: released, CellsSuppressed: suppressed, GroupBy: jr.PopulationGroupBy, Joined: jr}
	if len(cr.declined) > 0 {
		rel.Declined = maps.Clone(cr.declined)
	}
	var err error
	if rel.Epsilon, err = privacy.Epsilon(cr.plan.rho, Delta); err != nil {
		a.centerFail(ctx, cr, RefuseInternal, err)
		return
	}
	a.storeRelease(ctx, cr, rel)
}
