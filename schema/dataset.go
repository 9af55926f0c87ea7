package schema

import "hash/maphash"

// Dataset accumulates the labels of one classified dataset for the volume
// rules V1–V3 of GRADING.md §5, counted over distinct subjects (a subject
// is a value of a type's subject key: student_id, staff_id, guardian_id).
// Records of a type with no person subject (course) count as records only.
//
// Subjects are remembered as 128-bit keyed hashes with the highest level of
// their records, so memory grows with the number of distinct subjects, not
// records. A Dataset is not safe for concurrent use.
type Dataset struct {
	std        *Standard
	seed       [2]maphash.Seed
	subjects   map[[2]uint64]Level
	atLeast    [numLevels]int // subjects whose highest record level is ≥ the index
	records    int
	invalid    int
	level      Level
	rules      uint8
	hashBuffer []byte
}

// Summary is the dataset line of classify output (DESIGN.md §11).
type Summary struct {
	Records  int      `json:"records"` // valid records
	Invalid  int      `json:"invalid"`
	Subjects int      `json:"subjects"` // distinct subjects
	Level    Level    `json:"level"`    // max of record levels and volume results; L1 for a dataset without valid records
	Rules    []string `json:"rules"`    // C rules seen in the records, then the volume rules that fired
}

// NewDataset returns an empty dataset classified under s.
func NewDataset(s *Standard) *Dataset {
	return &Dataset{
		std:      s,
		seed:     [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		subjects: map[[2]uint64]Level{},
	}
}

// Add counts one valid record.
func (d *Dataset) Add(l Labels) {
	d.records++
	d.level = max(d.level, l.Level)
	for _, r := range l.Rules {
		switch r {
		case "C2":
			d.rules |= ruleC2
		case "C3":
			d.rules |= ruleC3
		case "C5":
			d.rules |= ruleC5
		case "C6":
			d.rules |= ruleC6
		}
	}
	if l.SubjectKey == "" || l.Subject == "" {
		return
	}
	d.hashBuffer = append(append(append(d.hashBuffer[:0], l.SubjectKey...), 0), l.Subject...)
	k := [2]uint64{maphash.Bytes(d.seed[0], d.hashBuffer), maphash.Bytes(d.seed[1], d.hashBuffer)}
	prev, seen := d.subjects[k]
	lv := max(l.Level, L1)
	if seen && lv <= prev {
		return
	}
	for i := prev + 1; i <= lv && int(i) < numLevels; i++ {
		d.atLeast[i]++
	}
	d.subjects[k] = lv
}

// AddInvalid counts one record that failed validation.
func (d *Dataset) AddInvalid() { d.invalid++ }

// Summary returns the dataset's summary after the volume rules.
func (d *Dataset) Summary() Summary {
	s := Summary{Records: d.records, Invalid: d.invalid, Subjects: len(d.subjects), Level: max(d.level, L1)}
	if d.records > 0 {
		s.Rules = append(s.Rules, ruleLists[d.rules]...)
	} else {
		s.Rules = []string{}
	}
	for _, v := range d.std.volume {
		if d.atLeast[v.MinLevel] < v.Subjects {
			continue
		}
		s.Level = max(s.Level, v.Result)
		fired := false
		for _, r := range s.Rules {
			fired = fired || r == v.Rule
		}
		if !fired {
			s.Rules = append(s.Rules, v.Rule)
		}
	}
	return s
}

// AppendJSON appends the summary line of classify output:
// {"summary":{"records":…,"invalid":…,"subjects":…,"level":"…","rules":[…]}}.
func (s Summary) AppendJSON(dst []byte) []byte {
	dst = appendInt(append(dst, `{"summary":{"records":`...), s.Records)
	dst = appendInt(append(dst, `,"invalid":`...), s.Invalid)
	dst = appendInt(append(dst, `,"subjects":`...), s.Subjects)
	dst = AppendJSONString(append(dst, `,"level":`...), s.Level.String())
	dst = appendStrings(append(dst, `,"rules":`...), s.Rules)
	return append(dst, "}}"...)
}
