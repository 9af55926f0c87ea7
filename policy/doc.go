// Package policy decides, per record and per recipient, whether a record may
// leave the node and in what form: the space rulebook (GRADING.md §5, §7),
// agreements between members and their signed lifecycle, the consent
// ledger and consent receipts, erasure requests and receipts, and the stable
// reason codes that explain every decision (REASONS.md).
//
// Decide is a pure function: it performs no I/O and takes the time it judges
// by as an argument, so the same inputs always give the same decision. A
// denial is a Decision value with a reason code, never an error. The rest of
// the package is likewise pure: signatures, storage and messaging belong to
// the node, which passes bytes and times in.
package policy
