package envelope

import (
	"strings"
	"testing"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/schema"
)

// TestCheckRecords checks the receiver's content check, above all that the
// member names it remembers by position from one line never let a foreign
// name through on the next.
func TestCheckRecords(t *testing.T) {
	codec := &Codec{Std: schema.Default()}
	ok := `{"type":"student","student_id":"s1","name":"tk_a","gender":"女"}`
	for _, c := range []struct {
		name  string
		lines []string
		want  string // "" accepts; else a part of the error
	}{
		{"alike lines", []string{ok, ok, ok}, ""},
		{"another order", []string{ok, `{"gender":"男","type":"student","name":"tk_b","student_id":"s2"}`}, ""},
		{"a foreign name where the last line had a known one", []string{ok,
			`{"type":"student","student_id":"s1","salary":"1","gender":"女"}`}, "field not in type"},
		{"a foreign name in the first line", []string{`{"type":"student","nickname":"x"}`}, "field not in type"},
		{"a foreign name in a line off the fast path", []string{ok,
			`{"type":"student","student_id":"s\"1","nickname":"x"}`}, "field not in type"},
		{"escapes, known names", []string{ok, `{"type":"student","student_id":"s\"1","name":"tk_a"}`, ok}, ""},
		{"another type", []string{ok, `{"type":"course","course_code":"C1"}`}, "type differs"},
		{"not JSON", []string{ok, `{"type":`}, "not a record"},
	} {
		plain := strings.Join(c.lines, "\n") + "\n"
		err := codec.CheckRecords([]byte(plain), crypto.Header{RecordType: "student", Level: "L3", Count: uint32(len(c.lines))})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}
