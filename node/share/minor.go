package share

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// carryMinor flags labels "minor" when the record itself cannot show its
// subject's age (a course grade has no birth date) but another record this
// node holds of the same subject does, and shows a minor at now (C3): the
// minor rule then asks for a guardian's consent for every record of the
// subject, not only for the ones that carry the birth date. When the node
// holds no record that can show this subject's age, the person is unknown
// to it: it flags labels "age_unknown", which the rules decide as strictly
// as a minor's (policy.FlagAgeUnknown, reason person_unknown). This holds
// on a node that keeps no person record of the kind at all (a feed of
// grades) too, unless the space's rulebook sets unknown_person_strict
// false; a node that keeps the person records of the subject's kind (it
// holds student records) but none of this subject flags it either way.
func (s *shareRun) carryMinor(ctx context.Context, labels schema.Labels, now time.Time) (schema.Labels, error) {
	if labels.Subject == "" || !labels.BirthDate.IsZero() || slices.Contains(labels.Flags, "minor") {
		return labels, nil
	}
	if t, ok := s.n.std.Type(labels.Type); !ok || t.ShowsAge() {
		return labels, nil // its own C3 decided
	}
	m := s.minors
	m.once.Do(func() { m.births, m.known, m.err = s.n.loadBirths(ctx, now) })
	if m.err != nil {
		return labels, m.err
	}
	subject := s.n.subjectColumn(labels.Subject)
	if birth, ok := m.births[subject]; ok && s.n.std.Under(birth, now) {
		labels.Flags = append(slices.Clone(labels.Flags), "minor")
	} else if !m.known[subject] && (m.known[rosterKey(labels.SubjectKey)] || s.n.rules.UnknownPersonStrict) {
		labels.Flags = append(slices.Clone(labels.Flags), policy.FlagAgeUnknown)
	}
	return labels, nil
}

// rosterKey is the key under which minorState.known notes that the node
// holds records that can show an age of subjects named by subjectKey
// (student_id): no subject hash has its form.
func rosterKey(subjectKey string) string { return "roster:" + subjectKey }

// minorState is a run's view of the subjects' birth dates, and of the
// subjects of which a record that can show an age is held, read once per
// run and shared by its deciders.
type minorState struct {
	once   sync.Once
	births map[string]time.Time
	known  map[string]bool
	err    error
}

// births caches, across runs, the subjects of which a record that can
// show an age is held, and the birth date each subject's held records
// show (keyed hashes, as the records table keeps subjects; the latest date
// where records disagree, so that a subject any record shows as a minor is
// one); birthsAfter is the last record read into it. Both are guarded by
// the shares lock, which every run holds.
type births struct {
	dates map[string]time.Time
	known map[string]bool // every subject of a held record that can show an age, and rosterKey of its subject key
	after int64
}

// loadBirths reads the birth dates of the records of every type that can
// show an age stored since the last run, and returns the cache. A run
// reads what was ingested since the one before it, not every record held.
// Held records are deleted only by an erasure the provider performs on its
// own records, where a birth date left behind can only make a record
// stricter.
func (n *Sharer) loadBirths(ctx context.Context, now time.Time) (map[string]time.Time, map[string]bool, error) {
	if n.birthCache.dates == nil {
		n.birthCache.dates, n.birthCache.known = map[string]time.Time{}, map[string]bool{}
	}
	var types []string
	roster := map[string]string{} // type → rosterKey of its subject key
	for _, typ := range n.std.Types() {
		if t, _ := n.std.Type(typ); t.ShowsAge() {
			types = append(types, typ)
			roster[typ] = rosterKey(t.SubjectKey())
		}
	}
	next := n.birthCache.after
	for _, typ := range types {
		rows, err := n.db.R.QueryContext(ctx, `SELECT id, subject, key, body, labels FROM records WHERE type = ? AND id > ? ORDER BY id`,
			typ, n.birthCache.after)
		if err != nil {
			return nil, nil, fmt.Errorf("share: read subjects' ages: %w", err)
		}
		last := n.birthCache.after
		for rows.Next() {
			var id int64
			var subject string
			var key, body, stored []byte
			if err := rows.Scan(&id, &subject, &key, &body, &stored); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("share: read subjects' ages: %w", err)
			}
			last = max(last, id)
			if !isSubjectHash(subject) {
				subject = n.subjectColumn(subject) // stored in clear, before SealHeld
			}
			n.birthCache.known[subject] = true
			n.birthCache.known[roster[typ]] = true
			if body, stored, err = n.openHeld(key, body, stored); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("share: read subjects' ages: %w", err)
			}
			var birth time.Time
			if l, err := n.std.ParseLabels(stored); stored != nil && err == nil {
				birth = l.BirthDate
			} else {
				// Held from before labels were stored: classified again.
				dec := json.NewDecoder(bytes.NewReader(body))
				dec.UseNumber()
				rec := schema.Record{Type: typ}
				if dec.Decode(&rec.Fields) == nil {
					if l, err := n.std.Classify(rec, now); err == nil {
						birth = l.BirthDate
					}
				}
			}
			if birth.IsZero() {
				continue
			}
			if prev, ok := n.birthCache.dates[subject]; !ok || birth.After(prev) {
				n.birthCache.dates[subject] = birth
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("share: read subjects' ages: %w", err)
		}
		next = max(next, last)
	}
	// Every type was read from the same point: the cache moves on once all
	// are read.
	n.birthCache.after = next
	return n.birthCache.dates, n.birthCache.known, nil
}
