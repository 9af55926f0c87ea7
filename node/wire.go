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
	dst = append(dst, `{"type":`...)
	dst = schema.AppendJSONString(dst, rec.Type)
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
		dst = schema.AppendJSONString(dst, act.Field)
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
