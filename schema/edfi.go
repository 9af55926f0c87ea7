package schema

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
)

// EdFiReader reads records from an Ed-Fi XML interchange (data standard
// 5.x, and the Parent names of 3.x/4.x), streaming with encoding/xml: the
// children of the interchange's root element are read one at a time and
// mapped onto the canonical record types of GRADING.md §3. Elements it
// does not map are skipped, not errors. Namespaces are ignored; elements
// are matched by local name. Descriptor values ("uri://ed-fi.org/
// SexDescriptor#Female") become their code value ("Female").
//
//	Student                                     → student
//	  StudentUniqueId → student_id, Name/FirstName + " " + Name/LastSurname
//	  → name, BirthData/BirthDate → birth_date, BirthData/BirthSex (or Sex)
//	  → gender, BirthData/BirthCountry → nationality
//	Contact (Parent) with StudentContactAssociation (StudentParentAssociation)
//	                                            → guardian
//	  ContactUniqueId → guardian_id, name as above, first
//	  Telephone/TelephoneNumber → phone, first ElectronicMail/
//	  ElectronicMailAddress → email, first Address → address ("street,
//	  city, state postal code"), HighestCompletedLevelOfEducation →
//	  education_level; from the association: StudentUniqueId → student_id,
//	  Relation → relation, LivesWith → lives_with_student
//	StudentHealth                               → health_record
//	  StudentUniqueId → student_id, AsOfDate → record_date, kind
//	  "exemption" when a (non-)medical exemption is present, else
//	  "immunization" when immunizations are listed, else "other";
//	  immunization types and names → description
//	Student…ProgramAssociation (StudentProgramAssociation and its
//	special-education, Section 504, homeless, school food service,
//	neglected-or-delinquent, migrant, CTE, language instruction, Title I
//	variants)                                   → program_participation
//	  StudentUniqueId → student_id, ProgramName → program_name,
//	  BeginDate/EndDate → begin_date/end_date, ReasonExited → reason,
//	  program_type from the element's name, or for the plain
//	  StudentProgramAssociation from ProgramType: special_education,
//	  disability_support (Section 504), homeless, food_service,
//	  neglected_delinquent, migrant (the L4 values), career_technical,
//	  language_instruction, title_i_part_a, or the descriptor in snake case
//	StudentDisciplineIncidentBehaviorAssociation → discipline
//	  StudentUniqueId → student_id, Behavior → incident_type,
//	  BehaviorDetailedDescription → description, the referenced
//	  DisciplineIncident's IncidentDate → incident_date
//	DisciplineAction                            → discipline
//	  StudentUniqueId → student_id, Discipline → action,
//	  ActualDisciplineActionLength (else DisciplineActionLength) →
//	  action_length_days, the referenced incident's date and behavior →
//	  incident_date, incident_type
//	StudentGradebookEntry, Grade                → course_grade
//	  StudentUniqueId → student_id, NumericGradeEarned → score,
//	  LetterGradeEarned → grade_letter, the referenced GradebookEntry's
//	  (or the element's own) LocalCourseCode → course_code and
//	  SessionName → term
//
// # Joins
//
// Three mappings need a second element: guardians join contacts with their
// student associations, discipline records take dates from incidents, and
// grades take course codes from gradebook entries. The reader keeps for
// this only small join tables, never the records themselves: per
// association its contact key, student id, relation and lives-with flag;
// per incident its date, behavior and description; per gradebook entry its
// course code and term (at most 1<<20 entries each; beyond that, records
// are emitted without the joined fields).
//
// When the input is an io.ReadSeeker that can seek (a file) and mentions
// one of the joined elements (a byte search, then a seek back), the first
// call of Next reads the input once to fill the join tables, then seeks
// back and reads it again to emit records, so the order of elements does
// not matter: each Contact gives one guardian record per association of it
// (one record without student_id if it has none), in the order of the
// Contacts. Otherwise (a pipe) the input is read once and a table is filled
// as its elements come: a Contact joins the associations seen before it,
// and an association that comes after its Contact gives a second guardian
// record with guardian_id, student_id, relation and lives_with_student
// only; incidents and gradebook entries after their references are not
// joined. In both cases an association whose Contact never comes gives a
// guardian record at the end of the input.
//
// Ed-Fi's own interchanges put Contacts before their associations
// (Contact.xml of the Grand Bend sample: 1,873 Contacts, then 1,872
// associations), so read from a file they give one complete record per
// guardian and student.
//
// # Errors
//
// A record element larger than MaxLineBytes or nested deeper than 64
// levels gives a *ValidationError{Reason: "syntax"} and reading goes on.
// Malformed XML gives a *ValidationError{Reason: "syntax"} at the index
// where it was found and ends the input (XML cannot be resynchronised);
// so does an input without a root element. Read errors are returned as
// errors.
type EdFiReader struct {
	src        io.Reader
	only       string // keep only records of this type, if set
	guard      *guardReader
	dec        *xml.Decoder
	depth      int
	seenRoot   bool // the root element has started
	started    bool // the first pass, if any, is done
	prescanned bool // the join tables were filled by a first pass
	queue      []edfiItem
	next       int
	err        error // sticky

	el    element
	stack []string // element paths within the current record
	paths map[pathKey]string
	text  []byte

	assocs    []contactAssoc
	assocKeys map[string][]int // contact key → indices into assocs not yet joined
	contacts  map[string]string
	incidents map[string]incident
	entries   map[string]gradebookEntry
}

