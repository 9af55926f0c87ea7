package node

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// ShareResult sums up one share request.
type ShareResult struct {
	Agreement  string         `json:"agreement"`
	Recipient  string         `json:"recipient"`
	Considered int            `json:"considered"`
	Permitted  int            `json:"permitted"`
	Denied     map[string]int `json:"denied"` // reason code → records
	Envelopes  int            `json:"envelopes"`
}

// wireRecord is one record inside an envelope's plaintext (one JSON object
// per line).
type wireRecord struct {
	Type   string         `json:"type"`
	Level  string         `json:"level"`
	Fields map[string]any `json:"fields"`
}

// pending is an envelope being filled for one record type.
type pending struct {
	typ      string
	buf      bytes.Buffer
	count    int
	level    schema.Level
	records  []int64
	subjects []string
}

// decisionGroup gathers the decisions of one flush that share rule and
// reason, for one evidence entry.
type decisionGroup struct {
	rule, reason string
	subjects     []string
}

// shareRun is the state of one Share call.
type shareRun struct {
	n         *Node
	a         *policy.Agreement
	to        *crypto.KEMPublicKey
	role      crypto.Role
	tokenKey  []byte
	res       ShareResult
	batches   map[string]*pending
	decisions map[[2]string]*decisionGroup
}

// Share sends every record the node holds of the agreement's record types
// that has not yet gone out under it, as far as policy permits: each record
// is decided alone; permitted records are transformed as the decision says,
// packed into envelopes per record type, sealed to the recipient, signed,
// and written to the outbox together with the decision's evidence. The
// relay then publishes them. Denied records are counted by reason and stay
// eligible for a later share.
func (n *Node) Share(ctx context.Context, agreementID string) (ShareResult, error) {
	n.shareMu.Lock()
	defer n.shareMu.Unlock()
	a, err := n.agreement(ctx, agreementID)
	if err != nil {
		return ShareResult{}, err
	}
	if a.Provider != n.cfg.NodeID {
		return ShareResult{}, fmt.Errorf("share under agreement %s: this node is not its provider", a.ID)
	}
	cred, err := n.reg.lookup(ctx, a.Recipient)
	if err != nil {
		return ShareResult{}, fmt.Errorf("share under agreement %s: recipient: %w", a.ID, err)
	}
	to := cred.CurrentKEMKey()
	if to == nil {
		return ShareResult{}, fmt.Errorf("share under agreement %s: recipient %s has no KEM key", a.ID, a.Recipient)
	}
	s := &shareRun{
		n: n, a: a, to: to, role: cred.Role,
		tokenKey:  crypto.TokenKey(n.keys.derive("tokens"), a.Recipient),
		res:       ShareResult{Agreement: a.ID, Recipient: a.Recipient, Denied: map[string]int{}},
		batches:   map[string]*pending{},
		decisions: map[[2]string]*decisionGroup{},
	}
	types := make([]string, 0, len(a.RecordTypes))
	for t := range a.RecordTypes {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, typ := range types {
		if err := s.shareType(ctx, typ); err != nil {
			return s.res, err
		}
	}
	if err := s.flushAll(ctx); err != nil {
		return s.res, err
	}
	n.wakeRelay()
	return s.res, nil
}

// shareType walks the records of one type in pages, so memory stays flat.
func (s *shareRun) shareType(ctx context.Context, typ string) error {
	const page = 1000
	var after int64
	for {
		rows, err := s.n.db.R.QueryContext(ctx, `SELECT id, body FROM records r
			WHERE type = ? AND id > ? AND NOT EXISTS (SELECT 1 FROM shared s WHERE s.agreement = ? AND s.record_id = r.id)
			ORDER BY id LIMIT ?`, typ, after, s.a.ID, page)
		if err != nil {
			return fmt.Errorf("share: read records: %w", err)
		}
		type row struct {
			id   int64
			body []byte
		}
		var got []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.body); err != nil {
				rows.Close()
				return fmt.Errorf("share: read records: %w", err)
			}
			got = append(got, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("share: read records: %w", err)
		}
		for _, r := range got {
			if err := s.decide(ctx, typ, r.id, r.body); err != nil {
				return err
			}
		}
		if len(got) < page {
			return nil
		}
		after = got[len(got)-1].id
	}
}

