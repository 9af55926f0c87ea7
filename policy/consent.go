package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/eduspace/eduspace/schema"
)

// ConsentRecord is one entry of the consent ledger: a data subject's (or
// their guardian's) separate consent to one purpose, for some or all
// recipients and categories, from Granted until Expires or Withdrawn.
// A withdrawal does not delete the record: it sets Withdrawn.
type ConsentRecord struct {
	// ID names the consent (a form number). It is kept, logged and shown in
	// clear, so it must not contain the subject's id or any other personal
	// value.
	ID string `json:"id"`
	// Subject is the value of the record's subject key (student_id, ...).
	// It stays in the node's own ledger; what leaves names a token.
	Subject string  `json:"subject"`
	Purpose Purpose `json:"purpose"`
	// Recipients are the node ids the consent covers; empty covers any
	// recipient an agreement for the purpose names.
	Recipients []string `json:"recipients,omitempty"`
	// Categories are the data categories covered; empty covers all.
	Categories []schema.Category `json:"categories,omitempty"`
	Granted    time.Time         `json:"granted"`
	// Expires is when the consent lapses; zero for no end date.
	Expires time.Time `json:"expires,omitzero"`
	// Withdrawn is when it was withdrawn; zero while it stands.
	Withdrawn time.Time `json:"withdrawn,omitzero"`
	// Guardian is true when a guardian gave the consent (subjects under 14).
	Guardian bool `json:"guardian,omitempty"`
}

// ParseConsent decodes one consent record from JSON and validates it.
// Unknown members and trailing data are errors.
func ParseConsent(data []byte) (ConsentRecord, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c ConsentRecord
	if err := dec.Decode(&c); err != nil {
		return ConsentRecord{}, fmt.Errorf("parse consent: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return ConsentRecord{}, fmt.Errorf("parse consent: trailing data after the object")
	}
	if err := c.Validate(); err != nil {
		return ConsentRecord{}, err
	}
	return c, nil
}

// Validate checks the record; its errors name the field that is wrong.
func (c *ConsentRecord) Validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("consent: id: required")
	case c.Subject == "":
		return fmt.Errorf("consent %s: subject: required", c.ID)
	case !purposes[c.Purpose]:
		return fmt.Errorf("consent %s: purpose: %q is not in the vocabulary", c.ID, c.Purpose)
	case c.Granted.IsZero():
		return fmt.Errorf("consent %s: granted: required", c.ID)
	case !c.Expires.IsZero() && !c.Expires.After(c.Granted):
		return fmt.Errorf("consent %s: expires: must be after granted", c.ID)
	case !c.Withdrawn.IsZero() && c.Withdrawn.Before(c.Granted):
		return fmt.Errorf("consent %s: withdrawn: must not be before granted", c.ID)
	}
	if err := checkList("recipients", c.Recipients, func(r string) bool { return r != "" }); err != nil {
		return fmt.Errorf("consent %s: %w", c.ID, err)
	}
	if err := checkCategories(c.Categories); err != nil {
		return fmt.Errorf("consent %s: %w", c.ID, err)
	}
	return nil
}

// ActiveAt reports whether the consent stands at t: granted, not expired,
// not withdrawn.
func (c *ConsentRecord) ActiveAt(t time.Time) bool {
	return !t.Before(c.Granted) &&
		(c.Expires.IsZero() || t.Before(c.Expires)) &&
		(c.Withdrawn.IsZero() || t.Before(c.Withdrawn))
}

// CoversRecipient reports whether the consent names recipient (or any
// recipient).
func (c *ConsentRecord) CoversRecipient(recipient string) bool {
	return len(c.Recipients) == 0 || slices.Contains(c.Recipients, recipient)
}

// ConsentState returns the consent Decide needs for one record: the
// records of the ledger for subject and purpose that name recipient (or
// any recipient) and stand at now. Granted is true when together they
// cover every category in categories (the node passes LeavingCategories),
// Guardian when guardian consents alone do. A withdrawn or expired record
// counts for nothing. With no categories, Granted means that some record
// stands, and Guardian that guardian records cover all that Scope covers.
func ConsentState(records []ConsentRecord, subject string, purpose Purpose, recipient string, categories []schema.Category, now time.Time) Consent {
	var all, guardian coverage
	var ids []string
	for i := range records {
		r := &records[i]
		if r.Subject != subject || r.Purpose != purpose || !r.CoversRecipient(recipient) || !r.ActiveAt(now) {
			continue
		}
		ids = append(ids, r.ID)
		all.add(r.Categories)
		if r.Guardian {
			guardian.add(r.Categories)
		}
	}
	c := Consent{Records: ids, Scope: all.scope()}
	if len(ids) == 0 {
		return c
	}
	want := categories
	if len(want) == 0 {
		if c.Scope == nil {
			return Consent{Granted: true, Guardian: guardian.everything, Scope: nil, Records: ids}
		}
		want = c.Scope
	}
	c.Granted = all.covers(want)
	c.Guardian = c.Granted && guardian.covers(want)
	return c
}

// coverage is the union of the categories of some consent records.
type coverage struct {
	some       bool
	everything bool // a record with no categories covers all
	cats       []schema.Category
}

func (v *coverage) add(cats []schema.Category) {
	v.some = true
	if len(cats) == 0 {
		v.everything = true
		return
	}
	for _, c := range cats {
		if !slices.Contains(v.cats, c) {
			v.cats = append(v.cats, c)
		}
	}
}

