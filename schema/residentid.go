package schema

import "strings"

// NormalizeResidentID returns s as a resident identity number is compared:
// spaces around it trimmed and a lower-case check character x upper-cased.
// It does not validate; see ValidResidentID.
func NormalizeResidentID(s string) string {
	s = strings.TrimSpace(s)
	if len(s) == 18 && s[17] == 'x' {
		s = s[:17] + "X"
	}
	return s
}

// ValidResidentID reports whether s is exactly an 18-character resident
// identity number (GB 11643): an area code whose first digit is 1–9, a valid
// calendar date YYYYMMDD, a 3-digit sequence and the MOD 11-2 check
// character — the rule of the cn_resident_id detector.
func ValidResidentID(s string) bool { return validResidentID(s) }
