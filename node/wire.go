package node

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// The plaintext of an envelope of records is NDJSON in the form the node
// ingests: one flat JSON object per line, its "type" member first, then the
// fields that leave, in name order, transformed as the decision says. The
// recipient reads it with the same reader as an ingest.

// appendWire appends rec as one wire line, applying d's actions; direct
// identifiers to tokenise become the recipient's tokens from tz. It writes
// what policy.Apply would return, without building a map.
func appendWire(dst []byte, rec schema.Record, d policy.Decision, tz *crypto.Tokenizer) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, rec.Type)
	for _, act := range d.Actions {
		v, ok := rec.Fields[act.Field]
		if !ok || act.Transform == policy.TransformDrop {
			continue
		}
		switch act.Transform {
		case policy.TransformTokenise:
			if v == nil {
				continue
			}
			v = tz.Token(valueString(v))
		case policy.TransformGeneraliseYear:
			s, ok := v.(string)
			if !ok || len(s) < 4 {
				continue
			}
			v = s[:4]
		}
		dst = append(dst, ',')
		dst = appendJSONString(dst, act.Field)
		dst = append(dst, ':')
		dst = appendValue(dst, v)
	}
	return append(dst, '}', '\n')
}

func valueString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func appendValue(dst []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case string:
		return appendJSONString(dst, x)
	case json.Number:
		return append(dst, x...)
	case bool:
		return strconv.AppendBool(dst, x)
	case float64:
		return strconv.AppendFloat(dst, x, 'g', -1, 64)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