type edfiItem struct {
	typ  string
	rec  Record
	verr *ValidationError
}

type contactAssoc struct {
	key, uid, studentID, relation, livesWith string
	joined                                   bool
}

type incident struct{ date, behavior, description string }

type gradebookEntry struct{ courseCode, term string }

// Limits of the Ed-Fi reader.
const (
	maxEdFiDepth    = 64      // element depth within a record
	maxXMLDepth     = 1 << 10 // element depth in the document; deeper ends the input
	maxRecordNodes  = 1 << 16 // elements and attributes within a record
	maxJoinEntries  = 1 << 20 // entries per join table
	maxInternedPath = 1 << 12
)

// NewEdFiReader returns a reader of records from the Ed-Fi XML interchange
// r. recordType, if not empty, keeps only records of that type (one of
// EdFiTypes); indices count the records kept.
func NewEdFiReader(r io.Reader, recordType string) (*EdFiReader, error) {
	if recordType != "" {
		ok := false
		for _, t := range edfiTypes {
			ok = ok || t == recordType
		}
		if !ok {
			return nil, fmt.Errorf("schema: Ed-Fi input gives no records of type %q (it gives %q)", recordType, edfiTypes)
		}
	}
	return &EdFiReader{
		src:       r,
		only:      recordType,
		paths:     map[pathKey]string{},
		assocKeys: map[string][]int{},
		contacts:  map[string]string{},
		incidents: map[string]incident{},
		entries:   map[string]gradebookEntry{},
	}, nil
}

// Next returns the next record and its 0-based index among the records
// the reader gives.
func (r *EdFiReader) Next() (Record, int, error) {
	for {
		if len(r.queue) > 0 {
			it := r.queue[0]
			r.queue[0] = edfiItem{}
			r.queue = r.queue[1:]
			if r.only != "" && it.typ != "" && it.typ != r.only {
				continue
			}
			idx := r.next
			r.next++
			if it.verr != nil {
				return Record{}, idx, it.verr
			}
			return it.rec, idx, nil
		}
		r.queue = r.queue[:0]
		if r.err != nil {
			return Record{}, r.next, r.err
		}
		if !r.started {
			r.started = true
			if err := r.prescan(); err != nil {
				r.err = err
				continue
			}
			r.open(r.src)
		}
		r.step()
	}
}

func (r *EdFiReader) open(src io.Reader) {
	r.guard = &guardReader{r: src, limit: MaxLineBytes + guardSlack}
	r.dec = xml.NewDecoder(r.guard)
	r.dec.CharsetReader = func(charset string, input io.Reader) (io.Reader, error) {
		if strings.EqualFold(charset, "utf-8") || strings.EqualFold(charset, "us-ascii") {
			return input, nil
		}
		return nil, errors.New("unsupported charset")
	}
	r.depth = 0
}

