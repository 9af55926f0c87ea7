package schema

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const edfiHead = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Interchange xmlns="http://ed-fi.org/5.2.0">`

// onePass hides a reader's Seek, as a pipe would.
type onePass struct{ io.Reader }

func edfi(t testing.TB, input string, seekable bool, typ string) []item {
	t.Helper()
	var src io.Reader = strings.NewReader(input)
	if !seekable {
		src = onePass{src}
	}
	r, err := NewEdFiReader(src, typ)
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(t, r)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func rec(typ string, kv ...any) Record {
	f := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		f[kv[i].(string)] = kv[i+1]
	}
	return Record{Type: typ, Fields: f}
}

func checkItems(t *testing.T, got, want []item) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d items, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("item %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestEdFiStudentHealthProgram(t *testing.T) {
	input := edfiHead + `
<Student><StudentUniqueId>604821</StudentUniqueId>
  <Name><PersonalTitlePrefix>Mr</PersonalTitlePrefix><FirstName>Tyrone</FirstName><MiddleName>X</MiddleName><LastSurname>Dyer</LastSurname></Name>
  <BirthData><BirthDate>2014-11-13</BirthDate><BirthSex>uri://ed-fi.org/SexDescriptor#Male</BirthSex></BirthData>
  <PersonReference><PersonIdentity><PersonId>1</PersonId></PersonIdentity></PersonReference>
</Student>
<Person><PersonId>1</PersonId></Person>
<StudentHealth><StudentReference><StudentIdentity><StudentUniqueId>604821</StudentUniqueId></StudentIdentity></StudentReference>
  <AsOfDate>2021-08-23</AsOfDate>
  <RequiredImmunization><ImmunizationType>uri://ed-fi.org/ImmunizationTypeDescriptor#MMR</ImmunizationType><ImmunizationDate>2016-02-13</ImmunizationDate></RequiredImmunization>
  <AdditionalImmunization><ImmunizationName>Malaria, RTS</ImmunizationName></AdditionalImmunization>
</StudentHealth>
<StudentHealth><StudentReference><StudentIdentity><StudentUniqueId>604822</StudentUniqueId></StudentIdentity></StudentReference>
  <AsOfDate>2021-08-23</AsOfDate><NonMedicalImmunizationExemption>uri://x#Religious</NonMedicalImmunizationExemption>
</StudentHealth>
<StudentSpecialEducationProgramAssociation>
  <StudentReference><StudentIdentity><StudentUniqueId>604821</StudentUniqueId></StudentIdentity></StudentReference>
  <ProgramReference><ProgramIdentity><ProgramName>Special Education</ProgramName><ProgramType>uri://ed-fi.org/ProgramTypeDescriptor#Special Education</ProgramType></ProgramIdentity></ProgramReference>
  <BeginDate>2021-08-30</BeginDate><EndDate>2022-05-30</EndDate><ReasonExited>uri://ed-fi.org/ReasonExitedDescriptor#Moved out of state</ReasonExited>
</StudentSpecialEducationProgramAssociation>
<StudentProgramAssociation>
  <StudentReference><StudentIdentity><StudentUniqueId>604822</StudentUniqueId></StudentIdentity></StudentReference>
  <ProgramReference><ProgramIdentity><ProgramName>Gifted</ProgramName><ProgramType>uri://ed-fi.org/ProgramTypeDescriptor#Gifted and Talented</ProgramType></ProgramIdentity></ProgramReference>
  <BeginDate>2021-08-30</BeginDate>
</StudentProgramAssociation>
<StudentProgramAssociation>
  <StudentReference><StudentIdentity><StudentUniqueId>604823</StudentUniqueId></StudentIdentity></StudentReference>
  <ProgramReference><ProgramIdentity><ProgramName>Shelter</ProgramName><ProgramType>uri://ed-fi.org/ProgramTypeDescriptor#Homeless</ProgramType></ProgramIdentity></ProgramReference>
  <BeginDate>2021-08-30</BeginDate>
</StudentProgramAssociation>
<StudentSchoolFoodServiceProgramAssociation>
  <StudentReference><StudentIdentity><StudentUniqueId>604824</StudentUniqueId></StudentIdentity></StudentReference>
  <ProgramReference><ProgramIdentity><ProgramName>School Food Service</ProgramName><ProgramType>uri://ed-fi.org/ProgramTypeDescriptor#Compensatory Services for Disadvantaged Students</ProgramType></ProgramIdentity></ProgramReference>
  <BeginDate>2021-08-30</BeginDate>
