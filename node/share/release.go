package share

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Decided is one held record decided under an agreement for a dataset
// release (node/release): what policy.Decide says of it and, when it
// permits, the fields that would leave, transformed as the decision says
// (direct identifiers tokenised for the recipient).
type Decided struct {
	Type string
	// Subject is the subject's keyed evidence hash ("" for a record
	// without a subject).
	Subject  string
	Labels   schema.Labels
	Decision policy.Decision
	// Fields are the record's fields as they would leave (permit only).
	Fields map[string]any
	// IngestedMs is when the node stored the record (Unix ms).
	IngestedMs int64
	// Withdrawn is set when the ledger holds a consent of the subject for
	// the agreement's purpose and recipient that was withdrawn, and none
	// stands.
	Withdrawn bool
}

// DecideHeld decides every record the node holds of the given types (all
// the agreement's types when none are given) under agreementID, as a
// share would (policy, consent ledger, the recipient's volume this year),
// and hands each to fn, without sending anything or marking anything
// shared. Fields of the agreement for which omit returns true (nil: none)
// are taken out of it first, as if it did not list them. A release
// (node/release) decides its whole input with it before it produces any
// data.
func (n *Sharer) DecideHeld(ctx context.Context, agreementID string, types []string, omit func(typ, field string) bool, fn func(Decided) error) error {
	n.lock.Lock()
	defer n.lock.Unlock()
	s, err := n.newShareRun(ctx, agreementID)
	if err == nil {
		err = s.load(ctx)
	}
	if err != nil {
		return err
	}
	// What this pass counts into the recipient's volume was not sent: the
	// next share loads the volume again from the deliveries.
	defer delete(n.volumes, s.a.Recipient)
	if len(types) == 0 {
		for t := range s.a.RecordTypes {
			types = append(types, t)
		}
	}
	sort.Strings(types)
	if omit != nil {
		for t, fields := range s.a.RecordTypes {
			s.a.RecordTypes[t] = slices.DeleteFunc(fields, func(f string) bool { return omit(t, f) })
		}
	}
	tz := crypto.NewTokenizer(s.tokenKey)
	for _, typ := range types {
		if _, ok := s.a.RecordTypes[typ]; !ok {
			return fmt.Errorf("release: record type %q is not in agreement %s (it has %v)", typ, s.a.ID, slices.Sorted(maps.Keys(s.a.RecordTypes)))
		}
		if err := s.decideAll(ctx, typ, tz, fn); err != nil {
			return err
		}
	}
	return nil
}

// decideAll decides the held records of one type, a page at a time
// (readRecords), shared already or not.
func (s *shareRun) decideAll(ctx context.Context, typ string, tz *crypto.Tokenizer, fn func(Decided) error) error {
	parser := schema.NewLineParser(typ)
	row := new(schema.Row)
	return s.readRecords(ctx, "release", typ, heldRange{since: math.MinInt64, upto: math.MaxInt64}, func(got []heldRecord) error {
		for _, r := range got {
			now := s.n.now()
			if verr := parser.ParseRow(r.body, s.n.std, row); verr != nil {
				s.n.log.Warn("stored record does not validate under the standard; not released", "record", r.id)
				continue
			}
			labels, err := s.n.labels(row, r.labels, now)
			if err != nil {
				s.n.log.Warn("stored record does not classify under the standard; not released", "record", r.id)
				continue
			}
			if labels, err = s.carryMinor(ctx, labels, now); err != nil {
				return err
			}
			sk := subjectKey(s.n.ev.SubjectSum(labels.Subject))
			d := Decided{Type: typ, Labels: labels, IngestedMs: r.ingestedMs}
			if labels.Subject != "" {
				d.Subject = hex.EncodeToString(sk[:])
			}
			prev, had := s.vol.seen[sk]
			d.Decision = policy.Decide(s.n.rules, policy.Input{
				Provider: s.n.nodeID, Recipient: s.a.Recipient, RecipientRole: string(s.role),
				Labels: labels, Agreement: s.a, Consent: s.consentState(labels, now),
				VolumeSoFar:    s.vol.volL3 - b2i(had && prev >= schema.L3),
				SensitiveSoFar: s.vol.volL4 - b2i(had && prev >= schema.L4),
				SubjectsSoFar:  s.vol.volAny - b2i(had),
				Now:            now,
			})
			if d.Decision.Permit {
				s.vol.count(sk, prev, had, d.Decision.Level)
				line := policy.AppendRow(nil, row, d.Decision, tz)
				dec := json.NewDecoder(bytes.NewReader(line))
				dec.UseNumber()
				if err := dec.Decode(&d.Fields); err != nil {
					return fmt.Errorf("release: record %d as it would leave: %w", r.id, err)
				}
				delete(d.Fields, "type")
			} else {
				d.Withdrawn = s.withdrawn(labels.Subject)
			}
			if err := fn(d); err != nil {
				return err
			}
		}
		return nil
	})
}