// prescan fills the join tables from a seekable input and seeks back.
func (r *EdFiReader) prescan() error {
	rs, ok := r.src.(io.ReadSeeker)
	if !ok {
		return nil
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil // a pipe: one pass
	}
	// Most interchanges have nothing to join: a byte search for the
	// names of the joined elements is much cheaper than an XML pass.
	need, err := mentionsJoined(rs)
	if err != nil {
		return fmt.Errorf("schema: read edfi: %w", err)
	}
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("schema: read edfi: seek back after the first pass: %w", err)
	}
	if !need {
		return nil
	}
	r.open(rs)
	for r.err == nil {
		r.guard.reset()
		tok, err := r.dec.Token()
		if err != nil {
			if r.guard.err != nil {
				return fmt.Errorf("schema: read edfi: %w", r.guard.err)
			}
			break // the second pass reports the error where it is
		}
		if err := r.token(tok, true); err != nil {
			if r.guard.err != nil {
				return fmt.Errorf("schema: read edfi: %w", r.guard.err)
			}
			break
		}
	}
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return fmt.Errorf("schema: read edfi: seek back after the first pass: %w", err)
	}
	r.prescanned = true
	r.seenRoot = false
	return nil
}

// joinedNames are the local names of the elements that fill join tables;
// "ContactAssociation" matches StudentContactAssociation, and so on.
var joinedNames = [][]byte{[]byte("ContactAssociation"), []byte("ParentAssociation"), []byte("DisciplineIncident"), []byte("GradebookEntry")}

// mentionsJoined reports whether r's bytes contain one of joinedNames
// (false positives only cost a first pass).
func mentionsJoined(r io.Reader) (bool, error) {
	const overlap = 32
	buf := make([]byte, 64<<10)
	n := 0 // bytes kept from the previous chunk
	for {
		m, err := io.ReadFull(r, buf[n:])
		chunk := buf[:n+m]
		for _, name := range joinedNames {
			if bytes.Contains(chunk, name) {
				return true, nil
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		n = copy(buf, chunk[len(chunk)-overlap:])
	}
}

// step reads tokens until one record element has been handled or the
// input ends.
func (r *EdFiReader) step() {
	for len(r.queue) == 0 && r.err == nil {
		r.guard.reset()
		tok, err := r.dec.Token()
		if err == nil {
			err = r.token(tok, false)
		}
		if err == nil {
			continue
		}
		switch {
		case r.guard.err != nil:
			r.err = fmt.Errorf("schema: read edfi: %w", r.guard.err)
		case err == io.EOF && r.seenRoot:
			r.flushAssocs()
			r.err = io.EOF
		default:
			r.queue = append(r.queue, edfiItem{verr: &ValidationError{Reason: ReasonSyntax}})
			r.err = io.EOF
		}
	}
}

// token handles one token at document level; in the first pass (pre) it
// only fills the join tables.
func (r *EdFiReader) token(tok xml.Token, pre bool) error {
	switch t := tok.(type) {
	case xml.StartElement:
		r.depth++
		if r.depth == 1 {
			r.seenRoot = true
			return nil
		}
		if r.depth > maxXMLDepth {
			return errTooLong
		}
		name := t.Name.Local
		if !r.wanted(name, pre) {
			err := r.skip()
			r.depth--
			return err
		}
		if err := r.collect(t); err != nil {
			return err
		}
		r.depth--
		r.handle(pre)
	case xml.EndElement:
		r.depth--
	}
	return nil
}

// wanted reports whether a record-level element is read (in the first
// pass: whether it fills a join table).
func (r *EdFiReader) wanted(name string, pre bool) bool {
	switch name {
	case "StudentContactAssociation", "StudentParentAssociation", "DisciplineIncident", "GradebookEntry":
		// Read in the first pass, or in the only one.
		return pre || !r.prescanned
	}
	return !pre && recordTypeOf(name) != ""
}

// recordTypeOf returns the record type an element gives, or "".
func recordTypeOf(name string) string {
	switch name {
	case "Student":
		return "student"
	case "Contact", "Parent":
		return "guardian"
	case "StudentHealth":
		return "health_record"
	case "StudentDisciplineIncidentBehaviorAssociation", "DisciplineAction":
		return "discipline"
	case "StudentGradebookEntry", "Grade":
		return "course_grade"
	}
	if strings.HasPrefix(name, "Student") && strings.HasSuffix(name, "ProgramAssociation") {
		return "program_participation"
	}
	return ""
}

// skip consumes the rest of the current element.
func (r *EdFiReader) skip() error {
	depth := 1
	for depth > 0 {
		r.guard.reset()
		tok, err := r.dec.Token()
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
			if r.depth+depth > maxXMLDepth {
				return errTooLong
			}
		case xml.EndElement:
			depth--
		}
	}
	return nil
}

// element is one record-level element as a flat list of (path, text)
// nodes: paths are relative ("Name/FirstName"), attributes are
// "path@name" ("@id" for the element's own).
type element struct {
	name     string
	nodes    []xnode
	size     int
	overflow bool
}

type xnode struct{ path, text string }

type pathKey struct{ parent, name string }

func (e *element) add(path, text string) {
	if e.overflow {
		return
	}
	e.size += len(path) + len(text) + 32
	if e.size > MaxLineBytes || len(e.nodes) >= maxRecordNodes {
		e.overflow = true
		return
	}
	e.nodes = append(e.nodes, xnode{path, text})
}

// get returns the text of the first node at path.
func (e *element) get(path string) string {
	for _, n := range e.nodes {
		if n.path == path {
			return n.text
		}
	}
	return ""
}

// find returns the text of the first node whose path is suffix or ends
// in "/"+suffix.
func (e *element) find(suffix string) string {
	for _, n := range e.nodes {
		if n.path == suffix || (strings.HasSuffix(n.path, suffix) && n.path[len(n.path)-len(suffix)-1] == '/') {
			return n.text
		}
	}
	return ""
}

// all returns the non-empty texts of the nodes at path.
func (e *element) all(path string) []string {
	var out []string
	for _, n := range e.nodes {
		if n.path == path && n.text != "" {
			out = append(out, n.text)
		}
	}
	return out
}

// collect reads the element that start opened into r.el.
func (r *EdFiReader) collect(start xml.StartElement) error {
	e := &r.el
	clear(e.nodes)
	*e = element{name: start.Name.Local, nodes: e.nodes[:0]}
	for _, a := range start.Attr {
		e.add("@"+a.Name.Local, a.Value)
	}
	r.stack = r.stack[:0]
	depth := 0 // below the record element
	leaf := false
	r.text = r.text[:0]
	for {
		r.guard.reset()
		tok, err := r.dec.Token()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if r.depth+depth > maxXMLDepth {
				return errTooLong
			}
			if depth > maxEdFiDepth {
				e.overflow = true
				continue
			}
			parent := ""
			if len(r.stack) > 0 {
				parent = r.stack[len(r.stack)-1]
			}
			path := r.path(parent, t.Name.Local)
			r.stack = append(r.stack, path)
			for _, a := range t.Attr {
				e.add(path+"@"+a.Name.Local, a.Value)
			}
			r.text = r.text[:0]
			leaf = true
		case xml.CharData:
			if leaf && len(r.text) <= MaxLineBytes {
				r.text = append(r.text, t...)
			}
		case xml.EndElement:
			if depth == 0 {
				return nil
			}
			depth--
			if depth >= maxEdFiDepth {
				continue
			}
			text := ""
			if leaf {
				text = strings.TrimSpace(string(r.text))
			}
			e.add(r.stack[len(r.stack)-1], text)
			r.stack = r.stack[:len(r.stack)-1]
			leaf = false
		}
	}
}

