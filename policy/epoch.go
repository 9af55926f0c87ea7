package policy

import "strings"

// ValidEpoch reports whether e can name an epoch: a calendar year
// (four digits, 2000–2999) or a name of 1–32 characters from a–z, 0–9,
// '.', '_' and '-' starting with a letter ("spring-2026"), so that a name is
// never mistaken for a year.
func ValidEpoch(e string) bool {
	if len(e) == 0 || len(e) > 32 {
		return false
	}
	if len(e) == 4 && strings.Trim(e, "0123456789") == "" {
		return e[0] == '2'
	}
	for i, c := range e {
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
