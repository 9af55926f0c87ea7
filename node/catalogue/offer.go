package catalogue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Offer is a dataset as the operator offers it (CATALOGUE.md §1): the file
// `eduspace dataset offer --file` sends.
type Offer struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	RecordTypes []string `json:"record_types"`
	// Fields lists, per record type, the fields the dataset holds; a type
	// not listed holds every field the standard gives it.
	Fields        map[string][]string `json:"fields,omitempty"`
	Purposes      []policy.Purpose    `json:"purposes"`
	Licence       string              `json:"licence"`
	RetentionDays int                 `json:"retention_days"`
	Contact       string              `json:"contact"`
	Keywords      []string            `json:"keywords,omitempty"`
	// Language is the BCP 47 tag of title and description; default "en".
	Language string `json:"language,omitempty"`
}

// Limits of an offer's values.
const (
	maxTitle       = 200
	maxDescription = 4000
	maxShort       = 200 // licence, contact, keyword
	maxKeywords    = 20
	maxRetention   = 36500 // days: 100 years
	// maxOffers bounds the datasets one node offers, and so one
	// catalogue message.
	maxOffers = 200
)

// idRE is a dataset id: it appears in URLs and DSP identifiers.
var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// fieldRE is a record type or field name.
var fieldRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// langRE is a BCP 47 language tag, loosely.
var langRE = regexp.MustCompile(`^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{2,8}){0,3}$`)

// ParseOffer reads an offer from JSON, refusing unknown keys, and
// validates it against std.
func ParseOffer(data []byte, std *schema.Standard) (*Offer, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var o Offer
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("offer: %w (CATALOGUE.md §1 lists the keys)", err)
	}
	if dec.More() {
		return nil, errors.New("offer: one JSON object expected, found more after it")
	}
	if err := o.Validate(std); err != nil {
		return nil, err
	}
	return &o, nil
}

// Validate checks every field of o; each error names the field and says
// what is expected.
func (o *Offer) Validate(std *schema.Standard) error {
	errs := []error{o.validateText()}
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	seen := map[string]bool{}
	for i, t := range o.RecordTypes {
		if _, ok := std.Type(t); !ok {
			bad(fmt.Sprintf("record_types[%d]", i), "%q is not a record type of %s (%s)", t, std.Name(), strings.Join(std.Types(), ", "))
		}
		seen[t] = true
	}
	for _, t := range slices.Sorted(maps.Keys(o.Fields)) {
		rt, ok := std.Type(t)
		if !ok || !seen[t] {
			bad("fields."+t, "%q is not one of record_types", t)
			continue
		}
		if len(o.Fields[t]) == 0 {
			bad("fields."+t, "empty: list the fields, or leave the type out for all its fields")
		}
		dup := map[string]bool{}
		for i, f := range o.Fields[t] {
			if _, ok := rt.Field(f); !ok {
				bad(fmt.Sprintf("fields.%s[%d]", t, i), "%q is not a field of %s", f, t)
			} else if dup[f] {
				bad(fmt.Sprintf("fields.%s[%d]", t, i), "%q named twice", f)
			}
			dup[f] = true
		}
	}
	return errors.Join(errs...)
}

// validateText checks what needs no grading standard: id, texts, record
// type names, purposes, licence, retention, contact, keywords, language.
func (o *Offer) validateText() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	text := func(field, v string, max int, required bool) {
		switch {
		case v == "" && required:
			bad(field, "required")
		case !utf8.ValidString(v):
			bad(field, "not valid UTF-8")
		case utf8.RuneCountInString(v) > max:
			bad(field, "%d characters, at most %d", utf8.RuneCountInString(v), max)
		case strings.ContainsFunc(v, func(r rune) bool {
			return unicode.IsControl(r) && r != '\n' && r != '\t' || unicode.Is(unicode.Bidi_Control, r)
		}):
			bad(field, "holds a control character")
		}
	}
	if !idRE.MatchString(o.ID) {
		bad("id", "%q: 1-64 of lower case letters, digits, '.', '-', '_', starting with a letter or digit", o.ID)
	}
	text("title", o.Title, maxTitle, true)
	text("description", o.Description, maxDescription, false)
	if len(o.RecordTypes) == 0 {
		bad("record_types", "required: at least one record type of the grading standard")
	}
	seen := map[string]bool{}
	for i, t := range o.RecordTypes {
		if !fieldRE.MatchString(t) {
			bad(fmt.Sprintf("record_types[%d]", i), "%q is not a record type name", t)
		} else if seen[t] {
			bad(fmt.Sprintf("record_types[%d]", i), "%q named twice", t)
		}
		seen[t] = true
	}
	if len(o.Purposes) == 0 {
		bad("purposes", "required: at least one purpose the dataset may be used for")
	}
	pseen := map[policy.Purpose]bool{}
	for i, p := range o.Purposes {
		if !p.Valid() {
			bad(fmt.Sprintf("purposes[%d]", i), "%q is not a purpose of the closed vocabulary (policy/REASONS.md)", p)
		} else if pseen[p] {
			bad(fmt.Sprintf("purposes[%d]", i), "%q named twice", p)
		}
		pseen[p] = true
	}
	text("licence", o.Licence, maxShort, true)
	if o.RetentionDays < 1 || o.RetentionDays > maxRetention {
		bad("retention_days", "%d: how many days a recipient may keep the data, 1 to %d", o.RetentionDays, maxRetention)
	}
	text("contact", o.Contact, maxShort, true)
	if o.Contact != "" && !validContact(o.Contact) {
		bad("contact", "%q: an e-mail address or an http(s) URL", o.Contact)
	}
	if len(o.Keywords) > maxKeywords {
		bad("keywords", "%d keywords, at most %d", len(o.Keywords), maxKeywords)
	}
	for i, k := range o.Keywords {
		text(fmt.Sprintf("keywords[%d]", i), k, maxShort, true)
	}
	if o.Language != "" && !langRE.MatchString(o.Language) {
		bad("language", "%q: a BCP 47 language tag such as en or zh-CN", o.Language)
	}
	return errors.Join(errs...)
}

// validContact reports whether c is an e-mail address or an http(s) URL.
func validContact(c string) bool {
	if u, err := url.Parse(c); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return true
	}
	a, err := mail.ParseAddress(c)
	return err == nil && a.Address == c
}

// Field is one field of a dataset with its labels under the grading
// standard.
type Field struct {
	RecordType string `json:"record_type"`
	Name       string `json:"name"`
	Category   string `json:"category"`
	Level      string `json:"level"`
	Direct     bool   `json:"direct_identifier,omitempty"`
}

// fields are the fields o holds, labelled by std, in the order of
// record_types and of each type's declared fields.
func (o *Offer) fields(std *schema.Standard) []Field {
	var out []Field
	for _, t := range o.RecordTypes {
		rt, ok := std.Type(t)
		if !ok {
			continue
		}
		for _, f := range rt.Fields() {
			if list, ok := o.Fields[t]; ok && !slices.Contains(list, f.Name) {
				continue
			}
			out = append(out, Field{RecordType: t, Name: f.Name, Category: string(f.Category), Level: f.Level.String(), Direct: f.Direct})
		}
	}
	return out
}