</StudentSchoolFoodServiceProgramAssociation>
</Interchange>`
	want := []item{
		{0, rec("student", "student_id", "604821", "name", "Tyrone Dyer", "birth_date", "2014-11-13", "gender", "Male"), ""},
		{1, rec("health_record", "student_id", "604821", "record_date", "2021-08-23", "kind", "immunization", "description", "MMR, Malaria, RTS"), ""},
		{2, rec("health_record", "student_id", "604822", "record_date", "2021-08-23", "kind", "exemption"), ""},
		{3, rec("program_participation", "student_id", "604821", "program_name", "Special Education", "begin_date", "2021-08-30",
			"end_date", "2022-05-30", "program_type", "special_education", "reason", "Moved out of state"), ""},
		{4, rec("program_participation", "student_id", "604822", "program_name", "Gifted", "begin_date", "2021-08-30", "program_type", "gifted_and_talented"), ""},
		{5, rec("program_participation", "student_id", "604823", "program_name", "Shelter", "begin_date", "2021-08-30", "program_type", "homeless"), ""},
		{6, rec("program_participation", "student_id", "604824", "program_name", "School Food Service", "begin_date", "2021-08-30", "program_type", "food_service"), ""},
	}
	for _, seekable := range []bool{true, false} {
		checkItems(t, edfi(t, input, seekable, ""), want)
	}
	// The type filter keeps one type; indices count what is kept.
	got := edfi(t, input, true, "program_participation")
	if len(got) != 4 || got[0].idx != 0 || got[0].rec.Fields["program_type"] != "special_education" {
		t.Errorf("filtered: %+v", got)
	}
	// Levels: the student is a minor on 2026-11-23; special education,
	// homeless and food service are L4 by C2; gifted stays L3.
	std := Default()
	var levels []string
	for _, it := range edfi(t, input, true, "") {
		l, err := std.Classify(it.rec, date("2026-11-23"))
		if err != nil {
			t.Fatalf("item %d: %v", it.idx, err)
		}
		levels = append(levels, l.Level.String()+strings.Join(l.Flags, ""))
	}
	if want := []string{"L4minor", "L4", "L4", "L4", "L3", "L4", "L4"}; !reflect.DeepEqual(levels, want) {
		t.Errorf("levels %q, want %q", levels, want)
	}
}

const contactA = `<Contact id="PRNT_1"><ContactUniqueId>778393</ContactUniqueId>
  <Name><FirstName>Carmen</FirstName><LastSurname>Dyer</LastSurname></Name>
  <Address><StreetNumberName>263 New Street</StreetNumberName><City>Grand Bend</City><StateAbbreviation>uri://ed-fi.org/StateAbbreviationDescriptor#TX</StateAbbreviation><PostalCode>78834</PostalCode></Address>
  <Telephone><TelephoneNumber>(950) 342 7522</TelephoneNumber></Telephone><Telephone><TelephoneNumber>(950) 000 0000</TelephoneNumber></Telephone>
  <ElectronicMail><ElectronicMailAddress>c@example.com</ElectronicMailAddress></ElectronicMail>
</Contact>`

const contactB = `<Contact id="PRNT_2"><ContactUniqueId>779017</ContactUniqueId><Name><FirstName>Manuel</FirstName><LastSurname>Dyer</LastSurname></Name></Contact>`

const contactC = `<Contact id="PRNT_3"><ContactUniqueId>878954</ContactUniqueId><Name><FirstName>Frank</FirstName><LastSurname>Brady</LastSurname></Name></Contact>`

func assocXML(student, ref, relation, lives string) string {
	return `<StudentContactAssociation><StudentReference><StudentIdentity><StudentUniqueId>` + student +
		`</StudentUniqueId></StudentIdentity></StudentReference>` + ref +
		`<Relation>uri://ed-fi.org/RelationDescriptor#` + relation + `</Relation><LivesWith>` + lives + `</LivesWith></StudentContactAssociation>`
}

