package schema

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// XAPIType is the record type the xAPI reader produces.
const XAPIType = "xapi_statement"

// XAPIError ends the reading of xAPI input that cannot be read further
// (see XAPIReader): Statement is the index of the statement being read,
// Offset the byte offset in the decoded text after any byte order mark
// where reading stopped. It carries no byte of the input.
type XAPIError struct {
	Statement int   // index of the statement being read
	Offset    int64 // byte offset where the input stopped being readable
	Reason    string
}

func (e *XAPIError) Error() string {
	return fmt.Sprintf("xapi: statement %d: %s at byte %d; nothing after it was read", e.Statement, e.Reason, e.Offset)
}

// XAPIReader reads xAPI statements (xAPI 1.0.3 and 2.0, Data §2.4) as
// records of type xapi_statement. The input is JSON in any of the forms
// learning record stores and platforms write: one statement object, an
// array of statements, the statement result object of an LRS
// ({"statements": [...], "more": "..."}), or a sequence of statement
// objects (one per line, NDJSON). A leading byte order mark is skipped.
//
// Each statement is parsed strictly: a member xAPI does not define, a
// value of the wrong JSON type, a missing required member (actor, verb,
// object, an inverse functional identifier), an IRI, UUID, timestamp or
// duration that is malformed, or a score out of range makes Next return
// (Record{}, index, *ValidationError) naming the member's path
// ("actor.mbox", "result.score.scaled") and a reason code, and reading goes
// on with the next statement; nothing of a refused statement is returned.
// Members that hold data about someone other than the actor, or that have
// no field in the record type (attachments, context.instructor,
// context.team, context.statement, a Group actor, an Agent, Group or
// SubStatement object) are refused the same way (reason unknown_field, or
// enum for an objectType), so that no statement is kept in part. LRS
// metadata (stored, authority, version), activity metadata that is not
// about the actor (an activity definition's description, moreInfo and
// interaction members; context.revision; the definitions of context
// activities) are checked and not kept. schema/XAPI.md lists the mapping.
//
// Input that is not JSON, that ends inside the array or statement result,
// that has more after them, or a statement longer than MaxLineBytes (give
// or take the read buffers' 128 KiB) ends the reading with an *XAPIError;
// the statements before it have been returned. Memory is bounded by the
// longest statement.
type XAPIReader struct {
	guard *guardReader
	br    *bufio.Reader
	dec   *json.Decoder
	state int
	next  int
	err   error // sticky
}

// The reader's states.
const (
	xapiStart   = iota
	xapiStream  // a sequence of statement objects
	xapiArray   // inside a top-level array
	xapiResult  // inside a statement result object, between members
	xapiInList  // inside the result's statements array
	xapiTrailer // after the top-level array or result object
)

// NewXAPIReader returns a reader of xAPI statements from r.
func NewXAPIReader(r io.Reader) *XAPIReader {
	g := &guardReader{r: r, limit: MaxLineBytes + guardSlack}
	br := bufio.NewReaderSize(g, 64<<10)
	dec := json.NewDecoder(br)
	dec.UseNumber()
	return &XAPIReader{guard: g, br: br, dec: dec}
}

