package policy

import (
	"encoding/json"
	"math"
	"strconv"

	"github.com/eduspace/eduspace/schema"
)

// Tokeniser turns a direct identifier into the recipient's pseudonymous
// token (crypto.Tokenizer).
type Tokeniser interface {
	AppendToken(dst []byte, value string) []byte
}

// The plaintext of an envelope of records is NDJSON in the form the node
// ingests: one flat JSON object per line, its "type" member first, then the
// fields that leave, in name order, transformed as the decision says. The
// recipient reads it with the same reader as an ingest.

// AppendRecord appends rec as one wire line, applying d's actions; direct
// identifiers to tokenise become the recipient's tokens from tz. It writes
// what Apply would return, without building a map.
func AppendRecord(dst []byte, rec schema.Record, d Decision, tz Tokeniser) []byte {
	dst = appendWireType(dst, rec.Type)
	for _, act := range d.Actions {
		if v, ok := rec.Fields[act.Field]; ok {
			str, isStr := v.(string)
			dst = appendWireField(dst, act, "", str, isStr, v, false, tz)
		}
	}
	return append(dst, '}', '\n')
}

// AppendRow is AppendRecord for a row (schema.Row) whose labels d was
// decided on: its actions name the row's fields in the order of the type's
// SortedIndex, so values are found by position.
func AppendRow(dst []byte, row *schema.Row, d Decision, tz Tokeniser) []byte {
	start := len(dst)
	t := row.RecordType()
	plain := row.PlainStrings()
	dst = appendWireType(dst, row.Type)
	k := 0
	for _, i := range t.SortedIndex() {
		if !row.Has[i] {
			continue
		}
		if k >= len(d.Actions) || d.Actions[k].Field != t.FieldName(i) {
			return appendRowByName(dst[:start], row, d, tz)
		}
		str, isStr := row.String(i)
		var v any
		if !isStr {
			v = row.Value(i)
		}
		dst = appendWireField(dst, d.Actions[k], t.QuotedName(i), str, isStr, v, plain, tz)
		k++
	}
	return append(dst, '}', '\n')
}

// appendRowByName is AppendRow for actions that do not follow the
// row's fields in order: it looks each action's field up by name.
func appendRowByName(dst []byte, row *schema.Row, d Decision, tz Tokeniser) []byte {
	dst = appendWireType(dst, row.Type)
	for _, act := range d.Actions {
		if i, ok := row.RecordType().FieldIndex(act.Field); ok && row.Has[i] {
			str, isStr := row.String(i)
			dst = appendWireField(dst, act, "", str, isStr, row.Value(i), row.PlainStrings(), tz)
		}
	}
	return append(dst, '}', '\n')
}

func appendWireType(dst []byte, typ string) []byte {
	return schema.AppendJSONString(append(dst, `{"type":`...), typ)
}

// appendWireField appends one member, ",name:value", as act says; nothing
// for a dropped field, a null to tokenise or a date too short to
// generalise. The value is str when isStr, v otherwise. quoted is the
// field's name as a JSON string (RecordType.QuotedName), or "" to quote
// act.Field here; plain tells that a string value needs no check before it
// is written (Row.PlainStrings).
func appendWireField(dst []byte, act FieldAction, quoted string, str string, isStr bool, v any, plain bool, tz Tokeniser) []byte {
	switch act.Transform {
	case TransformDrop:
		return dst
	case TransformTokenise:
		if !isStr {
			if v == nil {
				return dst
			}
			str = valueString(v)
		}
		dst = appendWireName(dst, act.Field, quoted)
		dst = tz.AppendToken(append(dst, '"'), str)
		return append(dst, '"')
	case TransformGeneraliseYear:
		if !isStr || len(str) < 4 {
			return dst
		}
		str = str[:4]
	}
	dst = appendWireName(dst, act.Field, quoted)
	switch {
	case isStr && plain:
		return schema.AppendPlainJSONString(dst, str)
	case isStr:
		return schema.AppendJSONString(dst, str)
	}
	return appendValue(dst, v)
}

// appendWireName appends `,"name":`, from quoted when it is not "".
func appendWireName(dst []byte, name, quoted string) []byte {
	dst = append(dst, ',')
	if quoted != "" {
		dst = append(dst, quoted...)
	} else {
		dst = schema.AppendJSONString(dst, name)
	}
	return append(dst, ':')
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
		return string(appendFloat(nil, x))
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
		return schema.AppendJSONString(dst, x)
	case json.Number:
		return append(dst, x...)
	case bool:
		return strconv.AppendBool(dst, x)
	case float64:
		return appendFloat(dst, x)
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// appendFloat appends f as encoding/json writes it: plain decimals, an
// exponent only for very small or very large magnitudes.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, f, format, -1, 64)
}
