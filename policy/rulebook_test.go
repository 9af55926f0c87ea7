package policy

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/schema"
)

func TestParseRulebook(t *testing.T) {
	b, err := os.ReadFile("testdata/rulebooks/default.json")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := ParseRulebook(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rb, DefaultRulebook()) {
		t.Errorf("default.json:\n got %+v\nwant %+v", rb, DefaultRulebook())
	}
	def := DefaultRulebook()
	if err := def.Validate(); err != nil {
		t.Fatalf("DefaultRulebook does not validate: %v", err)
	}

	b, err = os.ReadFile("testdata/rulebooks/strict.json")
	if err != nil {
		t.Fatal(err)
	}
	rb, err = ParseRulebook(b)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultRulebook()
	want.AggregateOnlyFrom, want.MembersOnlyFrom = schema.L4, schema.L1
	want.Volume.BulkL3, want.Volume.ImportantL4 = 200, 2000
	if !reflect.DeepEqual(rb, want) {
		t.Errorf("strict.json (members left out keep their defaults):\n got %+v\nwant %+v", rb, want)
	}

	if !DefaultRulebook().UnknownPersonStrict {
		t.Error("DefaultRulebook: unknown_person_strict off; want a record of an unknown person decided strictly by default")
	}
	if rb, err := ParseRulebook([]byte(`{}`)); err != nil || !rb.UnknownPersonStrict {
		t.Errorf("{}: unknown_person_strict %v, %v; want it on when left out", rb.UnknownPersonStrict, err)
	}
	if rb, err := ParseRulebook([]byte(`{"unknown_person_strict": false}`)); err != nil || rb.UnknownPersonStrict {
		t.Errorf("explicit opt-out: unknown_person_strict %v, %v; want it off", rb.UnknownPersonStrict, err)
	}

	for _, tc := range []struct{ in, want string }{
		{`{}`, ""},
		{`{"volume":{"bulk_l3":0}}`, ""},
		{`{"unknown_person_strict":false}`, ""},
		{`{"unknown_person_strict":"no"}`, "unknown_person_strict"},
		{`{"shoe_size":1}`, "shoe_size"},
		{`{"volume":{"bulk":1}}`, "bulk"},
		{`{"aggregate_only_from":"CORE"}`, "aggregate_only_from"},
		{`{"aggregate_only_from":"L9"}`, "L9"},
		{`{"aggregate_only_from":"L1"}`, "aggregate_only_from"},
		{`{"sensitive_level":"IMP"}`, "sensitive_level"},
		{`{"aggregate_only_from":"L3"}`, "sensitive_level"},
		{`{"members_only_from":"L3"}`, "members_only_from"},
		{`{"identity_purposes":["marketing"]}`, "identity_purposes[0]"},
		{`{"identity_purposes":["research","research"]}`, "identity_purposes[1]"},
		{`{"clear_identity_purposes":["marketing"]}`, "clear_identity_purposes[0]"},
		{`{"max_retention_days":{"marketing":30}}`, "max_retention_days"},
		{`{"max_retention_days":{"research":0}}`, "max_retention_days[research]"},
		{`{"recipient_roles":[]}`, "recipient_roles"},
		{`{"recipient_roles":["university","hacker"]}`, "recipient_roles[1]"},
		{`{"volume":{"bulk_l3":-1}}`, "volume.bulk_l3"},
		{`{"volume":{"important_l4":20000}}`, "volume.important_l4"},
		{`{"volume":{"important_l3":0}}`, "volume.important_l3"},
		{`{"volume":{"aggregate_only":2000000}}`, "volume.aggregate_only"},
		{`{"volume":{"bulk_l3":"many"}}`, "bulk_l3"},
		{`{} {}`, "trailing"},
		{`[`, "parse rulebook"},
	} {
		_, err := ParseRulebook([]byte(tc.in))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tc.in, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error naming %q", tc.in, err, tc.want)
		}
	}
}
