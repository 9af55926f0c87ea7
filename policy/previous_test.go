package policy

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/schema/synth"
)

// TestPreviousGivesTheSameDecisions decides a feed of records twice, alone
// and with Input.Previous set to the last permit, as a node does, and
// checks that every decision is the same; records with other fields, or
// fields at other levels, come between records of the common shape.
func TestPreviousGivesTheSameDecisions(t *testing.T) {
	data, _ := synth.Students(200, 21)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	odd := [][]byte{
		[]byte(`{"type":"student","student_id":"20240009999","name":"王五","gender":"男"}`),
		[]byte(`{"type":"student","student_id":"20240009998","name":"赵六","birth_date":"2015-06-01"}`), // a minor: L4, denied
		[]byte(`{"type":"student","student_id":"20240009997","name_pinyin":"Li Si","dormitory":"身份证 110101199003077777"}`),
	}
	// The common shape, with a dormitory that holds a bank card number:
	// the same fields, one at a higher level (C6: L4, above the
	// agreement's L3).
	same := bytes.Replace(lines[10], []byte(`"dormitory":"`), []byte(`"dormitory":"6222 0212 3456 7890 128 `), 1)
	odd = append(odd, same)
	for i, l := range odd {
		lines = append(lines[:(i+1)*50], append([][]byte{l}, lines[(i+1)*50:]...)...)
	}
	std, rb := schema.Default(), DefaultRulebook()
	a := agreement()
	a.Purpose, a.LegalBasis = PurposeResearch, BasisPublicInterest
	a.RecordTypes = map[string][]string{"student": {"birth_date", "dormitory", "gender", "name", "name_pinyin", "student_id"}}
	a.Transforms = map[string]Transform{"birth_date": TransformGeneraliseYear}
	p, row := schema.NewLineParser(""), new(schema.Row)
	var last Decision
	reused, permits, denied := 0, 0, map[string]bool{}
	for _, line := range lines {
		if verr := p.ParseRow(line, std, row); verr != nil {
			t.Fatalf("%s: %v", line, verr)
		}
		l, err := std.ClassifyRow(row, now)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		in := Input{Provider: a.Provider, Recipient: a.Recipient, RecipientRole: "university", Labels: l, Agreement: a, Now: now}
		alone := Decide(rb, in)
		if last.Permit {
			in.Previous = &last
		}
		with := Decide(rb, in)
		if !reflect.DeepEqual(alone, with) {
			t.Fatalf("%s: alone %+v, with the previous decision %+v", line, alone, with)
		}
		if !with.Permit {
			denied[string(line)] = true
		}
		if with.Permit {
			permits++
			if in.Previous != nil && len(with.Actions) > 0 && &with.Actions[0] == &last.Actions[0] {
				reused++
			}
			last = with
		}
	}
	if !denied[string(same)] {
		t.Errorf("the record of the common shape with an ID number in its dormitory was permitted")
	}
	if permits < len(lines)-5 || reused < permits-10 {
		t.Fatalf("%d permits of %d records, %d reused the previous actions", permits, len(lines), reused)
	}
}
