package envelope

import (
	"encoding/json"
	"errors"

	"github.com/eduspace/eduspace/crypto"
)

// Receipt is the plaintext of a receipt envelope: the envelopes of records
// that were stored, with how many records each, and when.
type Receipt struct {
	Envelopes []ReceiptItem `json:"envelopes"`
}

// ReceiptItem is one envelope a receipt confirms.
type ReceiptItem struct {
	Envelope string `json:"envelope"`
	Records  int    `json:"records"`
	StoredMS int64  `json:"stored_ms"`
}

// ParseReceipt reads the plaintext of a receipt envelope with header h: it
// must confirm exactly h.Count envelopes, at least one.
func ParseReceipt(plain []byte, h crypto.Header) (Receipt, error) {
	var r Receipt
	if err := json.Unmarshal(plain, &r); err != nil || len(r.Envelopes) == 0 || len(r.Envelopes) != int(h.Count) {
		return Receipt{}, errors.New("receipt body is not a receipt")
	}
	return r, nil
}