// path returns parent + "/" + name, interned.
func (r *EdFiReader) path(parent, name string) string {
	k := pathKey{parent, name}
	if p, ok := r.paths[k]; ok {
		return p
	}
	p := name
	if parent != "" {
		p = parent + "/" + name
	}
	if len(r.paths) < maxInternedPath {
		r.paths[k] = p
	}
	return p
}

// handle maps the collected element r.el.
func (r *EdFiReader) handle(pre bool) {
	e := &r.el
	typ := recordTypeOf(e.name)
	if e.overflow {
		if !pre && typ != "" {
			r.emitErr(typ, ReasonSyntax)
		}
		return
	}
	switch e.name {
	case "StudentContactAssociation", "StudentParentAssociation":
		r.association(e, pre)
	case "DisciplineIncident":
		r.addIncident(e)
	case "GradebookEntry":
		id := e.find("GradebookEntryIdentifier") + "|" + e.get("Namespace")
		if len(r.entries) < maxJoinEntries {
			r.entries[id] = gradebookEntry{courseCode: e.find("LocalCourseCode"), term: e.find("SessionName")}
		}
	case "Student":
		f := map[string]any{}
		set(f, "student_id", e.get("StudentUniqueId"))
		set(f, "name", personName(e))
		set(f, "birth_date", e.get("BirthData/BirthDate"))
		set(f, "gender", descriptorValue(first(e.get("BirthData/BirthSex"), e.get("Sex"))))
		set(f, "nationality", descriptorValue(e.get("BirthData/BirthCountry")))
		r.emit("student", f)
	case "Contact", "Parent":
		r.contact(e)
	case "StudentHealth":
		f := map[string]any{}
		set(f, "student_id", e.find("StudentUniqueId"))
		set(f, "record_date", e.get("AsOfDate"))
		var items []string
		kind := "other"
		for _, n := range e.nodes {
			switch {
			case n.path == "RequiredImmunization/ImmunizationType" && n.text != "":
				items = append(items, descriptorValue(n.text))
			case n.path == "AdditionalImmunization/ImmunizationName" && n.text != "":
				items = append(items, n.text)
			}
			switch {
			case strings.HasSuffix(n.path, "MedicalExemption"), n.path == "NonMedicalImmunizationExemption":
				kind = "exemption"
			case kind == "other" && strings.HasSuffix(n.path, "Immunization"):
				kind = "immunization"
			}
		}
		f["kind"] = kind
		set(f, "description", strings.Join(items, ", "))
		r.emit("health_record", f)
	case "StudentDisciplineIncidentBehaviorAssociation":
		f := map[string]any{}
		set(f, "student_id", e.get("StudentReference/StudentIdentity/StudentUniqueId"))
		inc := r.lookupIncident("DisciplineIncidentReference", e)
		set(f, "incident_date", inc.date)
		set(f, "incident_type", first(descriptorValue(e.get("Behavior")), inc.behavior))
		set(f, "description", first(e.get("BehaviorDetailedDescription"), inc.description))
		r.emit("discipline", f)
	case "DisciplineAction":
		f := map[string]any{}
		set(f, "student_id", e.get("StudentReference/StudentIdentity/StudentUniqueId"))
		set(f, "action", descriptorValue(e.get("Discipline")))
		setNumber(f, "action_length_days", first(e.get("ActualDisciplineActionLength"), e.get("DisciplineActionLength")))
		var inc incident
		var behavior string
		for _, n := range e.nodes {
			if strings.HasSuffix(n.path, "AssociationIdentity") {
				prefix := n.path + "/"
				inc = r.lookupIncident(prefix+"DisciplineIncidentReference", e)
				behavior = e.get(prefix + "Behavior")
				break
			}
		}
		set(f, "incident_date", inc.date)
		set(f, "incident_type", first(descriptorValue(behavior), inc.behavior))
		r.emit("discipline", f)
	case "StudentGradebookEntry":
		f := map[string]any{}
		set(f, "student_id", e.find("StudentUniqueId"))
		ent := r.entries[e.find("GradebookEntryIdentity/GradebookEntryIdentifier")+"|"+e.find("GradebookEntryIdentity/Namespace")]
		set(f, "course_code", first(ent.courseCode, e.find("LocalCourseCode")))
		set(f, "term", first(ent.term, e.find("SessionName")))
		setNumber(f, "score", e.get("NumericGradeEarned"))
		set(f, "grade_letter", e.get("LetterGradeEarned"))
		r.emit("course_grade", f)
	case "Grade":
		f := map[string]any{}
		set(f, "student_id", e.find("StudentUniqueId"))
		set(f, "course_code", e.find("LocalCourseCode"))
		set(f, "term", e.find("SessionName"))
		setNumber(f, "score", e.get("NumericGradeEarned"))
		set(f, "grade_letter", e.get("LetterGradeEarned"))
		r.emit("course_grade", f)
	default:
		if typ == "program_participation" {
			r.program(e)
		}
	}
}

