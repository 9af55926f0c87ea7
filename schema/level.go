package schema

import "fmt"

// Level is a data level of GRADING.md §1. Levels are ordered:
// LevelUnknown < L1 < L2 < L3 < L4 < IMP < CORE.
type Level uint8

// The levels, in order.
const (
	LevelUnknown Level = iota
	L1                 // public
	L2                 // internal
	L3                 // confidential
	L4                 // sensitive (PIPL sensitive personal information)
	IMP                // important-data candidate
	CORE               // core data
)

const numLevels = int(CORE) + 1

var levelNames = [numLevels]string{"unknown", "L1", "L2", "L3", "L4", "IMP", "CORE"}

// String returns "L1".."L4", "IMP" or "CORE"; "unknown" for LevelUnknown
// and "Level(n)" for values out of range.
func (l Level) String() string {
	if int(l) < numLevels {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// ParseLevel parses "L1".."L4", "IMP" or "CORE" (exactly, case-sensitive).
func ParseLevel(s string) (Level, error) {
	for i := int(L1); i < numLevels; i++ {
		if levelNames[i] == s {
			return Level(i), nil
		}
	}
	return LevelUnknown, fmt.Errorf("unknown level %q", s)
}

// MarshalText implements encoding.TextMarshaler. LevelUnknown has no text
// form and is an error.
func (l Level) MarshalText() ([]byte, error) {
	if l < L1 || int(l) >= numLevels {
		return nil, fmt.Errorf("marshal level: invalid level %d", uint8(l))
	}
	return []byte(levelNames[l]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Category is a data category of GRADING.md §2. The empty category is used
// by free-text fields that have none ("—" in GRADING.md).
type Category string

// The categories of GRADING.md §2.
const (
	CategoryNone        Category = ""
	CategoryIdentity    Category = "ID"
	CategoryContact     Category = "CT"
	CategoryDemographic Category = "DM"
	CategoryAcademic    Category = "AC"
	CategoryHealth      Category = "HL"
	CategoryFinancial   Category = "FA"
	CategoryFamily      Category = "FM"
	CategoryDiscipline  Category = "DS"
	CategoryBiometric   Category = "BI"
	CategoryLearning    Category = "LB"
	CategoryEmployment  Category = "EM"
	CategoryStaff       Category = "HR"
	CategoryCredential  Category = "CR"
	CategoryInstitution Category = "OR"
	CategoryAggregate   Category = "AG"
)

// Valid reports whether c is one of the categories of GRADING.md §2 or the
// empty category.
func (c Category) Valid() bool {
	_, ok := categoryByName[string(c)]
	return ok
}

// categoryByName holds the categories of GRADING.md §2 by name, for
// reading stored labels without a string per field.
var categoryByName = func() map[string]Category {
	m := map[string]Category{}
	for _, c := range []Category{CategoryNone, CategoryIdentity, CategoryContact, CategoryDemographic,
		CategoryAcademic, CategoryHealth, CategoryFinancial, CategoryFamily,
		CategoryDiscipline, CategoryBiometric, CategoryLearning, CategoryEmployment,
		CategoryStaff, CategoryCredential, CategoryInstitution, CategoryAggregate} {
		m[string(c)] = c
	}
	return m
}()

// categoryOf is the category named b.
func categoryOf(b []byte) Category {
	if c, ok := categoryByName[string(b)]; ok {
		return c
	}
	return Category(b)
}
