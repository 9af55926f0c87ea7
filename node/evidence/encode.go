package evidence

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendEntry appends the JSON encoding of e to dst. It exists because
// json.Marshal (reflection, the map encoder, allocations) is a hot-path cost
// of Append. The bytes are hashed into the chain, so they must be exactly
// what encoding/json.Marshal(e) produces: fields in struct order, omitempty
// as encoding/json applies it, Detail keys sorted, and strings escaped as by
// encoding/json (HTML-escaped; see appendString). encode_test.go checks this
// against json.Marshal, including by fuzzing; keep it in step with Entry.
func appendEntry(dst []byte, e *Entry) []byte {
	dst = slices.Grow(dst, sizeHint(e))
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, e.Time, 10)
	dst = append(dst, `,"node":`...)
	dst = appendString(dst, e.Node)
	dst = append(dst, `,"kind":`...)
	dst = appendString(dst, e.Kind)
	dst = appendOptional(dst, `,"peer":`, e.Peer)
	dst = appendOptional(dst, `,"agreement":`, e.Agreement)
	dst = appendOptional(dst, `,"purpose":`, e.Purpose)
	dst = appendOptional(dst, `,"legal_basis":`, e.LegalBasis)
	dst = appendOptional(dst, `,"standard":`, e.Standard)
	dst = appendOptional(dst, `,"envelope":`, e.Envelope)
	dst = appendOptional(dst, `,"rule":`, e.Rule)
	dst = appendOptional(dst, `,"reason":`, e.Reason)
	if e.Count != 0 {
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendInt(dst, int64(e.Count), 10)
	}
	if len(e.Subjects) > 0 {
		dst = append(dst, `,"subjects":[`...)
		for i, s := range e.Subjects {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		dst = append(dst, ']')
	}
	if len(e.Detail) > 0 {
		var buf [8]string // stays on the stack for up to 8 keys
		keys := buf[:0]
		for k := range e.Detail {
			keys = append(keys, k)
		}
		slices.Sort(keys) // encoding/json sorts by the unescaped key
		dst = append(dst, `,"detail":{`...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = strconv.AppendInt(dst, int64(e.Detail[k]), 10)
		}
		dst = append(dst, '}')
	}
	dst = appendOptional(dst, `,"digest":`, e.Digest)
	return append(dst, '}')
}

// sizeHint is about the encoded size of e when no string needs escaping,
// so that appendEntry grows dst at most once in the usual case.
func sizeHint(e *Entry) int {
	n := 190 + len(e.Node) + len(e.Kind) + len(e.Peer) + len(e.Agreement) + len(e.Purpose) +
		len(e.LegalBasis) + len(e.Standard) + len(e.Envelope) + len(e.Rule) + len(e.Reason) + len(e.Digest) + 3*len(e.Subjects) + 32*len(e.Detail)
	for _, s := range e.Subjects {
		n += len(s)
	}
	return n
}

// appendOptional appends name and s unless s is empty (omitempty).
func appendOptional(dst []byte, name, s string) []byte {
	if s == "" {
		return dst
	}
	return appendString(append(dst, name...), s)
}

const hexDigits = "0123456789abcdef"

// plain reports the ASCII bytes that appendString copies unescaped.
var plain = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return t
}()

// appendString appends s as a JSON string escaped exactly as encoding/json
// escapes it: \" \\ \b \f \n \r \t, other control characters and < > & as
// \u00XX, U+2028 and U+2029 as \u2028 and \u2029, and each byte of invalid
// UTF-8 as \ufffd. Everything else is copied as is.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if plain[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, `\b`...)
			case '\f':
				dst = append(dst, `\f`...)
			case '\n':
				dst = append(dst, `\n`...)
			case '\r':
				dst = append(dst, `\r`...)
			case '\t':
				dst = append(dst, `\t`...)
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