// fail makes err sticky: a syntax error, a too-long statement, or a read
// error of the input.
func (r *XAPIReader) fail(err error) error {
	var se *json.SyntaxError
	switch {
	case r.guard.err != nil:
		r.err = r.guard.err
	case errors.Is(err, errTooLong):
		r.err = &XAPIError{Statement: r.next, Offset: r.dec.InputOffset(), Reason: fmt.Sprintf("statement longer than %d bytes", MaxLineBytes)}
	case errors.As(err, &se):
		r.err = &XAPIError{Statement: r.next, Offset: se.Offset, Reason: "not valid JSON"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		r.err = &XAPIError{Statement: r.next, Offset: r.dec.InputOffset(), Reason: "input ends inside a JSON value"}
	case err == io.EOF && (r.state == xapiStart || r.state == xapiStream):
		r.err = io.EOF
	case err == io.EOF:
		r.err = &XAPIError{Statement: r.next, Offset: r.dec.InputOffset(), Reason: "input ends inside the statement array or result"}
	default:
		r.err = &XAPIError{Statement: r.next, Offset: r.dec.InputOffset(), Reason: "not an xAPI statement, statement array or statement result"}
	}
	return r.err
}

// Next returns the next statement as a record and its 0-based index among
// the input's statements.
func (r *XAPIReader) Next() (Record, int, error) {
	for {
		if r.err != nil {
			return Record{}, r.next, r.err
		}
		r.guard.reset()
		switch r.state {
		case xapiStart:
			if b, err := r.br.Peek(3); err == nil && bytes.Equal(b, []byte("\xef\xbb\xbf")) {
				r.br.Discard(3)
			}
			tok, err := r.peekStart()
			if err != nil {
				r.fail(err)
				continue
			}
			r.state = tok
			if tok == xapiArray || tok == xapiResult {
				if _, err := r.dec.Token(); err != nil {
					r.fail(err)
				}
			}
		case xapiStream:
			if !r.dec.More() {
				if _, err := r.dec.Token(); err != nil {
					r.fail(err)
				} else {
					r.fail(errors.New("unexpected token"))
				}
				continue
			}
			return r.statement()
		case xapiArray, xapiInList:
			if r.dec.More() {
				return r.statement()
			}
			if _, err := r.dec.Token(); err != nil { // the closing ]
				r.fail(err)
				continue
			}
			if r.state == xapiArray {
				r.state = xapiTrailer
			} else {
				r.state = xapiResult
			}
		case xapiResult:
			if !r.dec.More() {
				if _, err := r.dec.Token(); err != nil { // the closing }
					r.fail(err)
				} else {
					r.state = xapiTrailer
				}
				continue
			}
			tok, err := r.dec.Token()
			if err != nil {
				r.fail(err)
				continue
			}
			switch tok {
			case "statements":
				if t, err := r.dec.Token(); err != nil {
					r.fail(err)
				} else if t != json.Delim('[') {
					r.fail(errors.New("statements is not an array"))
				} else {
					r.state = xapiInList
				}
			case "more":
				var more string
				if err := r.dec.Decode(&more); err != nil {
					r.fail(err)
				}
			default:
				r.fail(errors.New("unknown member of a statement result"))
			}
		case xapiTrailer:
			if _, err := r.dec.Token(); err == io.EOF {
				r.err = io.EOF
			} else {
				r.fail(err) // nil err: more after the end
			}
		}
	}
}

// peekStart works out the input's form from its first character and, for
// an object, its first member's name, without consuming anything: '['
// an array of statements; '{' whose first member is "statements" or
// "more" a statement result; anything else a sequence of statements (the
// decoder reports what is not JSON). io.EOF for input of white space only.
func (r *XAPIReader) peekStart() (int, error) {
	for i := 0; ; i++ {
		b, err := r.br.Peek(i + 1)
		if len(b) <= i {
			if err == io.EOF {
				return 0, io.EOF
			}
			return 0, err
		}
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			continue
		case '[':
			return xapiArray, nil
		case '{':
			if name, ok := firstMemberName(r.br, i+1); ok && (name == "statements" || name == "more") {
				return xapiResult, nil
			}
		}
		return xapiStream, nil
	}
}

// firstMemberName reads the name of an object's first member from br's
// buffered input, starting at offset at (just after the '{').
func firstMemberName(br *bufio.Reader, at int) (string, bool) {
	b, _ := br.Peek(br.Size())
	if at > len(b) {
		return "", false
	}
	b = bytes.TrimLeft(b[at:], " \t\r\n")
	if len(b) == 0 || b[0] != '"' {
		return "", false
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			var name string
			if json.Unmarshal(b[:i+1], &name) != nil {
				return "", false
			}
			return name, true
		}
	}
	return "", false
}

