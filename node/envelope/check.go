package envelope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// Refusal reasons for envelopes a node will not accept. Like policy reasons
// they are stable metric label values and evidence entries.
const (
	RefuseMalformed    = "malformed"
	RefuseMisaddressed = "misaddressed"
	RefuseUnknownKey   = "unknown_key"
	RefuseExpired      = "expired"
	RefuseUnknownPeer  = "unknown_sender"
	RefuseSignature    = "bad_signature"
	RefuseDecrypt      = "decrypt_failed"
	RefuseReplayed     = "replayed"
	RefuseNoAgreement  = "no_agreement"
	RefuseContent      = "bad_content"
	RefuseRevoked      = "revoked"
	RefuseWeakSuite    = "suite_below_minimum"
)

// RefuseReasons are every refusal reason, the closed set of the refused
// metric's label.
var RefuseReasons = []string{
	RefuseMalformed, RefuseMisaddressed, RefuseUnknownKey, RefuseExpired, RefuseUnknownPeer,
	RefuseSignature, RefuseDecrypt, RefuseReplayed, RefuseNoAgreement, RefuseContent,
	RefuseRevoked, RefuseWeakSuite,
}

// Refusal is a permanent reason not to accept an envelope: the message is
// terminated, never retried, and the refusal is counted and recorded as
// evidence.
type Refusal struct {
	Reason string
	Err    error
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Err.Error() }

func (r *Refusal) Unwrap() error { return r.Err }

// Refuse is a *Refusal for reason.
func Refuse(reason string, err error) error { return &Refusal{Reason: reason, Err: err} }

// Check parses an envelope addressed to this node and checks everything
// that needs no database: addressee, key, expiry, the sender's credential
// and signature. It returns the parsed envelope (nil when unparseable) and
// the sender's credential, or a *Refusal or a transient error.
func (c *Codec) Check(ctx context.Context, data []byte, kind uint8) (*crypto.Envelope, *crypto.Credential, error) {
	env, err := crypto.ParseEnvelope(data)
	if err != nil {
		return nil, nil, Refuse(RefuseMalformed, err)
	}
	h := env.Header
	if kind != 0 && h.Kind != kind { // kind 0: the caller checks the kind
		return env, nil, Refuse(RefuseMalformed, fmt.Errorf("kind %d on a subject for kind %d", h.Kind, kind))
	}
	// A sender that is no member's id could not be looked up in the
	// registry at all: refused now, never retried.
	if !bus.ValidName(h.Sender) {
		return env, nil, Refuse(RefuseUnknownPeer, errors.New("sender is not a valid node id"))
	}
	// Sequence numbers are stored as SQLite integers (signed 64 bits).
	if h.Seq > math.MaxInt64 {
		return env, nil, Refuse(RefuseMalformed, fmt.Errorf("sequence number %d out of range", h.Seq))
	}
	if err := c.Registry.Policy().Refusal(h.Suite); err != nil {
		return env, nil, Refuse(RefuseWeakSuite, err)
	}
	if h.Recipient != c.NodeID {
		return env, nil, Refuse(RefuseMisaddressed, fmt.Errorf("addressed to %q", h.Recipient))
	}
	// Keys by id: after a rotation, envelopes sealed to any KEM key the
	// node's credential still lists open (CREDENTIALS.md §5).
	priv, ok := c.Keys.KEMKey(h.RecipientKeyID)
	if !ok {
		return env, nil, Refuse(RefuseUnknownKey, fmt.Errorf("no KEM key %q", h.RecipientKeyID))
	}
	if priv.Suite() != h.Suite {
		return env, nil, Refuse(RefuseUnknownKey, fmt.Errorf("envelope of suite %s names KEM key %q of suite %s", h.Suite, h.RecipientKeyID, priv.Suite()))
	}
	now := c.Now()
	if c.Registry.Revoked(c.NodeID, h.RecipientKeyID, now) {
		return env, nil, Refuse(RefuseRevoked, fmt.Errorf("sealed to this node's revoked key %q", h.RecipientKeyID))
	}
	if !now.Before(h.Expires) {
		return env, nil, Refuse(RefuseExpired, fmt.Errorf("expired at %s", h.Expires.UTC().Format(time.RFC3339)))
	}
	// The time checked is now, not the envelope's created time, which the
	// holder of a revoked key could set at will.
	if err := c.Registry.CheckRevoked(h.Sender, h.SenderKeyID, now); err != nil {
		return env, nil, Refuse(RefuseRevoked, err)
	}
	cred, err := c.Registry.Lookup(ctx, h.Sender)
	vk, ok := crypto.VerifyKey{}, false
	if err == nil {
		if vk, ok = cred.SigningKey(h.SenderKeyID); !ok {
			// The sender may have rotated its keys since its credential was
			// cached.
			cred, err = c.Registry.LookupFresh(ctx, h.Sender)
		}
	}
	if errors.Is(err, registry.ErrUnknownMember) {
		return env, nil, Refuse(RefuseUnknownPeer, err)
	}
	if err != nil {
		return env, nil, err
	}
	if !ok {
		if vk, ok = cred.SigningKey(h.SenderKeyID); !ok {
			return env, nil, Refuse(RefuseUnknownKey, fmt.Errorf("sender has no signing key %q", h.SenderKeyID))
		}
	}
	if err := env.Verify(vk); err != nil {
		return env, nil, Refuse(RefuseSignature, err)
	}
	return env, cred, nil
}

