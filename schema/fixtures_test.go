package schema

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fixtureDir returns ../shared/fixtures/edfi-grand-bend next to the module
// root (the directory holding go.mod), or skips the test.
func fixtureDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("Ed-Fi fixtures: no go.mod above the test's directory")
		}
		dir = parent
	}
	fx := filepath.Join(dir, "..", "shared", "fixtures", "edfi-grand-bend")
	if _, err := os.Stat(filepath.Join(fx, "Student.xml")); err != nil {
		t.Skipf("Ed-Fi fixtures not found at %s (the Grand Bend sample interchanges): %v", fx, err)
	}
	return fx
}

// fixture returns a fixture file's text, for counting independently of
// the reader.
func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// classifiedFixture reads a fixture with the Ed-Fi reader (from the file,
// or as a pipe) and classifies every record on 2026-11-23.
func classifiedFixture(t *testing.T, name string, seekable bool) ([]Record, []Labels) {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var src io.Reader = f
	if !seekable {
		src = onePass{f}
	}
	r, err := NewEdFiReader(src, "")
	if err != nil {
		t.Fatal(err)
	}
	std := Default()
	var recs []Record
	var labels []Labels
	for {
		rec, idx, err := r.Next()
		if err == io.EOF {
			return recs, labels
		}
		if err != nil {
			t.Fatalf("%s: record %d: %v", name, idx, err)
		}
		if idx != len(recs) {
			t.Fatalf("%s: index %d, want %d", name, idx, len(recs))
		}
		l, err := std.Classify(rec, date("2026-11-23"))
		if err != nil {
			t.Fatalf("%s: record %d does not classify: %v", name, idx, err)
		}
		recs = append(recs, rec)
		labels = append(labels, l)
	}
}

func count(s, substr string) int { return strings.Count(s, substr) }

func TestFixtureStudents(t *testing.T) {
	text := fixture(t, "Student.xml")
	// Each Student's id and birth date, by a regexp of the file's text.
	re := regexp.MustCompile(`(?s)<Student>\s*<StudentUniqueId>(\d+)</StudentUniqueId>.*?<BirthDate>(\d{4}-\d\d-\d\d)</BirthDate>.*?</Student>`)
	m := re.FindAllStringSubmatch(text, -1)
	if len(m) != 960 || count(text, "<Student>") != 960 {
		t.Fatalf("the file has %d <Student> elements, the regexp found %d; want 960", count(text, "<Student>"), len(m))
	}
	// Under 14 on 2026-11-23: born after 2012-11-23 (whoever was born on
	// that day turns 14 on it).
	minor := map[string]bool{}
	for _, s := range m {
		minor[s[1]] = s[2] > "2012-11-23"
	}
	nMinors := 0
	for _, v := range minor {
		if v {
			nMinors++
		}
	}
	if nMinors == 0 || nMinors == 960 {
		t.Fatalf("%d minors: the fixture does not test C3", nMinors)
	}
	recs, labels := classifiedFixture(t, "Student.xml", true)
	if len(recs) != 960 {
		t.Fatalf("%d student records, want 960", len(recs))
	}
	gotMinors := 0
	for i, l := range labels {
		id := l.Subject
		isMinor := len(l.Flags) == 1 && l.Flags[0] == "minor"
		if isMinor != minor[id] || (isMinor && l.Level != L4) || (!isMinor && l.Level != L3) {
			t.Errorf("student %d (born %v): level %v flags %v, want minor=%v", i, recs[i].Fields["birth_date"], l.Level, l.Flags, minor[id])
		}
		if isMinor {
			gotMinors++
		}
		if recs[i].Type != "student" || recs[i].Fields["name"] == nil || recs[i].Fields["birth_date"] == nil {
			t.Errorf("student %d: %v fields %d", i, recs[i].Type, len(recs[i].Fields))
		}
	}
	t.Logf("Student.xml: 960 students, %d under 14 on 2026-11-23 (L4, minor), %d L3", gotMinors, 960-gotMinors)
	if gotMinors != nMinors {
		t.Errorf("%d minors, want %d", gotMinors, nMinors)
	}
}

