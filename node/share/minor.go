package share

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// carryMinor flags labels "minor" when the record itself cannot show its
// subject's age (a course grade has no birth date) but another record this
// node holds of the same subject does, and shows a minor at now (C3): the
// minor rule then asks for a guardian's consent for every record of the
// subject, not only for the ones that carry the birth date.
func (s *shareRun) carryMinor(ctx context.Context, labels schema.Labels, now time.Time) (schema.Labels, error) {
	if labels.Subject == "" || !labels.BirthDate.IsZero() || slices.Contains(labels.Flags, "minor") {
		return labels, nil
	}
	if t, ok := s.n.std.Type(labels.Type); !ok || t.ShowsAge() {
		return labels, nil // its own C3 decided
	}
	s.minorsOnce.Do(func() { s.minors, s.minorsErr = s.loadMinors(ctx, now) })
	if s.minorsErr != nil {
		return labels, s.minorsErr
	}
	if s.minors[s.n.subjectColumn(labels.Subject)] {
		labels.Flags = append(slices.Clone(labels.Flags), "minor")
	}
	return labels, nil
}

// loadMinors reads the subjects (keyed hashes, as the records table keeps
// them) whose held records show them under the minor age at now: every
// record of a type that can show an age.
func (s *shareRun) loadMinors(ctx context.Context, now time.Time) (map[string]bool, error) {
	minors := map[string]bool{}
	for _, typ := range s.n.std.Types() {
		t, _ := s.n.std.Type(typ)
		if !t.ShowsAge() {
			continue
		}
		rows, err := s.n.db.R.QueryContext(ctx, `SELECT subject, key, body, labels FROM records WHERE type = ?`, typ)
		if err != nil {
			return nil, fmt.Errorf("share: read subjects' ages: %w", err)
		}
		for rows.Next() {
			var subject string
			var key, body, stored []byte
			if err := rows.Scan(&subject, &key, &body, &stored); err != nil {
				rows.Close()
				return nil, fmt.Errorf("share: read subjects' ages: %w", err)
			}
			if !isSubjectHash(subject) {
				subject = s.n.subjectColumn(subject) // stored in clear, before SealHeld
			}
			if minors[subject] {
				continue
			}
			if body, stored, err = s.n.openHeld(key, body, stored); err != nil {
				rows.Close()
				return nil, fmt.Errorf("share: read subjects' ages: %w", err)
			}
			var birth time.Time
			if l, err := s.n.std.ParseLabels(stored); stored != nil && err == nil {
				birth = l.BirthDate
			} else {
				// Held from before labels were stored: classified again.
				dec := json.NewDecoder(bytes.NewReader(body))
				dec.UseNumber()
				rec := schema.Record{Type: typ}
				if dec.Decode(&rec.Fields) == nil {
					if l, err := s.n.std.Classify(rec, now); err == nil {
						birth = l.BirthDate
					}
				}
			}
			minors[subject] = s.n.std.Under(birth, now)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("share: read subjects' ages: %w", err)
		}
	}
	return minors, nil
}
