package policy

import (
	"github.com/eduspace/eduspace/schema"
)

// Apply returns the fields of rec that leave under a permit decision, each
// transformed as the decision's actions say. tokenise maps a direct
// identifier to the recipient's pseudonymous token. Apply never modifies rec.
func Apply(rec schema.Record, d Decision, tokenise func(string) string) map[string]any {
	out := make(map[string]any, len(d.Actions))
	for _, act := range d.Actions {
		v, ok := rec.Fields[act.Field]
		if !ok {
			continue
		}
		switch act.Transform {
		case TransformKeep:
			out[act.Field] = v
		case TransformTokenise:
			if s, ok := v.(string); ok {
				out[act.Field] = tokenise(s)
			} else if v != nil {
				out[act.Field] = tokenise(stringOf(v))
			}
		case TransformGeneraliseYear:
			if s, ok := v.(string); ok && len(s) >= 4 {
				out[act.Field] = s[:4]
			}
		}
	}
	return out
}

func stringOf(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case interface{ String() string }:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	return ""
}