func (v *coverage) covers(want []schema.Category) bool {
	if !v.some {
		return false
	}
	if v.everything {
		return true
	}
	for _, c := range want {
		if !slices.Contains(v.cats, c) {
			return false
		}
	}
	return true
}

// scope is the union as Consent.Scope: nil for everything (or nothing).
func (v *coverage) scope() []schema.Category {
	if v.everything || !v.some {
		return nil
	}
	s := slices.Clone(v.cats)
	slices.Sort(s)
	return s
}

// ConsentAction is what a consent receipt evidences.
type ConsentAction string

// The consent actions.
const (
	ConsentGrant    ConsentAction = "grant"
	ConsentWithdraw ConsentAction = "withdraw"
)

// ConsentReceiptClaims are the claims of a consent receipt: the evidence
// of one grant or withdrawal that the node signs as a JWT and hands to the
// student. They name the subject by a token, never by the raw id. The
// member names do not collide with the registered JWT claims, so the node
// may embed them next to jwt.RegisteredClaims.
type ConsentReceiptClaims struct {
	ConsentID    string            `json:"consent_id"`
	SubjectToken string            `json:"subject_token"`
	Purpose      Purpose           `json:"purpose"`
	Recipients   []string          `json:"recipients,omitempty"`
	Categories   []schema.Category `json:"categories,omitempty"`
	Granted      time.Time         `json:"granted"`
	Expires      time.Time         `json:"expires,omitzero"`
	Withdrawn    time.Time         `json:"withdrawn,omitzero"`
	Guardian     bool              `json:"guardian,omitempty"`
	Action       ConsentAction     `json:"action"`
	// Node is the node id that keeps the ledger and signs the receipt.
	Node string `json:"node"`
}

// Receipt returns the claims of a receipt for this record: action grant
// for a standing record, withdraw for a withdrawn one. subjectToken is the
// node's keyed token of c.Subject.
func (c *ConsentRecord) Receipt(subjectToken, node string) ConsentReceiptClaims {
	action := ConsentGrant
	if !c.Withdrawn.IsZero() {
		action = ConsentWithdraw
	}
	return ConsentReceiptClaims{
		ConsentID: c.ID, SubjectToken: subjectToken, Purpose: c.Purpose,
		Recipients: slices.Clone(c.Recipients), Categories: slices.Clone(c.Categories),
		Granted: c.Granted, Expires: c.Expires, Withdrawn: c.Withdrawn, Guardian: c.Guardian,
		Action: action, Node: node,
	}
}

// Validate checks the claims; its errors name the claim that is wrong.
func (r *ConsentReceiptClaims) Validate() error {
	switch {
	case r.ConsentID == "":
		return fmt.Errorf("consent receipt: consent_id: required")
	case !isToken(r.SubjectToken):
		return fmt.Errorf("consent receipt: subject_token: must be a token (16 to 128 of A-Z a-z 0-9 _ -), never a raw id")
	case !purposes[r.Purpose]:
		return fmt.Errorf("consent receipt: purpose: %q is not in the vocabulary", r.Purpose)
	case r.Granted.IsZero():
		return fmt.Errorf("consent receipt: granted: required")
	case !r.Expires.IsZero() && !r.Expires.After(r.Granted):
		return fmt.Errorf("consent receipt: expires: must be after granted")
	case r.Action != ConsentGrant && r.Action != ConsentWithdraw:
		return fmt.Errorf("consent receipt: action: %q is not grant or withdraw", r.Action)
	case r.Action == ConsentGrant && !r.Withdrawn.IsZero():
		return fmt.Errorf("consent receipt: withdrawn: must be empty for a grant")
	case r.Action == ConsentWithdraw && r.Withdrawn.IsZero():
		return fmt.Errorf("consent receipt: withdrawn: required for a withdrawal")
	case !r.Withdrawn.IsZero() && r.Withdrawn.Before(r.Granted):
		return fmt.Errorf("consent receipt: withdrawn: must not be before granted")
	case r.Node == "":
		return fmt.Errorf("consent receipt: node: required")
	}
	if err := checkList("recipients", r.Recipients, func(s string) bool { return s != "" }); err != nil {
		return fmt.Errorf("consent receipt: %w", err)
	}
	if err := checkCategories(r.Categories); err != nil {
		return fmt.Errorf("consent receipt: %w", err)
	}
	return nil
}

// isToken reports whether s looks like a keyed token (crypto.Token's
// "tk_…", the evidence log's hex): 16 to 128 characters of the URL-safe
// alphabet. A student number is shorter; a name has other characters.
func isToken(s string) bool {
	if len(s) < 16 || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

func checkList(name string, list []string, ok func(string) bool) error {
	for i, s := range list {
		if !ok(s) {
			return fmt.Errorf("%s[%d]: %q is not allowed", name, i, s)
		}
		if slices.Contains(list[:i], s) {
			return fmt.Errorf("%s[%d]: %q named twice", name, i, s)
		}
	}
	return nil
}

func checkCategories(cats []schema.Category) error {
	for i, c := range cats {
		if c == schema.CategoryNone || !c.Valid() {
			return fmt.Errorf("categories[%d]: %q is not a category of GRADING.md §2", i, c)
		}
		if slices.Contains(cats[:i], c) {
			return fmt.Errorf("categories[%d]: %q named twice", i, c)
		}
	}
	return nil
}
