package node

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Delivery is one envelope that carried a data subject's record.
type Delivery struct {
	Recipient  string     `json:"recipient"`
	Agreement  string     `json:"agreement"`
	Purpose    string     `json:"purpose"`
	RecordType string     `json:"record_type"`
	Level      string     `json:"level"`
	Fields     []string   `json:"fields"`
	Envelope   string     `json:"envelope"`
	Sealed     time.Time  `json:"sealed"`
	Sent       *time.Time `json:"sent,omitempty"`     // JetStream acknowledged it
	Received   *time.Time `json:"received,omitempty"` // the recipient's signed receipt arrived
	// Erasure is "" (none asked), "requested" or "confirmed".
	Erasure          string     `json:"erasure,omitempty"`
	ErasureRequested *time.Time `json:"erasure_requested,omitempty"`
	ErasureConfirmed *time.Time `json:"erasure_confirmed,omitempty"`
}

// SubjectReport is, for one data subject, every delivery of their data.
type SubjectReport struct {
	Deliveries []Delivery `json:"deliveries"`
}

func msTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

// SubjectReport lists every delivery of the subject's records (subject is
// the subject key value, e.g. a student_id): to whom, when, under which
// agreement and purpose, which fields, and the erasure state.
func (n *Node) SubjectReport(ctx context.Context, subject string) (SubjectReport, error) {
	rows, err := n.db.R.QueryContext(ctx, `SELECT o.recipient, coalesce(o.agreement, ''), coalesce(o.purpose, ''), coalesce(o.record_type, ''),
			d.level, d.fields, o.envelope_id, o.created_ms, o.sent_ms, o.receipt_ms,
			(SELECT max(e.requested_ms) FROM erasures e WHERE e.subject = d.subject AND e.recipient = o.recipient AND e.agreement = o.agreement),
			(SELECT max(e.confirmed_ms) FROM erasures e WHERE e.subject = d.subject AND e.recipient = o.recipient AND e.agreement = o.agreement)
		FROM deliveries d JOIN outbox o ON o.envelope_id = d.envelope_id
		WHERE d.subject = ? ORDER BY o.created_ms, o.envelope_id`, n.ev.Subject(subject))
	if err != nil {
		return SubjectReport{}, fmt.Errorf("subject report: %w", err)
	}
	defer rows.Close()
	rep := SubjectReport{Deliveries: []Delivery{}}
	for rows.Next() {
		var d Delivery
		var fields string
		var created int64
		var sent, receipt, requested, confirmed sql.NullInt64
		if err := rows.Scan(&d.Recipient, &d.Agreement, &d.Purpose, &d.RecordType, &d.Level, &fields, &d.Envelope,
			&created, &sent, &receipt, &requested, &confirmed); err != nil {
			return SubjectReport{}, fmt.Errorf("subject report: %w", err)
		}
		d.Fields = strings.Split(fields, ",")
		d.Sealed = time.UnixMilli(created).UTC()
		d.Sent, d.Received = msTime(sent), msTime(receipt)
		d.ErasureRequested, d.ErasureConfirmed = msTime(requested), msTime(confirmed)
		switch {
		case confirmed.Valid:
			d.Erasure = "confirmed"
		case requested.Valid:
			d.Erasure = "requested"
		}
		rep.Deliveries = append(rep.Deliveries, d)
	}
	return rep, rows.Err()
}
