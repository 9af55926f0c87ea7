package share

import (
	"context"
	"encoding/hex"
	"slices"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// record is a record to decide: a map record (held, or from a reader of
// records) or a row parsed from an NDJSON line.
type record struct {
	rec *schema.Record
	row *schema.Row
}

// appendWire appends the record as one wire line, as d says.
func (r record) appendWire(dst []byte, d policy.Decision, tz *crypto.Tokenizer) []byte {
	if r.row != nil {
		return policy.AppendRow(dst, r.row, d, tz)
	}
	return policy.AppendRecord(dst, *r.rec, d, tz)
}

// decide decides one classified record (id is its row in the records
// table, 0 for a streamed record) at now and packs it when permitted.
func (s *shareRun) decide(ctx context.Context, rec record, labels schema.Labels, id int64, now time.Time) error {
	n := s.n
	labels, err := s.carryMinor(ctx, labels, now)
	if err != nil {
		return err
	}
	typ := labels.Type
	s.res.Considered++
	sk := subjectKey(n.ev.SubjectSum(labels.Subject))
	subject := hex.EncodeToString(sk[:])
	b := s.lastBatch
	if b == nil || b.typ != typ {
		if b = s.batches[typ]; b == nil {
			b = &pending{typ: typ}
			s.batches[typ] = b
		}
		s.lastBatch = b
	}
	var last *policy.Decision
	if b.last.Permit {
		last = &b.last
	}
	s.volMu.Lock()
	prev, had := s.vol.seen[sk]
	d := policy.Decide(n.rules, policy.Input{
		Provider: n.nodeID, Recipient: s.a.Recipient, RecipientRole: string(s.role),
		Labels: labels, Agreement: s.a, Consent: s.consentState(labels, now),
		VolumeSoFar:    s.vol.volL3 - b2i(had && prev >= schema.L3),
		SensitiveSoFar: s.vol.volL4 - b2i(had && prev >= schema.L4),
		SubjectsSoFar:  s.vol.volAny - b2i(had),
		Now:            now,
		Previous:       last,
	})
	if d.Permit {
		s.vol.count(sk, prev, had, d.Level)
	}
	s.volMu.Unlock()
	g := s.lastGroup
	if g == nil || g.rule != d.Rule || g.reason != string(d.Reason) {
		g = s.decisionGroup(d)
	}
	g.subjects = append(g.subjects, subject)
	g.counter.Inc()
	if !d.Permit {
		s.res.Denied[string(d.Reason)]++
		return nil
	}
	s.res.Permitted++
	b.last = d
	if s.tz == nil {
		s.tz = crypto.NewTokenizer(s.tokenKey)
	}
	b.buf = rec.appendWire(b.buf, d, s.tz)
	b.count++
	b.level = max(b.level, d.Level)
	if id != 0 {
		b.records = append(b.records, id)
	}
	b.subjects = append(b.subjects, subject)
	b.items = append(b.items, deliveryItem{subject: subject, level: d.Level, fields: s.keptFields(d)})
	if b.count >= n.maxRecords || len(b.buf) >= s.maxPlain {
		return s.flush(ctx, b)
	}
	return nil
}

// decisionGroup returns the group of the decisions made by d's rule for
// d's reason since the last envelope, and makes it the last group.
func (s *shareRun) decisionGroup(d policy.Decision) *decisionGroup {
	key := [2]string{d.Rule, string(d.Reason)}
	g := s.decisions[key]
	if g == nil {
		outcome := "deny"
		if d.Permit {
			outcome = "permit"
		}
		g = &decisionGroup{rule: d.Rule, reason: string(d.Reason),
			counter: s.n.m.Decisions.WithLabelValues(outcome, string(d.Reason))}
		s.decisions[key] = g
	}
	s.lastGroup = g
	return g
}

// maxEnvelopePlaintext is the most plaintext an envelope closes at,
// whatever batch.max_records says: with a record of MaxLineBytes more, it
// stays within the 8 MiB that crypto.Open and a receiver's decompression
// accept.
const maxEnvelopePlaintext = 4 << 20

// EnvelopePlaintext is the plaintext at which this node's envelopes close:
// half the largest message its NATS server accepts, at most
// maxEnvelopePlaintext. An envelope closes once it reaches that, so it
// exceeds it by less than one record: sealed, it fits the server even if
// its records do not compress, unless that record is itself near half the
// server's maximum. NATS's default maximum of 1 MiB gives 512 KiB, about
// 900 records of 600 bytes; the embedded server's 8 MiB
// (bus.EmbeddedMaxPayload) gives 4 MiB. A server that does not say gives
// 512 KiB.
func (n *Sharer) EnvelopePlaintext() int { return envelopePlaintextFor(n.maxPayload()) }

func envelopePlaintextFor(maxPayload int64) int {
	if maxPayload <= 0 {
		return 512 << 10
	}
	return int(max(min(maxPayload/2, maxEnvelopePlaintext), 1))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// keptFields lists the fields a permitted record takes out, comma-separated.
// Records of one feed mostly take the same fields out: the last list is
// kept and given again while the actions stay the same.
func (s *shareRun) keptFields(d policy.Decision) string {
	same := len(d.Actions) == len(s.lastActions) && (len(d.Actions) == 0 || &d.Actions[0] == &s.lastActions[0]) // policy reused them
	if s.lastKept != "" && (same || slices.Equal(d.Actions, s.lastActions)) {
		return s.lastKept
	}
	s.lastActions = d.Actions // a decision's actions are not modified
	s.lastKept = keptFields(d)
	return s.lastKept
}

func keptFields(d policy.Decision) string {
	var b []byte
	for _, a := range d.Actions {
		if a.Transform == policy.TransformDrop {
			continue
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = append(b, a.Field...)
	}
	return string(b)
}

// consentState is what the ledger says for one record about to be decided.
// It is looked up only where consent can matter: a consent basis, sensitive
// data, a minor, or model training (which needs the subject's standing
// consent whatever the basis).
func (s *shareRun) consentState(labels schema.Labels, now time.Time) policy.Consent {
	if len(s.consents) == 0 {
		return policy.Consent{}
	}
	need := s.a.LegalBasis == policy.BasisConsent || labels.Level >= s.n.rules.SensitiveLevel ||
		s.a.Purpose == policy.PurposeModelTraining
	for _, f := range labels.Flags {
		need = need || f == "minor" || f == policy.FlagAgeUnknown
	}
	if !need {
		return policy.Consent{}
	}
	recs := s.consents[labels.Subject]
	if len(recs) == 0 {
		return policy.Consent{}
	}
	cats := policy.LeavingCategories(s.n.rules, s.a, labels)
	return policy.ConsentState(recs, labels.Subject, s.a.Purpose, s.a.Recipient, cats, now)
}
