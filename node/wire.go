package node

import (
	"encoding/json"
	"strconv"

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
	dst = appendWireType(dst, rec.Type)
	for _, act := range d.Actions {
		if v, ok := rec.Fields[act.Field]; ok {
			str, isStr := v.(string)
			dst = appendWireField(dst, act, "", str, isStr, v, false, tz)
		}
	}
	return append(dst, '}', '\n')
}

// appendWireRow is appendWire for a row (schema.Row) whose labels d was
// decided on: its actions name the row's fields in the order of the type's
// SortedIndex, so values are found by position.
func appendWireRow(dst []byte, row *schema.Row, d policy.Decision, tz *crypto.Tokenizer) []byte {
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
			return appendWireRowByName(dst[:start], row, d, tz)
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

// appendWireRowByName is appendWireRow for actions that do not follow the
// row's fields in order: it looks each action's field up by name.
func appendWireRowByName(dst []byte, row *schema.Row, d policy.Decision, tz *crypto.Tokenizer) []byte {
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
func appendWireField(dst []byte, act policy.FieldAction, quoted string, str string, isStr bool, v any, plain bool, tz *crypto.Tokenizer) []byte {
	switch act.Transform {
	case policy.TransformDrop:
		return dst
	case policy.TransformTokenise:
		if !isStr {
			if v == nil {
				return dst
			}
			str = valueString(v)
		}
		dst = appendWireName(dst, act.Field, quoted)
		dst = tz.AppendToken(append(dst, '"'), str)
		return append(dst, '"')
	case policy.TransformGeneraliseYear:
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
		return schema.AppendJSONString(dst, x)
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