func (r *EdFiReader) emit(typ string, f map[string]any) {
	r.queue = append(r.queue, edfiItem{typ: typ, rec: Record{Type: typ, Fields: f}})
}

func (r *EdFiReader) emitErr(typ, reason string) {
	r.queue = append(r.queue, edfiItem{typ: typ, verr: &ValidationError{Reason: reason}})
}

// contactKeys returns the keys a contact is referenced by.
func contactKeys(e *element) (uid, byRef, byUID string) {
	uid = first(e.get("ContactUniqueId"), e.get("ParentUniqueId"))
	if id := e.get("@id"); id != "" {
		byRef = "ref:" + id
	}
	if uid != "" {
		byUID = "uid:" + uid
	}
	return uid, byRef, byUID
}

func (r *EdFiReader) contact(e *element) {
	uid, byRef, byUID := contactKeys(e)
	base := map[string]any{}
	set(base, "guardian_id", uid)
	set(base, "name", personName(e))
	set(base, "phone", e.get("Telephone/TelephoneNumber"))
	set(base, "email", e.get("ElectronicMail/ElectronicMailAddress"))
	set(base, "address", address(e))
	set(base, "education_level", descriptorValue(e.get("HighestCompletedLevelOfEducation")))
	joined := 0
	for _, key := range []string{byRef, byUID} {
		if key == "" {
			continue
		}
		for _, i := range r.assocKeys[key] {
			a := &r.assocs[i]
			if a.joined {
				continue
			}
			a.joined = true
			f := maps.Clone(base)
			setAssoc(f, a)
			r.emit("guardian", f)
			joined++
		}
		delete(r.assocKeys, key)
	}
	if joined == 0 {
		r.emit("guardian", base)
	}
	if !r.prescanned {
		for _, key := range []string{byRef, byUID} {
			if key != "" && len(r.contacts) < maxJoinEntries {
				r.contacts[key] = uid
			}
		}
	}
}

