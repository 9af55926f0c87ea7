// Package policy decides, per record and per recipient, whether a record may
// leave the node and in what form: the space rulebook (GRADING.md §7),
// agreements between members, and the stable reason codes that explain every
// decision.
//
// Decide is a pure function: it performs no I/O and takes the time it judges
// by as an argument, so the same inputs always give the same decision. A
// denial is a Decision value with a reason code, never an error.
package policy
