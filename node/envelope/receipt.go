package envelope

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/eduspace/eduspace/crypto"
)

// Receipt is the plaintext of a receipt envelope: the envelopes of records
// that were stored, with how many records each, and when; and the
// envelopes that were refused, with why. Only an envelope whose sender's
// signature was verified is answered: a refusal never goes to a sender
// the receiver could not authenticate.
type Receipt struct {
	Envelopes []ReceiptItem `json:"envelopes"`
	Refused   []RefusedItem `json:"refused,omitempty"`
}

// ReceiptItem is one envelope a receipt confirms.
type ReceiptItem struct {
	Envelope string `json:"envelope"`
	Records  int    `json:"records"`
	StoredMS int64  `json:"stored_ms"`
	// SHA256 is the envelope's SHA-256 as it arrived, in hex: the receipt
	// binds the bytes stored, not only the id.
	SHA256 string `json:"sha256,omitempty"`
}

// RefusedItem is one envelope a receipt reports refused, its records never
// stored: Reason is one of RefuseReasons.
type RefusedItem struct {
	Envelope string `json:"envelope"`
	Records  int    `json:"records"`
	Reason   string `json:"reason"`
	SHA256   string `json:"sha256,omitempty"` // as ReceiptItem's
}

// ParseReceipt reads the plaintext of a receipt envelope with header h: it
// must answer for exactly h.Count envelopes, stored or refused, at least
// one, give each refusal a reason of RefuseReasons, and name each
// envelope's SHA-256, if at all, in lower-case hex.
func ParseReceipt(plain []byte, h crypto.Header) (Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(plain, &r); err != nil {
		return Receipt{}, errors.New("receipt body is not a receipt")
	}
	if n := len(r.Envelopes) + len(r.Refused); n == 0 || n != int(h.Count) {
		return Receipt{}, errors.New("receipt answers for a number of envelopes other than its header's count")
	}
	for _, it := range r.Refused {
		if !slices.Contains(RefuseReasons, it.Reason) {
			return Receipt{}, errors.New("receipt gives a refusal reason outside the refusal reasons")
		}
		if !validSum(it.SHA256) {
			return Receipt{}, errors.New("receipt names an envelope hash that is not 64 lower-case hex digits")
		}
	}
	for _, it := range r.Envelopes {
		if !validSum(it.SHA256) {
			return Receipt{}, errors.New("receipt names an envelope hash that is not 64 lower-case hex digits")
		}
	}
	return r, nil
}

// validSum reports whether s is empty (a receipt from before hashes) or a
// SHA-256 in lower-case hex.
func validSum(s string) bool {
	if s == "" {
		return true
	}
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
