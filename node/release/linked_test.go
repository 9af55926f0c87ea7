package release

import (
	"fmt"
	"testing"
)

// TestLinkProfiles: rows that carry a person's token are joined per
// person; a person alone in their profile (the set of classes of all
// their rows) is suppressed whole, though each row alone sits in a class
// of k persons, and a k no profile reaches is refused.
func TestLinkProfiles(t *testing.T) {
	var rows []linkedRow
	for p := range 10 {
		s := fmt.Sprintf("p%d", p)
		rows = append(rows, linkedRow{typ: "student", index: p, subject: s, class: "A"})
		grade := "X"
		if p == 9 {
			grade = "Y" // in a class of 1 on the grades alone too, but see below
		}
		rows = append(rows, linkedRow{typ: "course_grade", index: 2 * p, subject: s, class: grade})
		// A second grade row of the same person in the same class adds
		// nothing to the profile.
		rows = append(rows, linkedRow{typ: "course_grade", index: 2*p + 1, subject: s, class: grade})
	}
	drop, l, ok := linkProfiles(rows, 5, 0.2)
	if !ok || l.Suppressed != 3 || l.Profiles != 1 || l.Smallest != 9 {
		t.Fatalf("k = 5: ok %v, %+v; want p9's 3 rows suppressed and one profile of 9 persons", ok, l)
	}
	for i, r := range rows {
		if drop[i] != (r.subject == "p9") {
			t.Errorf("row %d of %s: dropped %v", i, r.subject, drop[i])
		}
	}
	if _, l, ok := linkProfiles(rows, 10, 0.2); ok {
		t.Errorf("k = 10 over 10 persons of two profiles: %+v, want refused", l)
	}
	// Each row alone is in a class of at least 5 persons by type here,
	// yet joining the two types singles out one of two profiles.
	rows = rows[:0]
	for p := range 10 {
		s := fmt.Sprintf("q%d", p)
		a, b := "A", "X"
		if p < 5 {
			a = "B"
		}
		if p%5 == 0 {
			b = "Y"
		}
		rows = append(rows, linkedRow{typ: "student", index: p, subject: s, class: a}, linkedRow{typ: "course_grade", index: p, subject: s, class: b})
	}
	drop, l, ok = linkProfiles(rows, 2, 0.5)
	if !ok || l.Suppressed != 4 || len(drop) != 4 {
		t.Errorf("k = 2: %+v (%d dropped), want q0 and q5, alone in their profiles, suppressed (4 rows)", l, len(drop))
	}
}
