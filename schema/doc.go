// Package schema owns what an education record is and how sensitive it is:
// the record types and their validation, the data-grading standard
// EDU-CN-DEFAULT v1 (GRADING.md, embedded as a data file and parsed by the
// same code as any custom standard), the detectors that scan field values
// for identifiers and health terms, the classification of a record into
// levels L1–L4 by the combination rules C1–C6, the dataset volume rules
// V1–V3, and the importers that turn input files into records.
//
// It imports the standard library only and does no I/O beyond the readers
// it is handed. Validation errors name a field and a reason code, never a
// value, so that personal data cannot leak through error messages.
package schema
