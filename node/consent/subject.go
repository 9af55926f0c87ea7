package consent

import (
	"context"
	"fmt"
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
	// Refused is the reason the recipient's signed receipt gave for
	// refusing the envelope: it never stored the records.
	Refused string `json:"refused,omitempty"`
	// Erasure is "" (none asked), "requested" or "confirmed".
	Erasure          string     `json:"erasure,omitempty"`
	ErasureRequested *time.Time `json:"erasure_requested,omitempty"`
	ErasureConfirmed *time.Time `json:"erasure_confirmed,omitempty"`
}

// SubjectReport is, for one data subject, every delivery of their data.
type SubjectReport struct {
	Deliveries []Delivery `json:"deliveries"`
}

// SubjectReport lists every delivery of the subject's records (subject is
// the subject key value, e.g. a student_id): to whom, when, under which
// agreement and purpose, which fields, and the erasure state.
func (l *Ledger) SubjectReport(ctx context.Context, subject string) (SubjectReport, error) {
	hash := l.ev.Subject(subject)
	deliveries, err := l.out.Deliveries(ctx, nil, hash, "")
	if err != nil {
		return SubjectReport{}, fmt.Errorf("subject report: %w", err)
	}
	rep := SubjectReport{Deliveries: []Delivery{}}
	type pair struct{ recipient, agreement string }
	erasures := map[pair][2]*time.Time{}
	for _, od := range deliveries {
		d := Delivery{Recipient: od.Recipient, Agreement: od.Agreement, Purpose: od.Purpose, RecordType: od.RecordType,
			Level: od.Level, Fields: od.Fields, Envelope: od.Envelope, Sealed: od.Created, Sent: od.Sent, Received: od.Receipt, Refused: od.Refused}
		p := pair{od.Recipient, od.Agreement}
		e, ok := erasures[p]
		if !ok {
			if e[0], e[1], err = l.ErasureState(ctx, hash, od.Recipient, od.Agreement); err != nil {
				return SubjectReport{}, fmt.Errorf("subject report: %w", err)
			}
			erasures[p] = e
		}
		d.ErasureRequested, d.ErasureConfirmed = e[0], e[1]
		switch {
		case e[1] != nil:
			d.Erasure = "confirmed"
		case e[0] != nil:
			d.Erasure = "requested"
		}
		rep.Deliveries = append(rep.Deliveries, d)
	}
	return rep, nil
}
