package schema

import "strings"

// A detector scans a string value for a kind of dangerous content
// (GRADING.md §3.9). Detectors are identified by their index here; the
// standard gives each a level and says where it runs.
type detector uint8

const (
	detResidentID detector = iota
	detMobile
	detBankCard
	detEmail
	detPassport
	detHealthTerms
	numDetectors
)

// detectorNames are the names used in standards and in output, in output order.
var detectorNames = [numDetectors]string{
	"cn_resident_id",
	"cn_mobile",
	"bank_card",
	"email",
	"cn_passport",
	"health_terms",
}

// detectorMask is a set of detectors, bit i for detector i.
type detectorMask uint8

// detectorLists holds, for every set of detectors, the list of their names
// in output order. The slices are shared and have len == cap so that an
// append by a caller copies instead of overwriting.
var detectorLists = func() (lists [1 << numDetectors][]string) {
	for m := range lists {
		var names []string
		for d := detector(0); d < numDetectors; d++ {
			if m&(1<<d) != 0 {
				names = append(names, detectorNames[d])
			}
		}
		lists[m] = names[:len(names):len(names)]
	}
	return lists
}()

func (m detectorMask) names() []string { return detectorLists[m] }

// DetectorNames returns the names of the detectors a standard may configure.
func DetectorNames() []string {
	return append([]string(nil), detectorNames[:]...)
}

const digitDetectors = 1<<detResidentID | 1<<detMobile | 1<<detBankCard

// detect runs the detectors in mask over v and returns those that hit.
func (s *Standard) detect(v string, mask detectorMask) detectorMask {
	var hits detectorMask
	if mask&digitDetectors != 0 {
		hits = scanDigits(v, mask&digitDetectors)
	}
	if mask&(1<<detEmail) != 0 && findEmail(v) {
		hits |= 1 << detEmail
	}
	if mask&(1<<detPassport) != 0 && findPassport(v) {
		hits |= 1 << detPassport
	}
	if mask&(1<<detHealthTerms) != 0 && s.terms.match(v) {
		hits |= 1 << detHealthTerms
	}
	return hits
}

// scanDigits runs the digit detectors in want (cn_resident_id, cn_mobile,
// bank_card) in one pass over the runs of digits in s.
func scanDigits(s string, want detectorMask) detectorMask {
	var hits detectorMask
	for i := skipNonDigits(s, 0); i < len(s); i = skipNonDigits(s, i) {
		j := digitRun(s, i)
		if j-i >= 3 {
			todo := want &^ hits
			if todo&(1<<detResidentID) != 0 && residentIDRun(s, i, j) {
				hits |= 1 << detResidentID
			}
			if todo&(1<<detMobile) != 0 && mobileRun(s, i, j) {
				hits |= 1 << detMobile
			}
			if todo&(1<<detBankCard) != 0 && bankCardRun(s, i, j) {
				hits |= 1 << detBankCard
			}
			if hits == want {
				break
			}
		}
		i = j
	}
	return hits
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// skipNonDigits returns the index of the first ASCII digit in s at or after
// i, or len(s). It tests eight bytes at a time.
func skipNonDigits(s string, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		w := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// Bytes 0x30..0x39: ASCII (high bit clear) and 0x2f < b < 0x3a.
		low := w &^ highs
		in := (ones*(127+0x3a) - low) &^ w & (low + ones*(127-0x2f)) & highs
		if in != 0 {
			break
		}
	}
	for ; i < len(s) && !isDigit(s[i]); i++ {
	}
	return i
}
func isUpper(b byte) bool { return 'A' <= b && b <= 'Z' }
func isAlpha(b byte) bool { return 'a' <= b|0x20 && b|0x20 <= 'z' }
func isAlnum(b byte) bool { return isDigit(b) || isAlpha(b) }

func lowerASCII(b byte) byte {
	if isUpper(b) {
		return b | 0x20
	}
	return b
}

// digitRun returns the end of the run of ASCII digits starting at i.
func digitRun(s string, i int) int {
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return i
}

// residentIDWeights are the ISO 7064 MOD 11-2 weights of GB 11643.
var residentIDWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

const residentIDCheck = "10X98765432"

// residentIDCheckChar returns the check character of the first 17 digits of
// a resident ID. s must hold at least 17 ASCII digits.
func residentIDCheckChar(s string) byte {
	sum := 0
	for i, w := range residentIDWeights {
		sum += int(s[i]-'0') * w
	}
	return residentIDCheck[sum%11]
}