func TestFixtureGuardians(t *testing.T) {
	text := fixture(t, "Contact.xml")
	contacts := regexp.MustCompile(`<Contact id="([^"]+)">\s*<ContactUniqueId>(\d+)<`).FindAllStringSubmatch(text, -1)
	assocs := regexp.MustCompile(`<StudentContactAssociation>\s*<StudentReference>\s*<StudentIdentity>\s*<StudentUniqueId>(\d+)</StudentUniqueId>\s*</StudentIdentity>\s*</StudentReference>\s*<ContactReference ref="([^"]+)"`).FindAllStringSubmatch(text, -1)
	if len(contacts) != count(text, "<Contact ") || len(assocs) != count(text, "<StudentContactAssociation>") {
		t.Fatalf("regexps found %d contacts, %d associations; the file has %d, %d",
			len(contacts), len(assocs), count(text, "<Contact "), count(text, "<StudentContactAssociation>"))
	}
	uid := map[string]string{} // id attribute → ContactUniqueId
	for _, c := range contacts {
		uid[c[1]] = c[2]
	}
	students := map[string][]string{} // ContactUniqueId → students
	for _, a := range assocs {
		if uid[a[2]] == "" {
			t.Fatalf("an association names a contact not in the file")
		}
		students[uid[a[2]]] = append(students[uid[a[2]]], a[1])
	}
	lone := len(contacts) - len(students)
	t.Logf("Contact.xml: %d contacts, %d associations, %d contacts without one", len(contacts), len(assocs), lone)
	if len(contacts) != 1873 || len(assocs) != 1872 {
		t.Errorf("fixture changed: %d contacts, %d associations", len(contacts), len(assocs))
	}

	// From the file: one record per association, plus one per contact
	// without any, each with the contact's details.
	recs, labels := classifiedFixture(t, "Contact.xml", true)
	if len(recs) != len(assocs)+lone {
		t.Fatalf("%d guardian records, want %d", len(recs), len(assocs)+lone)
	}
	d := NewDataset(Default())
	withStudent := 0
	for i, r := range recs {
		d.Add(labels[i])
		g, _ := r.Fields["guardian_id"].(string)
		s, has := r.Fields["student_id"].(string)
		if !has {
			if len(students[g]) != 0 {
				t.Errorf("record %d: guardian %d of students lacks student_id", i, len(students[g]))
			}
			continue
		}
		withStudent++
		found := false
		for _, want := range students[g] {
			found = found || want == s
		}
		if !found || r.Fields["name"] == nil || r.Fields["relation"] == nil {
			t.Errorf("record %d: wrong join (fields %d)", i, len(r.Fields))
		}
		if r.Fields["address"] != nil && labels[i].Level != L3 {
			t.Errorf("record %d with an address: level %v, want L3", i, labels[i].Level)
		}
	}
	if withStudent != len(assocs) {
		t.Errorf("%d records with student_id, want %d", withStudent, len(assocs))
	}
	if s := d.Summary(); s.Subjects != len(contacts) || s.Level != L3 || s.Records != len(recs) {
		t.Errorf("summary %+v, want %d subjects at L3 (V1 fires)", s, len(contacts))
	}
	// As a pipe, contacts come first: one record per contact, then one
	// link record per association.
	recs, _ = classifiedFixture(t, "Contact.xml", false)
	if len(recs) != len(contacts)+len(assocs) {
		t.Errorf("one pass: %d records, want %d", len(recs), len(contacts)+len(assocs))
	}
}