func (r *EdFiReader) association(e *element, pre bool) {
	a := contactAssoc{
		studentID: e.get("StudentReference/StudentIdentity/StudentUniqueId"),
		relation:  descriptorValue(e.get("Relation")),
		livesWith: e.get("LivesWith"),
	}
	for _, ref := range []string{"ContactReference", "ParentReference"} {
		if uid := first(e.get(ref+"/ContactIdentity/ContactUniqueId"), e.get(ref+"/ParentIdentity/ParentUniqueId")); uid != "" {
			a.uid, a.key = uid, "uid:"+uid
			break
		}
		if id := e.get(ref + "@ref"); id != "" {
			a.key = "ref:" + id
			break
		}
	}
	if !pre {
		if uid, ok := r.contacts[a.key]; ok && a.key != "" {
			// One pass, the contact came first: a record of the link.
			f := map[string]any{}
			set(f, "guardian_id", uid)
			setAssoc(f, &a)
			r.emit("guardian", f)
			return
		}
	}
	if len(r.assocs) >= maxJoinEntries {
		return
	}
	r.assocs = append(r.assocs, a)
	if a.key != "" {
		r.assocKeys[a.key] = append(r.assocKeys[a.key], len(r.assocs)-1)
	}
}

// flushAssocs emits the associations whose contact never came.
func (r *EdFiReader) flushAssocs() {
	for i := range r.assocs {
		a := &r.assocs[i]
		if a.joined {
			continue
		}
		a.joined = true
		f := map[string]any{}
		set(f, "guardian_id", a.uid)
		setAssoc(f, a)
		r.emit("guardian", f)
	}
	r.assocs, r.assocKeys = nil, map[string][]int{}
}

func setAssoc(f map[string]any, a *contactAssoc) {
	set(f, "student_id", a.studentID)
	set(f, "relation", a.relation)
	switch v := strings.TrimSpace(a.livesWith); {
	case v == "":
	case v == "1" || strings.EqualFold(v, "true"):
		f["lives_with_student"] = true
	case v == "0" || strings.EqualFold(v, "false"):
		f["lives_with_student"] = false
	default:
		f["lives_with_student"] = v // Classify reports the type
	}
}

func (r *EdFiReader) addIncident(e *element) {
	inc := incident{
		date:        e.get("IncidentDate"),
		behavior:    descriptorValue(e.get("Behavior/Behavior")),
		description: first(e.get("Behavior/BehaviorDetailedDescription"), e.get("IncidentDescription")),
	}
	for _, key := range []string{
		"ref:" + e.get("@id"),
		"ident:" + e.get("IncidentIdentifier") + "|" + e.get("SchoolReference/SchoolIdentity/SchoolId"),
	} {
		if key != "ref:" && len(r.incidents) < maxJoinEntries {
			r.incidents[key] = inc
		}
	}
}

