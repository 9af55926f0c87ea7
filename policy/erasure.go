package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// ErasureRequest asks a recipient to delete what it received of one
// subject under one agreement, after the subject withdrew consent for the
// agreement's purpose. The provider signs SigningMessage; the recipient
// answers with an ErasureReceipt.
type ErasureRequest struct {
	ID string `json:"id"`
	// Provider sent the data and asks; Recipient holds it and erases.
	Provider  string `json:"provider"`
	Recipient string `json:"recipient"`
	// Subject is the subject's token at that recipient (the per-recipient
	// token its copies carry), never the raw id.
	Subject string `json:"subject"`
	// SubjectInClear is the subject's id, given only when the agreement
	// delivered it in clear (an identity purpose, or an identifier the
	// agreement kept): the recipient's copies carry it, not the token, and
	// the recipient holds it already.
	SubjectInClear string `json:"subject_in_clear,omitempty"`
	// ReleaseTokens are the subject's tokens in the dataset releases the
	// provider made to the recipient under the agreement with a row of
	// theirs: each release gives a person a token of its own
	// (crypto.ReleaseTokenKey), so that two releases cannot be joined,
	// and the request names them all, so that the erasure reaches the
	// subject's rows in every release. The recipient holds each already.
	ReleaseTokens []string  `json:"release_tokens,omitempty"`
	Purpose       Purpose   `json:"purpose"`
	Agreement     string    `json:"agreement"`
	Requested     time.Time `json:"requested"`
	// Consent names the withdrawn consent record, when there is one.
	Consent string `json:"consent,omitempty"`
}

// ErasureReceipt is the recipient's signed answer: it deleted what it held
// of the subject under the agreement.
type ErasureReceipt struct {
	Request   string `json:"request"`
	Provider  string `json:"provider"`
	Recipient string `json:"recipient"`
	Subject   string `json:"subject"`
	Agreement string `json:"agreement"`
	// Records is how many stored records were deleted (0 is a valid
	// answer: nothing was left, e.g. after retention expiry).
	Records int       `json:"records"`
	Erased  time.Time `json:"erased"`
	// TombstoneBefore: records of the subject under the agreement in
	// envelopes the provider created up to this time (its request's) that
	// reach the recipient after the erasure are dropped as they arrive;
	// zero from a recipient that keeps no tombstones.
	TombstoneBefore time.Time `json:"tombstone_before,omitzero"`
}

// ErasureStatus is where an erasure stands in the subject report and the
// metrics.
type ErasureStatus string

// The erasure states.
const (
	ErasureOpen      ErasureStatus = "open"      // requested, no valid receipt yet
	ErasureConfirmed ErasureStatus = "confirmed" // a valid receipt answers the request
)

// The labels separating erasure signatures from every other signature.
const (
	ErasureRequestSignatureLabel = "eduspace erasure request v1"
	ErasureReceiptSignatureLabel = "eduspace erasure receipt v1"
)

// Validate checks the request; its errors name the field that is wrong.
func (r *ErasureRequest) Validate() error {
	switch {
	case r.ID == "":
		return fmt.Errorf("erasure request: id: required")
	case r.Provider == "":
		return fmt.Errorf("erasure request %s: provider: required", r.ID)
	case r.Recipient == "" || r.Recipient == r.Provider:
		return fmt.Errorf("erasure request %s: recipient: required, and not the provider", r.ID)
	case !isToken(r.Subject):
		return fmt.Errorf("erasure request %s: subject: must be the recipient's token, never a raw id", r.ID)
	case slices.ContainsFunc(r.ReleaseTokens, func(t string) bool { return !isToken(t) }):
		return fmt.Errorf("erasure request %s: release_tokens: must be the subject's tokens in releases, never a raw id", r.ID)
	case !purposes[r.Purpose]:
		return fmt.Errorf("erasure request %s: purpose: %q is not in the vocabulary", r.ID, r.Purpose)
	case r.Agreement == "":
		return fmt.Errorf("erasure request %s: agreement: required", r.ID)
	case r.Requested.IsZero():
		return fmt.Errorf("erasure request %s: requested: required", r.ID)
	}
	return nil
}

// SigningMessage returns what the provider signs.
func (r *ErasureRequest) SigningMessage() []byte {
	b, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	return labelled(ErasureRequestSignatureLabel, b)
}

// Receipt returns the receipt that answers r, erased at t, records deleted.
func (r *ErasureRequest) Receipt(records int, t time.Time) ErasureReceipt {
	return ErasureReceipt{Request: r.ID, Provider: r.Provider, Recipient: r.Recipient,
		Subject: r.Subject, Agreement: r.Agreement, Records: records, Erased: t, TombstoneBefore: r.Requested}
}

// Validate checks the receipt; its errors name the field that is wrong.
func (e *ErasureReceipt) Validate() error {
	switch {
	case e.Request == "":
		return fmt.Errorf("erasure receipt: request: required")
	case e.Provider == "" || e.Recipient == "" || e.Provider == e.Recipient:
		return fmt.Errorf("erasure receipt %s: provider and recipient: required and distinct", e.Request)
	case !isToken(e.Subject):
		return fmt.Errorf("erasure receipt %s: subject: must be a token", e.Request)
	case e.Agreement == "":
		return fmt.Errorf("erasure receipt %s: agreement: required", e.Request)
	case e.Records < 0:
		return fmt.Errorf("erasure receipt %s: records: must not be negative", e.Request)
	case e.Erased.IsZero():
		return fmt.Errorf("erasure receipt %s: erased: required", e.Request)
	}
	return nil
}

// SigningMessage returns what the recipient signs.
func (e *ErasureReceipt) SigningMessage() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		return nil
	}
	return labelled(ErasureReceiptSignatureLabel, b)
}

// Answers reports whether the receipt answers req: same request, parties,
// subject and agreement, erased no earlier than requested. The node also
// checks the recipient's signature before it counts the erasure confirmed.
func (e *ErasureReceipt) Answers(req *ErasureRequest) bool {
	return e.Request == req.ID && e.Provider == req.Provider && e.Recipient == req.Recipient &&
		e.Subject == req.Subject && e.Agreement == req.Agreement && !e.Erased.Before(req.Requested)
}
