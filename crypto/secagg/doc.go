// Package secagg is secure aggregation of integer vectors among the
// university nodes of an aggregate round (policy/PRIVACY.md §3): each
// participant masks its vector so that the center, summing the masked
// vectors, learns only the total over the participants whose vectors it
// received, and the round completes when up to t of them drop out.
//
// The protocol is the double-masking protocol of Bonawitz et al., "Practical
// Secure Aggregation for Privacy-Preserving Machine Learning" (CCS 2017), for
// an honest-but-curious center:
//
//   - each participant draws a per-round Ristretto255 key pair for pairwise
//     key agreement and a self-mask seed, and commits to both public values
//     ([Participant.Commit]);
//   - it splits both secrets into Shamir shares of threshold t (any t+1
//     recover, t reveal nothing; circl secretsharing over Ristretto255's
//     scalar field), one share of each for every committed participant
//     ([Participant.Shares]);
//   - it adds to its vector, modulo 2⁶⁴, a self mask expanded from its seed
//     and, for every other participant, a pairwise mask expanded from their
//     agreed key with a sign given by the order of their ids, so that the
//     pairwise masks cancel in the sum ([Participant.Mask]);
//   - told which participants' vectors the center received, each of those
//     reveals its shares of their self-mask seeds and of the other
//     participants' key-agreement keys, never both for the same participant
//     ([Participant.Unmask]);
//   - the center recovers the seeds and keys from t+1 answers and removes
//     the self masks and the dropped participants' pairwise masks
//     ([Round.Sum]).
//
// Arithmetic is in Z/2⁶⁴: inputs are int64 taken in two's complement, and the
// result is exact as long as the true sum lies in the int64 range.
//
// This package computes and checks; it sends nothing. The node signs every
// message, encrypts each [ShareBundle] to its recipient (it holds secret
// shares), relays messages through the center, and keeps a participant's
// state until the round ends. Every message has a strict, versioned binary
// encoding (MarshalBinary and the Round's Parse methods) bound to the round
// by a 32-byte digest of its parameters.
package secagg