func TestFixtureHealthProgramsDisciplineGrades(t *testing.T) {
	t.Run("StudentHealth", func(t *testing.T) {
		text := fixture(t, "StudentHealth.xml")
		recs, labels := classifiedFixture(t, "StudentHealth.xml", true)
		if want := count(text, "<StudentHealth>"); len(recs) != want || want != 71 {
			t.Errorf("%d health records, want %d (71)", len(recs), want)
		}
		exempt := 0
		for i, l := range labels {
			if l.Level != L4 || l.Type != "health_record" {
				t.Errorf("record %d: %s %v, want health_record L4", i, l.Type, l.Level)
			}
			if recs[i].Fields["kind"] == "exemption" {
				exempt++
			}
		}
		// StudentHealth elements with an exemption, counted in the text.
		blocks := regexp.MustCompile(`(?s)<StudentHealth>.*?</StudentHealth>`).FindAllString(text, -1)
		want := 0
		for _, b := range blocks {
			if strings.Contains(b, "MedicalExemption>") || strings.Contains(b, "<NonMedicalImmunizationExemption>") {
				want++
			}
		}
		if exempt != want {
			t.Errorf("%d exemption records, want %d", exempt, want)
		}
		t.Logf("StudentHealth.xml: %d health records, all L4, %d with an exemption", len(recs), exempt)
	})
	t.Run("StudentProgram", func(t *testing.T) {
		text := fixture(t, "StudentProgram.xml")
		var all []string // the interchange's children, by name
		for _, line := range strings.Split(text, "\n") {
			if name, ok := strings.CutPrefix(line, "\t<Student"); ok && strings.HasSuffix(name, "ProgramAssociation>") {
				all = append(all, "Student"+strings.TrimSuffix(name, ">"))
			}
		}
		l4 := 0
		for _, name := range all {
			switch name {
			case "StudentSpecialEducationProgramAssociation", "StudentSection504ProgramAssociation", "StudentHomelessProgramAssociation",
				"StudentSchoolFoodServiceProgramAssociation", "StudentNeglectedOrDelinquentProgramAssociation", "StudentMigrantEducationProgramAssociation":
				l4++
			}
		}
		recs, labels := classifiedFixture(t, "StudentProgram.xml", true)
		if len(recs) != len(all) || len(all) != 706 {
			t.Errorf("%d program participations, want %d (706)", len(recs), len(all))
		}
		got := 0
		for i, l := range labels {
			switch l.Level {
			case L4:
				got++
				if len(l.Rules) != 2 || l.Rules[1] != "C2" {
					t.Errorf("record %d: L4 by %v, want C2", i, l.Rules)
				}
			case L3:
			default:
				t.Errorf("record %d: level %v", i, l.Level)
			}
		}
		if got != l4 || l4 != 476 {
			t.Errorf("%d at L4 by program type, want %d (476)", got, l4)
		}
		t.Logf("StudentProgram.xml: %d participations, %d L4 by program type (C2), %d L3", len(recs), got, len(recs)-got)
	})
	t.Run("StudentDiscipline", func(t *testing.T) {
		text := fixture(t, "StudentDiscipline.xml")
		want := count(text, "<StudentDisciplineIncidentBehaviorAssociation>") + count(text, "<DisciplineAction>")
		recs, labels := classifiedFixture(t, "StudentDiscipline.xml", true)
		if len(recs) != want || want != 46 {
			t.Errorf("%d discipline records, want %d (21 behaviour associations + 25 actions)", len(recs), want)
		}
		for i, l := range labels {
			if l.Level != L4 || recs[i].Fields["incident_date"] == nil {
				t.Errorf("record %d: level %v, incident date %v; want L4 with the incident's date", i, l.Level, recs[i].Fields["incident_date"] != nil)
			}
		}
		t.Logf("StudentDiscipline.xml: %d discipline records, all L4", len(recs))
	})
	t.Run("StudentGradebook", func(t *testing.T) {
		text := fixture(t, "StudentGradebook.xml")
		want := count(text, "<StudentGradebookEntry>")
		recs, labels := classifiedFixture(t, "StudentGradebook.xml", true)
		if len(recs) != want || want != 250 {
			t.Errorf("%d grades, want %d (250)", len(recs), want)
		}
		for i, l := range labels {
			if l.Level != L3 || recs[i].Fields["course_code"] == nil || recs[i].Fields["score"] == nil {
				t.Errorf("record %d: level %v, fields %v; want L3 with course code and score", i, l.Level, recs[i].Fields)
			}
		}
		t.Logf("StudentGradebook.xml: %d grades, all L3 (score)", len(recs))
	})
}

// TestFixturesOnePass checks that, but for the guardians, a fixture gives
// the same number of records from the file and as a pipe.
func TestFixturesOnePass(t *testing.T) {
	for _, name := range []string{"Student.xml", "StudentHealth.xml", "StudentProgram.xml", "StudentDiscipline.xml", "StudentGradebook.xml"} {
		a, _ := classifiedFixture(t, name, true)
		b, _ := classifiedFixture(t, name, false)
		if len(a) != len(b) {
			t.Errorf("%s: %d records from the file, %d as a pipe", name, len(a), len(b))
		}
	}
}