func (s *shareRun) decide(ctx context.Context, typ string, id int64, body []byte) error {
	n := s.n
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	rec := schema.Record{Type: typ}
	if err := dec.Decode(&rec.Fields); err != nil {
		return fmt.Errorf("share: decode stored record %d: %w", id, err)
	}
	now := n.now()
	labels, err := n.std.Classify(rec, now)
	if err != nil {
		// The record was valid at ingest; the standard has changed since.
		// It cannot be judged, so it does not leave.
		n.log.Warn("stored record no longer validates; not shared", "record", id, "err", err)
		return nil
	}
	s.res.Considered++
	d := policy.Decide(n.rules, policy.Input{
		Provider: n.cfg.NodeID, Recipient: s.a.Recipient, RecipientRole: string(s.role),
		Labels: labels, Agreement: s.a, Now: now,
	})
	subject := n.ev.Subject(labels.Subject)
	key := [2]string{d.Rule, string(d.Reason)}
	g := s.decisions[key]
	if g == nil {
		g = &decisionGroup{rule: d.Rule, reason: string(d.Reason)}
		s.decisions[key] = g
	}
	g.subjects = append(g.subjects, subject)
	outcome := "deny"
	if d.Permit {
		outcome = "permit"
	}
	n.m.decisions.WithLabelValues(outcome, string(d.Reason)).Inc()
	if !d.Permit {
		s.res.Denied[string(d.Reason)]++
		return nil
	}
	s.res.Permitted++
	fields := policy.Apply(rec, d, func(v string) string { return crypto.Token(s.tokenKey, v) })
	line, err := json.Marshal(wireRecord{Type: typ, Level: d.Level.String(), Fields: fields})
	if err != nil {
		return fmt.Errorf("share: encode record: %w", err)
	}
	b := s.batches[typ]
	if b == nil {
		b = &pending{typ: typ}
		s.batches[typ] = b
	}
	b.buf.Write(line)
	b.buf.WriteByte('\n')
	b.count++
	b.level = max(b.level, d.Level)
	b.records = append(b.records, id)
	b.subjects = append(b.subjects, subject)
	if b.count >= n.cfg.Batch.MaxRecords {
		return s.flush(ctx, b)
	}
	return nil
}

func (s *shareRun) flushAll(ctx context.Context) error {
	types := make([]string, 0, len(s.batches))
	for t := range s.batches {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		if b := s.batches[t]; b.count > 0 {
			if err := s.flush(ctx, b); err != nil {
				return err
			}
		}
	}
	if len(s.decisions) > 0 {
		return s.n.db.Write(ctx, func(tx *sql.Tx) error { return s.writeDecisions(ctx, tx) })
	}
	return nil
}

// writeDecisions appends the gathered decisions to the evidence log, one
// entry per rule and reason, and forgets them.
func (s *shareRun) writeDecisions(ctx context.Context, tx *sql.Tx) error {
	keys := make([][2]string, 0, len(s.decisions))
	for k := range s.decisions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		g := s.decisions[k]
		if err := s.n.ev.Append(ctx, tx, evidence.Entry{
			Kind: evidence.KindDecide, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
			Rule: g.rule, Reason: g.reason, Count: len(g.subjects), Subjects: g.subjects,
		}); err != nil {
			return err
		}
	}
	clear(s.decisions)
	return nil
}

// flush seals one envelope and writes it to the outbox in one transaction
// with the records it marks as shared, the pair sequence number and the
// evidence of the decisions so far.
func (s *shareRun) flush(ctx context.Context, b *pending) error {
	n := s.n
	var eid string
	err := n.db.Write(ctx, func(tx *sql.Tx) error {
		var err error
		eid, err = n.enqueue(ctx, tx, crypto.Header{
			Recipient: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose), RecordType: b.typ,
			Count: uint32(b.count), Level: b.level.String(), Kind: crypto.KindRecords,
		}, s.to, n.layout.DeliverSubject(s.a.Recipient, n.cfg.NodeID), b.buf.Bytes(), b.count)
		if err != nil {
			return fmt.Errorf("share: %w", err)
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO shared(agreement, record_id, envelope_id) VALUES (?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("share: %w", err)
		}
		defer stmt.Close()
		for _, id := range b.records {
			if _, err := stmt.ExecContext(ctx, s.a.ID, id, eid); err != nil {
				return fmt.Errorf("share: mark shared: %w", err)
			}
		}
		if err := s.writeDecisions(ctx, tx); err != nil {
			return err
		}
		return n.ev.Append(ctx, tx, evidence.Entry{
			Kind: evidence.KindSeal, Peer: s.a.Recipient, Agreement: s.a.ID, Purpose: string(s.a.Purpose),
			Envelope: eid, Count: b.count, Subjects: b.subjects, Detail: map[string]int{b.typ + "/" + b.level.String(): b.count},
		})
	})
	if err != nil {
		return err
	}
	n.m.sealed.Inc()
	n.m.sealedRec.Add(float64(b.count))
	s.res.Envelopes++
	b.buf.Reset()
	b.count, b.level = 0, schema.LevelUnknown
	b.records, b.subjects = b.records[:0], nil
	n.wakeRelay()
	return nil
}