// statement decodes the next JSON value as a statement.
func (r *XAPIReader) statement() (Record, int, error) {
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		return Record{}, r.next, r.fail(err)
	}
	idx := r.next
	r.next++
	rec, verr := ParseXAPIStatement(raw)
	if verr != nil {
		return Record{}, idx, verr
	}
	return rec, idx, nil
}

// ParseXAPIStatement parses one xAPI statement (a JSON object) into a
// record of type xapi_statement, strictly, as XAPIReader does.
func ParseXAPIStatement(data []byte) (Record, *ValidationError) {
	p := xapiParser{fields: map[string]any{}}
	p.statement(data)
	if p.err != nil {
		return Record{}, p.err
	}
	return Record{Type: XAPIType, Fields: p.fields}, nil
}

type xapiParser struct {
	fields map[string]any
	ext    [3]json.RawMessage // context, object, result extensions
	err    *ValidationError
}

func (p *xapiParser) fail(path, reason string) {
	if p.err == nil {
		p.err = &ValidationError{Field: path, Reason: reason}
	}
}

// object decodes data as a JSON object whose members are among allowed;
// nil after a failure.
func (p *xapiParser) object(path string, data []byte, allowed ...string) map[string]json.RawMessage {
	if p.err != nil {
		return nil
	}
	m, dup, ok := members(data)
	if !ok {
		if path == "" {
			p.fail("", ReasonSyntax)
		} else {
			p.fail(path, ReasonType)
		}
		return nil
	}
	if dup != "" {
		p.fail(join(path, dup), ReasonSyntax) // a member given twice
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(allowed, k) {
			p.fail(join(path, k), ReasonUnknownField)
			return nil
		}
		if bytes.Equal(m[k], []byte("null")) {
			p.fail(join(path, k), ReasonType) // xAPI has no null values
			return nil
		}
	}
	return m
}

// members decodes data as a JSON object, and returns the name of a member
// given twice, if any.
func members(data []byte) (m map[string]json.RawMessage, dup string, ok bool) {
	if len(data) == 0 || data[0] != '{' {
		return nil, "", false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, "", false
	}
	m = map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, "", false
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, "", false
		}
		if _, seen := m[name]; seen && dup == "" {
			dup = name
		}
		m[name] = v
	}
	return m, dup, true
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// str decodes a string member; "" and false when absent or after a failure.
func (p *xapiParser) str(m map[string]json.RawMessage, path, name string) (string, bool) {
	raw, ok := m[name]
	if !ok || p.err != nil {
		return "", false
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		p.fail(join(path, name), ReasonType)
		return "", false
	}
	return s, true
}

// check fails unless ok, with the member's path and reason.
func (p *xapiParser) check(ok bool, path, reason string) bool {
	if !ok {
		p.fail(path, reason)
	}
	return ok
}

