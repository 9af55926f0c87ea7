package schema

import (
	"encoding/binary"
	"unicode/utf8"
)

// Scanning JSON strings eight bytes at a time. Classification reads and
// the wire writes every string of every record; byte by byte, finding a
// string's end and checking that it needs no escaping were a tenth of the
// sender's work.

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasLess reports whether a byte of x is less than n (n <= 128).
func hasLess(x uint64, n byte) bool { return (x-ones*uint64(n))&^x&highs != 0 }

// hasByte reports whether a byte of x equals c.
func hasByte(x uint64, c byte) bool {
	y := x ^ (ones * uint64(c))
	return (y-ones)&^y&highs != 0
}

// stopsString reports whether x holds a byte that ends or interrupts a
// plain JSON string: a quote, a backslash or a control character.
func stopsString(x uint64) bool { return hasLess(x, 0x20) || hasByte(x, '"') || hasByte(x, '\\') }

// plainJSON reports whether s can be written between quotes as it is:
// valid UTF-8 without quotes, backslashes, control characters, U+2028 or
// U+2029 (any 0xE2 lead byte is sent the slow way, to be sure of those).
func plainJSON(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		if stopsString(x) || hasByte(x, 0xE2) {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == 0xE2 {
			return false
		}
	}
	return utf8.ValidString(s)
}

// AppendPlainJSONString appends s as a JSON string, as AppendJSONString
// does, for s known to be valid UTF-8 without quotes, backslashes or
// control characters (Row.PlainStrings): it only looks for U+2028 and
// U+2029, eight bytes at a time.
func AppendPlainJSONString(dst []byte, s string) []byte {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if hasByte(binary.LittleEndian.Uint64([]byte(s[i:i+8])), 0xE2) {
			return AppendJSONString(dst, s)
		}
	}
	for ; i < len(s); i++ {
		if s[i] == 0xE2 {
			return AppendJSONString(dst, s)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