// lookupIncident returns the incident referenced by the element at path
// ref of e, by its id attribute or its identity.
func (r *EdFiReader) lookupIncident(ref string, e *element) incident {
	if id := e.get(ref + "@ref"); id != "" {
		if inc, ok := r.incidents["ref:"+id]; ok {
			return inc
		}
	}
	ident := ref + "/DisciplineIncidentIdentity/"
	return r.incidents["ident:"+e.get(ident+"IncidentIdentifier")+"|"+e.get(ident+"SchoolReference/SchoolIdentity/SchoolId")]
}

// programTypes maps the specialised program associations onto
// program_type values.
var programTypes = map[string]string{
	"StudentSpecialEducationProgramAssociation":      "special_education",
	"StudentSection504ProgramAssociation":            "disability_support",
	"StudentHomelessProgramAssociation":              "homeless",
	"StudentSchoolFoodServiceProgramAssociation":     "food_service",
	"StudentNeglectedOrDelinquentProgramAssociation": "neglected_delinquent",
	"StudentMigrantEducationProgramAssociation":      "migrant",
	"StudentCTEProgramAssociation":                   "career_technical",
	"StudentLanguageInstructionProgramAssociation":   "language_instruction",
	"StudentTitleIPartAProgramAssociation":           "title_i_part_a",
}

// programTypeDescriptors maps ProgramTypeDescriptor code values (lower
// case) of a plain StudentProgramAssociation onto program_type values.
var programTypeDescriptors = map[string]string{
	"special education":                  "special_education",
	"section 504 placement":              "disability_support",
	"homeless":                           "homeless",
	"school food service":                "food_service",
	"neglected and delinquent program":   "neglected_delinquent",
	"migrant education":                  "migrant",
	"career and technical education":     "career_technical",
	"english as a second language (esl)": "language_instruction",
	"title i part a":                     "title_i_part_a",
}

func (r *EdFiReader) program(e *element) {
	f := map[string]any{}
	set(f, "student_id", e.get("StudentReference/StudentIdentity/StudentUniqueId"))
	set(f, "program_name", e.get("ProgramReference/ProgramIdentity/ProgramName"))
	set(f, "begin_date", e.get("BeginDate"))
	set(f, "end_date", e.get("EndDate"))
	pt, ok := programTypes[e.name]
	if !ok {
		d := descriptorValue(e.get("ProgramReference/ProgramIdentity/ProgramType"))
		if pt, ok = programTypeDescriptors[strings.ToLower(d)]; !ok {
			pt = snakeCase(d)
		}
	}
	set(f, "program_type", pt)
	set(f, "reason", descriptorValue(e.get("ReasonExited")))
	r.emit("program_participation", f)
}

// snakeCase lower-cases s and joins its runs of letters and digits with
// underscores: "Gifted and Talented" → "gifted_and_talented".
func snakeCase(s string) string {
	var b strings.Builder
	sep := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c > 0x7f {
			if sep && b.Len() > 0 {
				b.WriteByte('_')
			}
			sep = false
			b.WriteRune(c)
		} else {
			sep = true
		}
	}
	return b.String()
}

func personName(e *element) string {
	return strings.TrimSpace(e.get("Name/FirstName") + " " + e.get("Name/LastSurname"))
}

func address(e *element) string {
	var parts []string
	for _, p := range []string{"StreetNumberName", "ApartmentRoomSuiteNumber", "City"} {
		if v := e.get("Address/" + p); v != "" {
			parts = append(parts, v)
		}
	}
	last := strings.TrimSpace(descriptorValue(e.get("Address/StateAbbreviation")) + " " + e.get("Address/PostalCode"))
	if last != "" {
		parts = append(parts, last)
	}
	return strings.Join(parts, ", ")
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func set(f map[string]any, name, v string) {
	if v != "" {
		f[name] = v
	}
}

// setNumber sets a number field: a JSON number as json.Number (a decimal
// with only zeros after the point as an integer, "3.00" → 3), anything
// else as a string, which Classify reports as the wrong type.
func setNumber(f map[string]any, name, v string) {
	if v == "" {
		return
	}
	if _, _, ok := jsonNumber(v); !ok {
		f[name] = v
		return
	}
	if i := strings.IndexByte(v, '.'); i > 0 && strings.Trim(v[i+1:], "0") == "" && !strings.ContainsAny(v, "eE") {
		v = v[:i]
	}
	f[name] = json.Number(v)
}
