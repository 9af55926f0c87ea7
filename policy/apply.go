package policy

import (
	"bytes"
	"encoding/json"

	"github.com/eduspace/eduspace/schema"
)

// Apply returns the fields of rec that leave under a permit decision, each
// transformed as the decision's actions say, with direct identifiers
// tokenised by tz: what AppendRecord writes for the recipient, read back.
// Apply never modifies rec.
func Apply(rec schema.Record, d Decision, tz Tokeniser) map[string]any {
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(AppendRecord(nil, rec, d, tz)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		// AppendRecord writes one JSON object whatever the values: a
		// failure here is a bug in it.
		panic("policy: AppendRecord wrote no JSON object: " + err.Error())
	}
	delete(out, "type")
	return out
}