var (
	uuidRE     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	sha1RE     = regexp.MustCompile(`^[0-9a-fA-F]{40}$`)
	schemeRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$`)
	durationRE = regexp.MustCompile(`^P(?:\d+(?:\.\d+)?Y)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?W)?(?:\d+(?:\.\d+)?D)?(?:T(?:\d+(?:\.\d+)?H)?(?:\d+(?:\.\d+)?M)?(?:\d+(?:\.\d+)?S)?)?$`)
	versionRE  = regexp.MustCompile(`^[12]\.0(?:\.\d+)?$`)
	langRE     = regexp.MustCompile(`^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$`)
)

// iri reports whether s is an absolute IRI: a scheme, a colon, and no
// white space.
func iri(s string) bool { return schemeRE.MatchString(s) }

func (p *xapiParser) statement(data []byte) {
	m := p.object("", data, "id", "actor", "verb", "object", "result", "context", "timestamp",
		"stored", "authority", "version", "attachments")
	if m == nil {
		return
	}
	if _, ok := m["attachments"]; ok {
		p.fail("attachments", ReasonUnknownField)
		return
	}
	for _, req := range []string{"actor", "verb", "object"} {
		if _, ok := m[req]; !ok {
			p.fail(req, ReasonRequired)
			return
		}
	}
	if id, ok := p.str(m, "", "id"); ok && p.check(uuidRE.MatchString(id), "id", ReasonType) {
		p.fields["statement_id"] = id
	}
	p.actor(m["actor"])
	p.verb(m["verb"])
	p.object1(m["object"])
	if raw, ok := m["result"]; ok {
		p.result(raw)
	}
	if raw, ok := m["context"]; ok {
		p.context(raw)
	}
	for _, name := range []string{"timestamp", "stored"} {
		if ts, ok := p.str(m, "", name); ok {
			if _, err := time.Parse(time.RFC3339Nano, ts); !p.check(err == nil, name, ReasonDate) {
				return
			}
			if name == "timestamp" {
				p.fields["timestamp"] = ts
			}
		}
	}
	if raw, ok := m["authority"]; ok {
		// The credential the LRS stored the statement under: checked, not kept.
		if a := p.object("authority", raw, "objectType", "name", "mbox", "mbox_sha1sum", "openid", "account", "member"); a != nil {
			p.str(a, "authority", "objectType")
		}
	}
	if v, ok := p.str(m, "", "version"); ok {
		p.check(versionRE.MatchString(v), "version", ReasonType)
	}
	p.extensions()
}

// objectTypeOf returns the objectType member of the object raw, if it is
// a string, else def.
func objectTypeOf(raw json.RawMessage, def string) string {
	var probe struct {
		ObjectType *string `json:"objectType"`
	}
	if raw[0] == '{' && json.Unmarshal(raw, &probe) == nil && probe.ObjectType != nil {
		return *probe.ObjectType
	}
	return def
}

func (p *xapiParser) actor(raw json.RawMessage) {
	// A Group is not one person: the record type has no fields for one.
	if !p.check(objectTypeOf(raw, "Agent") == "Agent", "actor.objectType", ReasonEnum) {
		return
	}
	m := p.object("actor", raw, "objectType", "name", "mbox", "mbox_sha1sum", "openid", "account")
	if m == nil {
		return
	}
	p.str(m, "actor", "objectType")
	if name, ok := p.str(m, "actor", "name"); ok {
		p.fields["actor_name"] = name
	}
	n := 0
	for _, k := range []string{"mbox", "mbox_sha1sum", "openid", "account"} {
		if _, ok := m[k]; ok {
			n++
		}
	}
	if n == 0 {
		p.fail("actor", ReasonRequired) // exactly one inverse functional identifier
		return
	}
	if !p.check(n == 1, "actor", ReasonType) {
		return
	}
	if v, ok := p.str(m, "actor", "mbox"); ok && p.check(strings.HasPrefix(v, "mailto:") && strings.Contains(v[7:], "@") && !strings.ContainsAny(v, " \t\r\n"), "actor.mbox", ReasonType) {
		p.fields["actor_id"], p.fields["actor_ifi"] = v, "mbox"
	}
	if v, ok := p.str(m, "actor", "mbox_sha1sum"); ok && p.check(sha1RE.MatchString(v), "actor.mbox_sha1sum", ReasonType) {
		p.fields["actor_id"], p.fields["actor_ifi"] = strings.ToLower(v), "mbox_sha1sum"
	}
	if v, ok := p.str(m, "actor", "openid"); ok && p.check(iri(v), "actor.openid", ReasonType) {
		p.fields["actor_id"], p.fields["actor_ifi"] = v, "openid"
	}
	if raw, ok := m["account"]; ok {
		a := p.object("actor.account", raw, "homePage", "name")
		if a == nil {
			return
		}
		home, okH := p.str(a, "actor.account", "homePage")
		name, okN := p.str(a, "actor.account", "name")
		if p.err != nil || !p.check(okH, "actor.account.homePage", ReasonRequired) || !p.check(okN && name != "", "actor.account.name", ReasonRequired) {
			return
		}
		// homePage is an IRL, which holds no "|": the first one separates.
		if p.check(iri(home) && !strings.Contains(home, "|"), "actor.account.homePage", ReasonType) {
			p.fields["actor_id"], p.fields["actor_ifi"] = home+"|"+name, "account"
		}
	}
}

// langMap decodes a language map and returns the value of en-US, else en,
// else of the first language tag in byte order.
func (p *xapiParser) langMap(path string, raw json.RawMessage) (string, bool) {
	var m map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
		p.fail(path, ReasonType)
		return "", false
	}
	vals := make(map[string]string, len(m))
	first := "" // the first tag in byte order
	for tag, v := range m {
		var s string
		if !p.check(langRE.MatchString(tag) && len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil, path, ReasonType) {
			return "", false
		}
		vals[tag] = s
		if first == "" || tag < first {
			first = tag
		}
	}
	if len(vals) == 0 {
		return "", false
	}
	for _, want := range []string{"en-US", "en"} {
		if s, ok := vals[want]; ok {
			return s, true
		}
	}
	return vals[first], true
}

func (p *xapiParser) verb(raw json.RawMessage) {
	m := p.object("verb", raw, "id", "display")
	if m == nil {
		return
	}
	id, ok := p.str(m, "verb", "id")
	if p.err != nil || !p.check(ok, "verb.id", ReasonRequired) || !p.check(iri(id), "verb.id", ReasonType) {
		return
	}
	p.fields["verb_id"] = id
	if d, ok := m["display"]; ok {
		if s, ok := p.langMap("verb.display", d); ok {
			p.fields["verb_display"] = s
		}
	}
}

// activity checks an Activity object and returns its id, and its
// definition when it has one.
func (p *xapiParser) activity(path string, raw json.RawMessage) (id string, def map[string]json.RawMessage) {
	m := p.object(path, raw, "objectType", "id", "definition")
	if m == nil {
		return "", nil
	}
	if ot, ok := p.str(m, path, "objectType"); ok && !p.check(ot == "Activity", join(path, "objectType"), ReasonEnum) {
		return "", nil
	}
	id, ok := p.str(m, path, "id")
	if p.err != nil || !p.check(ok, join(path, "id"), ReasonRequired) || !p.check(iri(id), join(path, "id"), ReasonType) {
		return "", nil
	}
	if d, ok := m["definition"]; ok {
		def = p.object(join(path, "definition"), d, "name", "description", "type", "moreInfo", "extensions",
			"interactionType", "correctResponsesPattern", "choices", "scale", "source", "target", "steps")
		if def == nil {
			return "", nil
		}
		for _, lm := range []string{"name", "description"} {
			if raw, ok := def[lm]; ok {
				p.langMap(join(path, "definition."+lm), raw)
			}
		}
		for _, u := range []string{"type", "moreInfo"} {
			if v, ok := p.str(def, join(path, "definition"), u); ok {
				p.check(iri(v), join(path, "definition."+u), ReasonType)
			}
		}
		p.interaction(join(path, "definition"), def)
	}
	return id, def
}

// interactionTypes are the values of an activity definition's
// interactionType (xAPI Data §2.4.4.1, interaction activities).
var interactionTypes = []string{"true-false", "choice", "fill-in", "long-fill-in", "matching", "performance",
	"sequencing", "likert", "numeric", "other"}

// interaction checks the interaction members of an activity definition:
// interactionType from its set, correctResponsesPattern a list of strings,
// and each interaction component list (choices, scale, source, target,
// steps) a list of objects with an id and an optional description.
func (p *xapiParser) interaction(path string, def map[string]json.RawMessage) {
	if it, ok := p.str(def, path, "interactionType"); ok {
		p.check(slices.Contains(interactionTypes, it), join(path, "interactionType"), ReasonEnum)
	}
	if raw, ok := def["correctResponsesPattern"]; ok && p.err == nil {
		var list []string
		p.check(raw[0] == '[' && json.Unmarshal(raw, &list) == nil, join(path, "correctResponsesPattern"), ReasonType)
	}
	for _, name := range []string{"choices", "scale", "source", "target", "steps"} {
		raw, ok := def[name]
		if !ok || p.err != nil {
			continue
		}
		cpath := join(path, name)
		var list []json.RawMessage
		if !p.check(raw[0] == '[' && json.Unmarshal(raw, &list) == nil, cpath, ReasonType) {
			return
		}
		for _, c := range list {
			m := p.object(cpath, c, "id", "description")
			id, ok := p.str(m, cpath, "id")
			if p.err != nil || !p.check(ok && id != "", join(cpath, "id"), ReasonRequired) {
				return
			}
			if d, ok := m["description"]; ok {
				p.langMap(join(cpath, "description"), d)
			}
		}
	}
}

func (p *xapiParser) object1(raw json.RawMessage) {
	switch objectTypeOf(raw, "Activity") {
	case "Activity":
		id, def := p.activity("object", raw)
		if p.err != nil {
			return
		}
		p.fields["object_type"], p.fields["object_id"] = "Activity", id
		if def != nil {
			if n, ok := def["name"]; ok {
				if s, ok := p.langMap("object.definition.name", n); ok {
					p.fields["object_name"] = s
				}
			}
			if t, ok := p.str(def, "object.definition", "type"); ok {
				p.fields["object_activity_type"] = t
			}
			p.ext[1] = def["extensions"]
		}
	case "StatementRef":
		m := p.object("object", raw, "objectType", "id")
		id, ok := p.str(m, "object", "id")
		if p.err != nil || !p.check(ok, "object.id", ReasonRequired) || !p.check(uuidRE.MatchString(id), "object.id", ReasonType) {
			return
		}
		p.fields["object_type"], p.fields["object_id"] = "StatementRef", id
	default:
		// Agent, Group and SubStatement objects are about someone other
		// than the actor, or nest a statement: the record type has no
		// fields for them.
		p.fail("object.objectType", ReasonEnum)
	}
}

func (p *xapiParser) number(m map[string]json.RawMessage, path, name string) (json.Number, float64, bool) {
	raw, ok := m[name]
	if !ok || p.err != nil {
		return "", 0, false
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, _, isNum := jsonNumber(string(raw)); !isNum || dec.Decode(&n) != nil {
		p.fail(join(path, name), ReasonType)
		return "", 0, false
	}
	f, err := n.Float64()
	if !p.check(err == nil, join(path, name), ReasonType) {
		return "", 0, false
	}
	return n, f, true
}

func (p *xapiParser) result(raw json.RawMessage) {
	m := p.object("result", raw, "score", "success", "completion", "response", "duration", "extensions")
	if m == nil {
		return
	}
	if s, ok := m["score"]; ok {
		sc := p.object("result.score", s, "scaled", "raw", "min", "max")
		if sc == nil {
			return
		}
		scaled, fs, hasScaled := p.number(sc, "result.score", "scaled")
		rawN, fr, hasRaw := p.number(sc, "result.score", "raw")
		minN, fmin, hasMin := p.number(sc, "result.score", "min")
		maxN, fmax, hasMax := p.number(sc, "result.score", "max")
		switch {
		case p.err != nil:
			return
		case hasScaled && (fs < -1 || fs > 1):
			p.fail("result.score.scaled", ReasonType)
		case hasMin && hasMax && fmin >= fmax:
			p.fail("result.score.max", ReasonType)
		case hasRaw && hasMin && fr < fmin:
			p.fail("result.score.raw", ReasonType)
		case hasRaw && hasMax && fr > fmax:
			p.fail("result.score.raw", ReasonType)
		}
		for _, v := range []struct {
			has   bool
			field string
			n     json.Number
		}{{hasScaled, "result_score_scaled", scaled}, {hasRaw, "result_score_raw", rawN}, {hasMin, "result_score_min", minN}, {hasMax, "result_score_max", maxN}} {
			if v.has {
				p.fields[v.field] = v.n
			}
		}
	}
	for _, b := range []struct{ name, field string }{{"success", "result_success"}, {"completion", "result_completion"}} {
		if raw, ok := m[b.name]; ok && p.err == nil {
			var v bool
			if p.check(json.Unmarshal(raw, &v) == nil, "result."+b.name, ReasonType) {
				p.fields[b.field] = v
			}
		}
	}
	if s, ok := p.str(m, "result", "response"); ok {
		p.fields["result_response"] = s
	}
	if d, ok := p.str(m, "result", "duration"); ok && p.check(durationRE.MatchString(d) && d != "P" && !strings.HasSuffix(d, "T"), "result.duration", ReasonType) {
		p.fields["result_duration"] = d
	}
	p.ext[2] = m["extensions"]
}

func (p *xapiParser) context(raw json.RawMessage) {
	m := p.object("context", raw, "registration", "instructor", "team", "contextActivities", "revision",
		"platform", "language", "statement", "extensions")
	if m == nil {
		return
	}
	// Other people, and references to other statements, have no field.
	for _, other := range []string{"instructor", "team", "statement"} {
		if _, ok := m[other]; ok {
			p.fail("context."+other, ReasonUnknownField)
			return
		}
	}
	if v, ok := p.str(m, "context", "registration"); ok && p.check(uuidRE.MatchString(v), "context.registration", ReasonType) {
		p.fields["context_registration"] = v
	}
	p.str(m, "context", "revision")
	if v, ok := p.str(m, "context", "platform"); ok {
		p.fields["context_platform"] = v
	}
	if v, ok := p.str(m, "context", "language"); ok && p.check(langRE.MatchString(v), "context.language", ReasonType) {
		p.fields["context_language"] = v
	}
	if ca, ok := m["contextActivities"]; ok {
		c := p.object("context.contextActivities", ca, "parent", "grouping", "category", "other")
		for _, kind := range []string{"parent", "grouping", "category", "other"} {
			raw, ok := c[kind]
			if !ok || p.err != nil {
				continue
			}
			path := "context.contextActivities." + kind
			var list []json.RawMessage
			if raw[0] == '{' {
				list = []json.RawMessage{raw} // xAPI 1.0 allowed a single activity
			} else if raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
				p.fail(path, ReasonType)
				return
			}
			ids := make([]string, 0, len(list))
			for _, a := range list {
				id, _ := p.activity(path, a)
				if p.err != nil {
					return
				}
				ids = append(ids, id) // an IRI holds no space
			}
			if len(ids) > 0 {
				p.fields["context_"+kind] = strings.Join(ids, " ")
			}
		}
	}
	p.ext[0] = m["extensions"]
}

// xapiExtensions name the extensions of xapiParser.ext, in its order:
// the key in the extensions field and the member's path in a statement.
var xapiExtensions = [len(xapiParser{}.ext)]struct{ name, path string }{
	{"context", "context.extensions"}, {"object", "object.definition.extensions"}, {"result", "result.extensions"},
}

// extensions writes the statement's extensions as one JSON object,
// {"context":{…},"object":{…},"result":{…}}, each compacted as given.
func (p *xapiParser) extensions() {
	if p.err != nil {
		return
	}
	var buf bytes.Buffer
	for i, e := range xapiExtensions {
		raw := p.ext[i]
		if raw == nil {
			continue
		}
		name, path := e.name, e.path
		var m map[string]json.RawMessage
		if raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
			p.fail(path, ReasonType)
			return
		}
		for k := range m {
			if !p.check(iri(k), path, ReasonType) {
				return
			}
		}
		if len(m) == 0 {
			continue
		}
		if buf.Len() == 0 {
			buf.WriteByte('{')
		} else {
			buf.WriteByte(',')
		}
		buf.WriteString(`"` + name + `":`)
		json.Compact(&buf, raw)
	}
	if buf.Len() > 0 {
		buf.WriteByte('}')
		p.fields["extensions"] = buf.String()
	}
}