// validResidentID reports whether s is exactly an 18-character resident
// identity number: area code with first digit 1–9, a valid calendar date
// YYYYMMDD, a 3-digit sequence and the MOD 11-2 check character (X or x).
func validResidentID(s string) bool {
	if len(s) != 18 || s[0] < '1' || s[0] > '9' {
		return false
	}
	for i := 1; i < 17; i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	if _, _, _, ok := residentIDBirth(s); !ok {
		return false
	}
	c := s[17]
	if c == 'x' {
		c = 'X'
	}
	return c == residentIDCheckChar(s)
}

// residentIDBirth returns the birth date inside a resident ID whose first
// 14 characters are digits.
func residentIDBirth(s string) (y, m, d int, ok bool) {
	y = atoi4(s[6:10])
	m = int(s[10]-'0')*10 + int(s[11]-'0')
	d = int(s[12]-'0')*10 + int(s[13]-'0')
	return y, m, d, validDate(y, m, d)
}

func atoi4(s string) int {
	return int(s[0]-'0')*1000 + int(s[1]-'0')*100 + int(s[2]-'0')*10 + int(s[3]-'0')
}

func validDate(y, m, d int) bool {
	if y < 1 || m < 1 || m > 12 || d < 1 {
		return false
	}
	return d <= daysIn(y, m)
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// findResidentID reports whether s contains a valid resident ID that is not
// part of a longer run of digits.
func findResidentID(s string) bool { return scanDigits(s, 1<<detResidentID) != 0 }

// residentIDRun reports whether the run of digits s[i:j] is a resident ID:
// 18 digits, or 17 digits and X, not followed by another digit.
func residentIDRun(s string, i, j int) bool {
	switch j - i {
	case 18:
		return validResidentID(s[i:j])
	case 17:
		return j < len(s) && (s[j] == 'X' || s[j] == 'x') &&
			(j+1 == len(s) || !isDigit(s[j+1])) && validResidentID(s[i:j+1])
	}
	return false
}

func mobileNumber(s string) bool {
	return len(s) == 11 && s[0] == '1' && s[1] >= '3' && s[1] <= '9'
}

// findMobile reports whether s contains a mainland mobile number: 1[3-9]
// and 9 more digits, optionally prefixed +86 or 0086, not inside a longer
// run of digits. The common grouping 3-4-4 with a space or dash is
// accepted too.
func findMobile(s string) bool { return scanDigits(s, 1<<detMobile) != 0 }

// mobileRun reports whether a mobile number starts with the run of digits s[i:j].
func mobileRun(s string, i, j int) bool {
	run := s[i:j]
	switch len(run) {
	case 11:
		return mobileNumber(run)
	case 13:
		return i > 0 && s[i-1] == '+' && run[:2] == "86" && mobileNumber(run[2:])
	case 15:
		return run[:4] == "0086" && mobileNumber(run[4:])
	case 3:
		// 138 1234 5678 or 138-1234-5678
		if run[0] == '1' && run[1] >= '3' && run[1] <= '9' && j+10 <= len(s) {
			sep := s[j]
			return (sep == ' ' || sep == '-') && digitRun(s, j+1) == j+5 && s[j+5] == sep &&
				digitRun(s, j+6) == j+10
		}
	}
	return false
}

// findBankCard reports whether s contains 16–19 digits passing the Luhn
// check, written either as one run of digits or in groups separated by
// single spaces or dashes (every group but the last at least 4 digits, the
// last at least 3). A run that is a valid resident ID is not a bank card.
func findBankCard(s string) bool { return scanDigits(s, 1<<detBankCard) != 0 }

// bankCardRun reports whether a bank card starts with the run of digits s[i:j].
func bankCardRun(s string, i, j int) bool {
	n := j - i
	if n >= 16 {
		// A resident ID is not a card: neither 18 digits that are one, nor
		// the 17 digits before an X check character.
		if n == 17 && j < len(s) && (s[j] == 'X' || s[j] == 'x') && validResidentID(s[i:j+1]) {
			return false
		}
		return n <= 19 && luhn(s[i:j]) && !(n == 18 && validResidentID(s[i:j]))
	}
	return n >= 4 && groupedCard(s, i, j)
}

// groupedCard tries the grouped card starting with the group s[i:j].
func groupedCard(s string, i, j int) bool {
	var digits [19]byte
	nd := copy(digits[:], s[i:j])
	for {
		// s[i:j] is the last group taken; it has at least 4 digits.
		if j+1 >= len(s) || (s[j] != ' ' && s[j] != '-') || !isDigit(s[j+1]) {
			return false
		}
		k := digitRun(s, j+1)
		g := k - (j + 1)
		if nd+g > 19 {
			return false
		}
		nd += copy(digits[nd:], s[j+1:k])
		if nd >= 16 && g >= 3 && luhn(digits[:nd]) {
			return true
		}
		if g < 4 {
			return false
		}
		i, j = j+1, k
	}
}

func luhn[T string | []byte](s T) bool {
	sum := 0
	double := false
	for i := len(s) - 1; i >= 0; i-- {
		d := int(s[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

func isEmailLocal(b byte) bool {
	return isAlnum(b) || b == '.' || b == '_' || b == '%' || b == '+' || b == '-'
}

func isDomainChar(b byte) bool { return isAlnum(b) || b == '-' }

// findEmail reports whether s contains an e-mail address with a dotted
// domain: local@label.label, the last label at least two characters.
func findEmail(s string) bool {
	for k := strings.IndexByte(s, '@'); k >= 0; {
		if k > 0 && isEmailLocal(s[k-1]) {
			j := k + 1
			labels, last := 0, 0
			for {
				start := j
				for j < len(s) && isDomainChar(s[j]) {
					j++
				}
				if j == start {
					break
				}
				labels++
				last = j - start
				if j+1 < len(s) && s[j] == '.' && isDomainChar(s[j+1]) {
					j++
					continue
				}
				break
			}
			if labels >= 2 && last >= 2 {
				return true
			}
		}
		next := strings.IndexByte(s[k+1:], '@')
		if next < 0 {
			break
		}
		k += 1 + next
	}
	return false
}

// findPassport reports whether s contains a PRC passport number: E or G and
// 8 digits, or E, a capital letter and 7 digits, not inside a longer word.
func findPassport(s string) bool {
	for _, c := range [2]byte{'E', 'G'} {
		for i := strings.IndexByte(s, c); i >= 0 && i+9 <= len(s); {
			if passportAt(s, i) {
				return true
			}
			next := strings.IndexByte(s[i+1:], c)
			if next < 0 {
				break
			}
			i += 1 + next
		}
	}
	return false
}

// passportAt reports whether a passport number starts at s[i] (E or G).
func passportAt(s string, i int) bool {
	if i+9 > len(s) || (i > 0 && isAlnum(s[i-1])) || (i+9 < len(s) && isAlnum(s[i+9])) {
		return false
	}
	rest := s[i+1 : i+9]
	if s[i] == 'E' && isUpper(rest[0]) {
		rest = rest[1:]
	}
	return digitRun(rest, 0) == len(rest)
}

// termMatcher finds dictionary terms in text: terms that begin with an ASCII
// letter match case-insensitively as whole words; other terms (Chinese)
// match as substrings.
type termMatcher struct {
	byFirst [256][]string  // terms (English lowercased) by first byte
	second  [256][4]uint64 // for each first byte, the set of second bytes
	words   [256]bool      // first byte begins a word term
}

func newTermMatcher(terms []string) *termMatcher {
	m := &termMatcher{}
	for _, t := range terms {
		if isAlpha(t[0]) {
			t = strings.ToLower(t)
			m.words[t[0]] = true
		}
		b0 := t[0]
		m.byFirst[b0] = append(m.byFirst[b0], t)
		if len(t) > 1 {
			b1 := t[1]
			m.second[b0][b1>>6] |= 1 << (b1 & 63)
		}
	}
	return m
}

func (m *termMatcher) match(s string) bool {
	if m == nil {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := lowerASCII(s[i])
		terms := m.byFirst[b]
		if terms == nil {
			continue
		}
		if i+1 < len(s) {
			b1 := lowerASCII(s[i+1])
			if m.second[b][b1>>6]&(1<<(b1&63)) == 0 {
				continue
			}
		}
		word := m.words[b]
		if word && i > 0 && isAlnum(s[i-1]) {
			continue
		}
		rest := s[i:]
		for _, t := range terms {
			if len(rest) < len(t) {
				continue
			}
			if !word {
				if rest[:len(t)] == t {
					return true
				}
				continue
			}
			if hasPrefixFold(rest, t) && (len(rest) == len(t) || !isAlpha(rest[len(t)])) {
				return true
			}
		}
	}
	return false
}

// hasPrefixFold reports whether s begins with the lowercase ASCII term t,
// ignoring ASCII case.
func hasPrefixFold(s, t string) bool {
	for i := 0; i < len(t); i++ {
		if lowerASCII(s[i]) != t[i] {
			return false
		}
	}
	return true
}