// withdrawn tells whether the subject withdrew a consent for the run's
// purpose and recipient and holds none that stands.
func (s *shareRun) withdrawn(subject string) bool {
	recs := s.consents[subject]
	found := false
	for _, c := range recs {
		if c.Purpose != s.a.Purpose || !c.CoversRecipient(s.a.Recipient) {
			continue
		}
		if c.Withdrawn.IsZero() {
			return false
		}
		found = true
	}
	return found
}

// ReleaseRow is one row of a release ready to leave: its wire fields and,
// for a de-identified row, its subject's evidence hash and level.
type ReleaseRow struct {
	Fields  map[string]any
	Subject string // "" for a synthetic row
	Level   schema.Level
	// Line is the row's wire line (ReleaseLine of its type and Fields),
	// when the caller has it already; nil: SendRelease writes it.
	Line []byte
}

// SendRelease seals the rows of a release (node/release) under
// agreementID to its recipient as envelopes of records of type typ, and
// writes them to the outbox with their deliveries, as a share does: the
// recipient stores them as received records, and the provider's subject
// report and erasure requests find the subjects that went. It returns the
// envelope ids, in order. The rows are not decided again: the release
// decided their sources with DecideHeld and wrote its own evidence.
func (n *Sharer) SendRelease(ctx context.Context, agreementID, typ string, rows []ReleaseRow) ([]string, error) {
	if len(rows) == 0 {
		return nil, errors.New("release: no rows to send")
	}
	lines := make([][]byte, len(rows))
	for i, r := range rows {
		if lines[i] = r.Line; lines[i] != nil {
			continue
		}
		var err error
		if lines[i], err = ReleaseLine(typ, r.Fields); err != nil {
			return nil, err
		}
	}
	n.lock.Lock()
	defer n.lock.Unlock()
	s, err := n.newShareRun(ctx, agreementID)
	if err != nil {
		return nil, err
	}
	s.sl = n.startSealer(ctx, s)
	b := &pending{typ: typ}
	for i, r := range rows {
		b.buf = append(append(b.buf, lines[i]...), '\n')
		b.count++
		b.level = max(b.level, r.Level)
		if r.Subject != "" {
			b.subjects = append(b.subjects, r.Subject)
			b.items = append(b.items, deliveryItem{subject: r.Subject, level: r.Level, fields: fieldList(r.Fields)})
		}
		if b.count >= n.maxRecords || len(b.buf) >= s.maxPlain || i == len(rows)-1 {
			if err = s.flush(ctx, b); err != nil {
				break
			}
		}
	}
	// Whatever failed, the envelopes committed before it are on their way:
	// they are returned with the error.
	err = errors.Join(err, s.finish())
	return s.sl.eids, err
}

// ReleaseLine writes one release row of type typ as the wire line
// SendRelease sends, without its newline (what a release's digest
// covers): its type, then its fields in name order.
func ReleaseLine(typ string, fields map[string]any) ([]byte, error) {
	names := slices.Sorted(maps.Keys(fields))
	line := appendWireType(nil, typ)
	for _, name := range names {
		v, err := json.Marshal(fields[name])
		if err != nil {
			return nil, fmt.Errorf("release: field %s: %w", name, err)
		}
		line = schema.AppendJSONString(append(line, ','), name)
		line = append(append(line, ':'), v...)
	}
	return append(line, '}'), nil
}

func appendWireType(dst []byte, typ string) []byte {
	return schema.AppendJSONString(append(dst, `{"type":`...), typ)
}

// fieldList is the names of fields, sorted, comma-separated: the fields
// of a delivery.
func fieldList(fields map[string]any) string {
	return strings.Join(slices.Sorted(maps.Keys(fields)), ",")
}
