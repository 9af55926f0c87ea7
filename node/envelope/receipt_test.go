package envelope

import (
	"testing"

	"github.com/eduspace/eduspace/crypto"
)

// TestParseReceipt: a receipt answers for exactly its header's count of
// envelopes, stored and refused together, and gives only known reasons.
func TestParseReceipt(t *testing.T) {
	for _, c := range []struct {
		name  string
		body  string
		count uint32
		ok    bool
	}{
		{"stored only", `{"envelopes":[{"envelope":"e1","records":2,"stored_ms":1}]}`, 1, true},
		{"refused only", `{"envelopes":[],"refused":[{"envelope":"e1","records":2,"reason":"no_agreement"}]}`, 1, true},
		{"both", `{"envelopes":[{"envelope":"e1","records":2,"stored_ms":1}],"refused":[{"envelope":"e2","records":1,"reason":"expired"}]}`, 2, true},
		{"count short of the refusals", `{"envelopes":[{"envelope":"e1","records":2,"stored_ms":1}],"refused":[{"envelope":"e2","records":1,"reason":"expired"}]}`, 1, false},
		{"empty", `{"envelopes":[]}`, 0, false},
		{"reason outside the refusal reasons", `{"refused":[{"envelope":"e1","records":2,"reason":"because"}]}`, 1, false},
		{"not JSON", `receipt`, 1, false},
	} {
		_, err := ParseReceipt([]byte(c.body), crypto.Header{Count: c.count})
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