func TestEdFiGuardians(t *testing.T) {
	byRef := func(id string) string { return `<ContactReference ref="` + id + `"/>` }
	byUID := func(uid string) string {
		return `<ContactReference><ContactIdentity><ContactUniqueId>` + uid + `</ContactUniqueId></ContactIdentity></ContactReference>`
	}
	assocs := assocXML("604821", byRef("PRNT_1"), "Mother", "true") +
		assocXML("604830", byRef("PRNT_1"), "Mother", "0") + // a sibling
		assocXML("604821", byUID("779017"), "Father", "false") +
		assocXML("604899", byUID("999999"), "Aunt", "yes") + // its contact never comes
		assocXML("604898", byRef("PRNT_404"), "Uncle", "")
	contacts := contactA + contactB + contactC
	carmen := []any{"guardian_id", "778393", "name", "Carmen Dyer", "address", "263 New Street, Grand Bend, TX 78834",
		"phone", "(950) 342 7522", "email", "c@example.com"}
	joined := func(extra ...any) Record { return rec("guardian", append(append([]any{}, carmen...), extra...)...) }
	manuel := []any{"guardian_id", "779017", "name", "Manuel Dyer"}
	dangling := []item{
		{rec: rec("guardian", "guardian_id", "999999", "student_id", "604899", "relation", "Aunt", "lives_with_student", "yes")},
		{rec: rec("guardian", "student_id", "604898", "relation", "Uncle")},
	}
	full := []item{
		{rec: joined("student_id", "604821", "relation", "Mother", "lives_with_student", true)},
		{rec: joined("student_id", "604830", "relation", "Mother", "lives_with_student", false)},
		{rec: rec("guardian", append(manuel, "student_id", "604821", "relation", "Father", "lives_with_student", false)...)},
		{rec: rec("guardian", "guardian_id", "878954", "name", "Frank Brady")},
	}
	number := func(items []item) []item {
		for i := range items {
			items[i].idx = i
		}
		return items
	}
	tests := []struct {
		name     string
		body     string
		seekable bool
		want     []item
	}{
		{"contacts first, file", contacts + assocs, true, number(append(append([]item{}, full...), dangling...))},
		{"associations first, file", assocs + contacts, true, number(append(append([]item{}, full...), dangling...))},
		{"associations first, pipe", assocs + contacts, false, number(append(append([]item{}, full...), dangling...))},
		{"contacts first, pipe", contacts + assocs, false, number([]item{
			{rec: rec("guardian", carmen...)},
			{rec: rec("guardian", manuel...)},
			{rec: rec("guardian", "guardian_id", "878954", "name", "Frank Brady")},
			{rec: rec("guardian", "guardian_id", "778393", "student_id", "604821", "relation", "Mother", "lives_with_student", true)},
			{rec: rec("guardian", "guardian_id", "778393", "student_id", "604830", "relation", "Mother", "lives_with_student", false)},
			{rec: rec("guardian", "guardian_id", "779017", "student_id", "604821", "relation", "Father", "lives_with_student", false)},
			dangling[0], dangling[1],
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkItems(t, edfi(t, edfiHead+tt.body+"</Interchange>", tt.seekable, ""), tt.want)
		})
	}
	// What Classify makes of them: a bad lives-with flag is a type error,
	// a dangling reference without an id a missing guardian_id.
	std := Default()
	var got []string
	for _, it := range edfi(t, edfiHead+contacts+assocs+"</Interchange>", true, "") {
		l, err := std.Classify(it.rec, date("2026-11-23"))
		var ve *ValidationError
		if errors.As(err, &ve) {
			got = append(got, ve.Field+"/"+ve.Reason)
		} else {
			got = append(got, l.Level.String())
		}
	}
	if want := []string{"L3", "L3", "L2", "L2", "lives_with_student/type", "guardian_id/required"}; !reflect.DeepEqual(got, want) {
		t.Errorf("classified %q, want %q", got, want)
	}
}

func TestEdFiDisciplineGrades(t *testing.T) {
	incident := `<DisciplineIncident id="DISC_10_255901001"><IncidentIdentifier>10</IncidentIdentifier><IncidentDate>2021-10-18</IncidentDate>
  <Behavior><BehaviorDetailedDescription>Fight</BehaviorDetailedDescription><Behavior>uri://ed-fi.org/BehaviorDescriptor#State Offense</Behavior></Behavior>
  <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference></DisciplineIncident>
<StaffDisciplineIncidentAssociation><StaffReference><StaffIdentity><StaffUniqueId>1</StaffUniqueId></StaffIdentity></StaffReference></StaffDisciplineIncidentAssociation>`
	behavior := `<StudentDisciplineIncidentBehaviorAssociation><StudentReference><StudentIdentity><StudentUniqueId>605266</StudentUniqueId></StudentIdentity></StudentReference>
  <DisciplineIncidentReference ref="DISC_10_255901001"/><Behavior>uri://ed-fi.org/BehaviorDescriptor#School Code of Conduct</Behavior></StudentDisciplineIncidentBehaviorAssociation>`
	action := `<DisciplineAction><DisciplineActionIdentifier>18</DisciplineActionIdentifier><Discipline>uri://ed-fi.org/DisciplineDescriptor#In School Suspension</Discipline>
  <DisciplineDate>2022-01-18</DisciplineDate><DisciplineActionLength>3.00</DisciplineActionLength>
  <StudentReference><StudentIdentity><StudentUniqueId>605266</StudentUniqueId></StudentIdentity></StudentReference>
  <StudentDisciplineIncidentBehaviorAssociationReference><StudentDisciplineIncidentBehaviorAssociationIdentity>
    <StudentReference><StudentIdentity><StudentUniqueId>605266</StudentUniqueId></StudentIdentity></StudentReference>
    <DisciplineIncidentReference><DisciplineIncidentIdentity><IncidentIdentifier>10</IncidentIdentifier>
      <SchoolReference><SchoolIdentity><SchoolId>255901001</SchoolId></SchoolIdentity></SchoolReference></DisciplineIncidentIdentity></DisciplineIncidentReference>
    <Behavior>uri://ed-fi.org/BehaviorDescriptor#Other</Behavior>
  </StudentDisciplineIncidentBehaviorAssociationIdentity></StudentDisciplineIncidentBehaviorAssociationReference></DisciplineAction>`
	entry := `<GradebookEntry><GradebookEntryIdentifier>8907100001</GradebookEntryIdentifier><Namespace>uri://ed-fi.org/GradebookEntry</Namespace>
  <SectionReference><SectionIdentity><CourseOfferingReference><CourseOfferingIdentity><LocalCourseCode>ALG-1</LocalCourseCode>
  <SessionReference><SessionIdentity><SessionName>2021-2022 Fall Semester</SessionName></SessionIdentity></SessionReference>
  </CourseOfferingIdentity></CourseOfferingReference></SectionIdentity></SectionReference><Title>Assignment 1</Title></GradebookEntry>`
	grade := `<StudentGradebookEntry><GradebookEntryReference><GradebookEntryIdentity><GradebookEntryIdentifier>8907100001</GradebookEntryIdentifier>
  <Namespace>uri://ed-fi.org/GradebookEntry</Namespace></GradebookEntryIdentity></GradebookEntryReference>
  <StudentReference><StudentIdentity><StudentUniqueId>604822</StudentUniqueId></StudentIdentity></StudentReference>
  <NumericGradeEarned>74</NumericGradeEarned><LetterGradeEarned>C</LetterGradeEarned></StudentGradebookEntry>
<Grade><StudentSectionAssociationReference><StudentSectionAssociationIdentity><StudentReference><StudentIdentity><StudentUniqueId>604823</StudentUniqueId></StudentIdentity></StudentReference>
  <SectionReference><SectionIdentity><CourseOfferingReference><CourseOfferingIdentity><LocalCourseCode>BIO-1</LocalCourseCode></CourseOfferingIdentity></CourseOfferingReference></SectionIdentity></SectionReference>
  </StudentSectionAssociationIdentity></StudentSectionAssociationReference><NumericGradeEarned>8x</NumericGradeEarned></Grade>`
	want := []item{
		{0, rec("discipline", "student_id", "605266", "incident_date", "2021-10-18", "incident_type", "School Code of Conduct", "description", "Fight"), ""},
		{1, rec("discipline", "student_id", "605266", "action", "In School Suspension", "action_length_days", json.Number("3"),
			"incident_date", "2021-10-18", "incident_type", "Other"), ""},
		{2, rec("course_grade", "student_id", "604822", "course_code", "ALG-1", "term", "2021-2022 Fall Semester",
			"score", json.Number("74"), "grade_letter", "C"), ""},
		{3, rec("course_grade", "student_id", "604823", "course_code", "BIO-1", "score", "8x"), ""},
	}
	checkItems(t, edfi(t, edfiHead+incident+behavior+action+entry+grade+"</Interchange>", false, ""), want)
	// References before what they name are joined from a file only.
	late := edfiHead + behavior + action + grade + entry + incident + "</Interchange>"
	checkItems(t, edfi(t, late, true, ""), want)
	got := edfi(t, late, false, "")
	if _, ok := got[0].rec.Fields["incident_date"]; ok || got[2].rec.Fields["course_code"] != nil {
		t.Errorf("one pass joined a later element: %+v", got)
	}
}

func TestEdFiErrors(t *testing.T) {
	student := func(id string) string {
		return `<Student><StudentUniqueId>` + id + `</StudentUniqueId></Student>`
	}
	deep := strings.Repeat("<a>", 70) + strings.Repeat("</a>", 70)
	tests := []struct {
		name, input string
		want        []item
	}{
		{"empty", "", []item{{idx: 0, err: "/syntax"}}},
		{"not XML", "hello", []item{{idx: 0, err: "/syntax"}}},
		{"empty interchange", edfiHead + "</Interchange>", nil},
		{"unclosed", edfiHead + student("1") + "<Student><StudentUniqueId>2", []item{
			{0, rec("student", "student_id", "1"), ""}, {idx: 1, err: "/syntax"}}},
		{"mismatched", edfiHead + student("1") + "<Student></Contact>" + student("3") + "</Interchange>", []item{
			{0, rec("student", "student_id", "1"), ""}, {idx: 1, err: "/syntax"}}},
		{"too deep a record", edfiHead + student("1") + "<Student>" + deep + "</Student>" + student("3") + "</Interchange>", []item{
			{0, rec("student", "student_id", "1"), ""}, {idx: 1, err: "/syntax"}, {2, rec("student", "student_id", "3"), ""}}},
		{"unmapped deep element", edfiHead + "<Calendar>" + deep + "</Calendar>" + student("3") + "</Interchange>", []item{
			{0, rec("student", "student_id", "3"), ""}}},
		{"too large a record", edfiHead + "<Student>" + strings.Repeat("<x>1</x>", MaxLineBytes/8) + "</Student>" + student("3") + "</Interchange>", []item{
			{idx: 0, err: "/syntax"}, {1, rec("student", "student_id", "3"), ""}}},
		{"other charset", `<?xml version="1.0" encoding="ISO-8859-1"?><I>` + student("1") + "</I>", []item{{idx: 0, err: "/syntax"}}},
		{"entity", edfiHead + "<Student><StudentUniqueId>&xxe;</StudentUniqueId></Student></Interchange>", []item{{idx: 0, err: "/syntax"}}},
		{"document too deep", edfiHead + strings.Repeat("<a>", maxXMLDepth+1), []item{{idx: 0, err: "/syntax"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, seekable := range []bool{true, false} {
				checkItems(t, edfi(t, tt.input, seekable, ""), tt.want)
			}
		})
	}
	boom := errors.New("boom")
	r, _ := NewEdFiReader(io.MultiReader(strings.NewReader(edfiHead+student("1")), iotest.ErrReader(boom)), "")
	got, err := drain(t, r)
	if !errors.Is(err, boom) || len(got) != 1 {
		t.Errorf("read error: got %+v, %v; want one record, then boom", got, err)
	}
}

func FuzzEdFiReader(f *testing.F) {
	f.Add(edfiHead + contactA + contactB + assocXML("604821", `<ContactReference ref="PRNT_1"/>`, "Mother", "true") + "</Interchange>")
	f.Add(edfiHead + `<Student><StudentUniqueId>1</StudentUniqueId><BirthData><BirthDate>2015-01-01</BirthDate></BirthData></Student></Interchange>`)
	f.Add(edfiHead + `<DisciplineAction><DisciplineActionLength>1.50</DisciplineActionLength></DisciplineAction><Grade><NumericGradeEarned>-0</NumericGradeEarned></Grade></Interchange>`)
	f.Add(edfiHead + `<StudentHomelessProgramAssociation><ProgramReference/></StudentHomelessProgramAssociation><GradebookEntry/></Interchange>`)
	f.Add("<a><Student><b>")
	f.Add("")
	f.Fuzz(func(t *testing.T, input string) {
		for _, seekable := range []bool{true, false} {
			var src io.Reader = strings.NewReader(input)
			if !seekable {
				src = onePass{src}
			}
			r, err := NewEdFiReader(src, "")
			if err != nil {
				t.Fatal(err)
			}
			checkReader(t, r)
		}
	})
}

func TestMentionsJoined(t *testing.T) {
	for _, at := range []int{0, 1, 64<<10 - 10, 64<<10 - 1, 64 << 10, 3 * 64 << 10} {
		data := strings.Repeat("x", at) + "DisciplineIncident" + strings.Repeat("y", 100)
		if got, err := mentionsJoined(strings.NewReader(data)); !got || err != nil {
			t.Errorf("name at %d: got %v, %v", at, got, err)
		}
	}
	if got, _ := mentionsJoined(strings.NewReader(strings.Repeat("<Student/>", 20000))); got {
		t.Error("found a name that is not there")
	}
}
