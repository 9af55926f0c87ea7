package consent

import (
	"context"
	"fmt"
	"time"

	"github.com/eduspace/eduspace/node/evidence"
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

// Export is one export, by this node as the recipient, of records it
// received that included the subject's (receive.Receiver.Export): to the
// institution's own systems, under an agreement. Its evidence entry names
// the subjects of the records exported by their keyed hashes.
type Export struct {
	Provider   string    `json:"provider"`
	Agreement  string    `json:"agreement"`
	Purpose    string    `json:"purpose"`
	LegalBasis string    `json:"legal_basis,omitempty"`
	Records    int       `json:"records"` // in the whole export, the subject's and others'
	Digest     string    `json:"digest"`  // SHA-256 of the bytes exported
	Exported   time.Time `json:"exported"`
	Evidence   int64     `json:"evidence"` // the export's entry in the evidence log
}

// SubjectReport is, for one data subject, every delivery of their data
// and, at a recipient, every export of what it received of them.
type SubjectReport struct {
	Deliveries []Delivery `json:"deliveries"`
	Exports    []Export   `json:"exports"`
}

// SubjectReport lists every delivery of the subject's records (subject is
// the subject key value, e.g. a student_id): to whom, when, under which
// agreement and purpose, which fields, and the erasure state; and every
// export of records this node received of the subject (found by the value
// as received: the student number where the agreement delivers it in
// clear, else the provider's token for this node).
func (l *Ledger) SubjectReport(ctx context.Context, subject string) (SubjectReport, error) {
	hash := l.ev.Subject(subject)
	deliveries, err := l.out.Deliveries(ctx, nil, hash, "")
	if err != nil {
		return SubjectReport{}, fmt.Errorf("subject report: %w", err)
	}
	exports, err := l.ev.About(ctx, evidence.KindExport, hash)
	if err != nil {
		return SubjectReport{}, fmt.Errorf("subject report: %w", err)
	}
	rep := SubjectReport{Deliveries: []Delivery{}, Exports: []Export{}}
	for _, e := range exports {
		rep.Exports = append(rep.Exports, Export{Provider: e.Peer, Agreement: e.Agreement, Purpose: e.Purpose, LegalBasis: e.LegalBasis,
			Records: e.Count, Digest: e.Digest, Exported: time.UnixMilli(e.Time).UTC(), Evidence: e.Seq})
	}
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
