package policy_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// TestWireRowMatchesRecord checks that Send's path (a line parsed into a
// row, classified, decided and written by position) writes the same bytes
// as Share's (a record in a map, written by name), and that both carry
// what policy.Apply says leaves: under the default handling, with
// transforms and with fields dropped.
func TestWireRowMatchesRecord(t *testing.T) {
	data, _ := synth.Students(300, 11)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	// Lines of other shapes too: members in another order, a null, a
	// field missing.
	lines = append(lines,
		[]byte(`{"student_id":"20240009999","name":"王五","gender":"男","type":"student","birth_date":"2001-02-03","email":null}`),
		[]byte(`{"type":"student","student_id":"20240009998","name":"赵六"}`),
		// U+2028 and quotation marks (0xE2 lead bytes), which the wire
		// escapes as encoding/json does; and an escape, off the fast path.
		[]byte(`{"type":"student","student_id":"20240009997","name_pinyin":"Li`+"\u2028"+`Si","dormitory":"“A”栋 1234567"}`),
		[]byte(`{"type":"student","student_id":"20240009996","name_pinyin":"Li \"Si\"","dormitory":"`+"\u2029"+`"}`))
	std, rb := schema.Default(), policy.DefaultRulebook()
	now := time.Now()
	tz := crypto.NewTokenizer(crypto.TokenKey([]byte("secret"), "receiver"))

	agreements := map[string]*policy.Agreement{"all fields": benchAgreement(now)}
	a := benchAgreement(now)
	a.Transforms = map[string]policy.Transform{"birth_date": policy.TransformGeneraliseYear, "address": policy.TransformDrop}
	agreements["transforms"] = a
	a = benchAgreement(now)
	a.RecordTypes = map[string][]string{"student": {"student_id", "gender", "birth_date", "name"}}
	agreements["some fields"] = a

	for name, a := range agreements {
		sorted := *a
		sorted.RecordTypes = map[string][]string{"student": slices.Sorted(slices.Values(a.RecordTypes["student"]))}
		p, row := schema.NewLineParser(""), new(schema.Row)
		permitted := 0
		for _, line := range lines {
			rec, verr := schema.NewLineParser("").Parse(line, nil)
			if verr != nil {
				t.Fatal(verr)
			}
			ml, err := std.Classify(rec, now)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if verr := p.ParseRow(line, std, row); verr != nil {
				t.Fatal(verr)
			}
			rl, err := std.ClassifyRow(row, now)
			if err != nil {
				t.Fatal(err)
			}
			in := policy.Input{Provider: "sender", Recipient: "receiver", RecipientRole: "university", Agreement: a, Now: now}
			in.Labels = ml
			md := policy.Decide(rb, in)
			in.Labels, in.Agreement = rl, &sorted
			rd := policy.Decide(rb, in)
			if !reflect.DeepEqual(md, rd) {
				t.Fatalf("%s: %s: decision on the row %+v, on the record %+v", name, line, rd, md)
			}
			if !md.Permit {
				continue
			}
			permitted++
			want := policy.AppendRecord(nil, rec, md, tz)
			got := policy.AppendRow(nil, row, rd, tz)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: row wrote\n%s\nrecord wrote\n%s", name, got, want)
			}
			// Actions out of the row's order: found by name instead.
			reversed := md
			reversed.Actions = slices.Clone(md.Actions)
			slices.Reverse(reversed.Actions)
			var back, applied map[string]any
			if err := json.Unmarshal(policy.AppendRow(nil, row, reversed, tz), &back); err != nil {
				t.Fatal(err)
			}
			out, _ := json.Marshal(policy.Apply(rec, md, tz))
			if err := json.Unmarshal(out, &applied); err != nil {
				t.Fatal(err)
			}
			applied["type"] = "student"
			if !reflect.DeepEqual(back, applied) {
				t.Fatalf("%s: reversed actions wrote %v, policy.Apply gives %v", name, back, applied)
			}
		}
		if permitted < len(lines)/2 {
			t.Fatalf("%s: only %d of %d records permitted", name, permitted, len(lines))
		}
	}
}

// benchAgreement permits every field of the synthetic students.
func benchAgreement(now time.Time) *policy.Agreement {
	fields := synth.StudentFields
	return &policy.Agreement{ID: "bench", Provider: "sender", Recipient: "receiver", Purpose: policy.PurposeResearch,
		LegalBasis: policy.BasisPublicInterest, RecordTypes: map[string][]string{"student": fields},
		MaxLevel: schema.L3, RetentionDays: 30, ValidFrom: now.Add(-time.Hour), ValidUntil: now.Add(time.Hour)}
}