// lineChecker is CheckRecords' parser, the map it reuses for each
// record's fields, and the members of the last line that the type has, by
// position (lines of one envelope name their members alike).
type lineChecker struct {
	p      *schema.LineParser
	fields map[string]any
	typ    *schema.RecordType
	known  []knownMember
}

// knownMember is what CheckRecords needs of a member at its position in a
// line of the known shape.
type knownMember struct {
	name string
	// level is the highest level the standard gives this field and the
	// ones before it in the line.
	level schema.Level
	// direct: its value must arrive as a token; scan: its value can raise
	// its level (schema.Standard.ValueLevel); minor: its value can show the
	// subject a minor (schema.Standard.Minor).
	direct, scan, minor bool
	spec                schema.FieldSpec
}

var lineCheckers sync.Pool

// maxKnownMembers bounds the member names a lineChecker remembers.
const maxKnownMembers = 256

// CheckRecords checks an envelope's plaintext before it is stored: NDJSON
// of exactly h.Count records, each of the header's record type and with
// only fields that type has and, with an agreement a, that a lists for the
// type, at levels the standard puts no higher than a's maximum: the
// fields' own levels, raised by what their string values hold (a value
// rule, a detector that hits: schema.Standard.ValueLevel), and to L4 for
// the whole record where a birth date or a resident ID in it shows its
// subject a minor on asOf (C3, schema.Standard.Minor). It returns the
// highest level of any record: the level this node computed, which
// evidence records rather than the one the sender claims. Values are not
// validated against the standard (tokenised and generalised values are
// not meant to pass it). A minor whose record carries neither a birth
// date nor a resident ID in clear cannot be told here: that rule stays
// the sender's.
func (c *Codec) CheckRecords(plain []byte, h crypto.Header, a *policy.Agreement, asOf time.Time) (schema.Level, error) {
	rt, ok := c.Std.Type(h.RecordType)
	if !ok {
		return 0, fmt.Errorf("unknown record type %q", h.RecordType)
	}
	if _, err := schema.ParseLevel(h.Level); err != nil {
		return 0, fmt.Errorf("header level: %w", err)
	}
	// One record per line and nothing else: erasure relies on lines and
	// records matching one to one.
	if len(plain) == 0 || plain[0] == '\n' || bytes.Contains(plain, []byte("\n\n")) || plain[len(plain)-1] != '\n' {
		return 0, fmt.Errorf("empty lines or no final newline")
	}
	lc, _ := lineCheckers.Get().(*lineChecker)
	if lc == nil {
		lc = &lineChecker{p: schema.NewLineParser(""), fields: map[string]any{}}
	}
	defer lineCheckers.Put(lc)
	// Shapes are known per envelope: its agreement decides which names
	// pass.
	lc.typ, lc.known = rt, lc.known[:0]
	// The fields that must arrive as tokens: the type's direct identifiers
	// and its subject key, unless the agreement's purpose is one for which
	// identifiers leave in clear, or one under which it may ask for them
	// in clear and it did (transform "keep").
	var direct []string
	if a != nil && !slices.Contains(c.IdentityPurposes, a.Purpose) {
		direct = rt.DirectIdentifiers()
		if key := rt.SubjectKey(); key != "" && !slices.Contains(direct, key) {
			direct = append(direct, key)
		}
		if slices.Contains(c.ClearIdentityPurposes, a.Purpose) && len(a.Transforms) > 0 {
			direct = slices.DeleteFunc(slices.Clone(direct), func(f string) bool { return a.Transforms[f] == policy.TransformKeep })
		}
	}
	foreign := false   // a member name the type does not have
	duplicate := false // a member name given twice in one line
	unagreed := false  // a member name the agreement does not list
	clear := ""        // a direct identifier that did not arrive as a token
	var lineLevel, level schema.Level
	// valueLevel is the highest level the line's values give their fields
	// (a value rule, a detector that hits, a minor's birth date): the
	// receiver classifies what arrived rather than trusting the sender's
	// classification.
	var valueLevel schema.Level
	// value checks the value of member m, str for a string and nil for
	// any other value (which is no token).
	value := func(m *knownMember, str []byte) {
		if m.direct && clear == "" && !isToken(str) {
			clear = m.name
		}
		if str == nil {
			return
		}
		if m.scan {
			valueLevel = max(valueLevel, c.Std.ValueLevel(&m.spec, str))
		}
		if m.minor && c.Std.Minor(&m.spec, str, asOf) {
			valueLevel = schema.L4
		}
	}
	k := 0 // the member's position in its line
	// fresh is set once a line's names part from known: from there on its
	// names are checked one by one, and known becomes exactly its names,
	// so that a line of known's shape, which names no member twice, skips
	// the checks.
	fresh := false
	member := func(name string, str []byte) {
		pos := k
		k++
		if !fresh && pos < len(lc.known) && lc.known[pos].name == name {
			if m := &lc.known[pos]; m.direct || m.scan || m.minor {
				value(m, str)
			}
			return
		}
		if !fresh && pos > 0 && pos <= len(lc.known) {
			lineLevel = lc.known[pos-1].level // the names before it matched known
		}
		fresh = true
		spec, ok := rt.Field(name)
		if !ok {
			foreign = true
			return
		}
		if a != nil && !a.Allows(h.RecordType, name) {
			unagreed = true
			return
		}
		lineLevel = max(lineLevel, spec.Level)
		m := knownMember{name: name, level: lineLevel, direct: slices.Contains(direct, name),
			scan: c.Std.ValueScanned(spec), minor: rt.MinorField(&spec), spec: spec}
		value(&m, str)
		// A line of a new shape: its names so far are known[:pos].
		if pos <= len(lc.known) && slices.ContainsFunc(lc.known[:pos], func(o knownMember) bool { return o.name == name }) {
			duplicate = true
			return
		}
		if pos < len(lc.known) {
			lc.known[pos] = m
		} else if pos == len(lc.known) && pos < maxKnownMembers {
			lc.known = append(lc.known, m)
		}
	}
	count := 0
	for rest := plain; len(rest) > 0; count++ {
		i := bytes.IndexByte(rest, '\n')
		line := rest[:i]
		rest = rest[i+1:]
		// What a reader of the stored records refuses is refused here: a
		// record stored must be readable and erasable.
		if len(line) > schema.MaxLineBytes {
			return 0, fmt.Errorf("record %d: longer than %d bytes", count, schema.MaxLineBytes)
		}
		k, fresh, lineLevel, valueLevel = 0, false, 0, 0
		typ, ok := lc.p.Members(line, member)
		if !ok {
			// Not plain values only: read it whole, as readers do, once it
			// is valid UTF-8 with every member once.
			if !utf8.Valid(line) {
				return 0, fmt.Errorf("record %d: not valid UTF-8", count)
			}
			if _, dup := schema.DuplicateMember(line); dup {
				return 0, fmt.Errorf("record %d: a member given twice", count)
			}
			rec, verr := lc.p.Parse(line, lc.fields)
			if verr != nil {
				return 0, fmt.Errorf("record %d: not a record", count)
			}
			typ = rec.Type
			k = maxKnownMembers + 1   // by name: positions mean nothing here
			clear, valueLevel = "", 0 // what the fast path saw is seen again
			for f, v := range rec.Fields {
				var str []byte
				if s, ok := v.(string); ok {
					str = []byte(s)
				}
				member(f, str)
			}
		}
		if typ != h.RecordType {
			return 0, fmt.Errorf("record %d: type differs from the header", count)
		}
		if foreign {
			return 0, fmt.Errorf("record %d: field not in type %s", count, h.RecordType)
		}
		if duplicate {
			return 0, fmt.Errorf("record %d: a member given twice", count)
		}
		if unagreed {
			return 0, fmt.Errorf("record %d: a field agreement %s does not list", count, a.ID)
		}
		if !fresh && k > 0 && k <= len(lc.known) {
			lineLevel = lc.known[k-1].level
		}
		lineLevel = max(lineLevel, valueLevel)
		if a != nil && (lineLevel >= schema.CORE || lineLevel > a.MaxLevel) {
			return 0, fmt.Errorf("record %d: fields at %s, above agreement %s's %s", count, lineLevel, a.ID, a.MaxLevel)
		}
		level = max(level, lineLevel)
		if clear != "" {
			return 0, fmt.Errorf("record %d: %s arrived in clear, not as a token", count, clear)
		}
		if fresh && k <= maxKnownMembers && k < len(lc.known) {
			lc.known = lc.known[:k] // a longer shape is forgotten
		}
	}
	if count != int(h.Count) {
		return 0, fmt.Errorf("header says %d records, envelope holds %d", h.Count, count)
	}
	return level, nil
}

// tokenLen is the length of a token (crypto.Tokenizer): "tk_" and 16
// bytes in unpadded base64url.
const tokenLen = 3 + 22

// isToken reports whether s has the form of a token.
func isToken(s []byte) bool {
	if len(s) != tokenLen || string(s[:3]) != "tk_" {
		return false
	}
	for _, c := range s[3:] {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// tokenChars are the bytes of unpadded base64url, a token's alphabet.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	return t
}()
