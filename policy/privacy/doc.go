// Package privacy is the differential-privacy side of aggregate releases
// (policy/PRIVACY.md): an exact sampler of the discrete Gaussian and discrete
// Laplace distributions (Canonne, Kamath, Steinke 2020) driven by an
// io.Reader, each node's share of distributed discrete Gaussian noise, the
// zCDP accounting of a release and its conversion to (ε, δ), the budget
// [Ledger] kept per (recipient, population of persons) and window of time,
// and the suppression of cells under
// the minimum size k.
//
// Sampling uses only integer and rational arithmetic (math/big): no floating
// point touches a noise value. Floating point is used only to account, where
// every computed ρ and ε is rounded up. The package is pure: it performs no
// I/O, keeps no global state, and imports only the standard library, so that
// the node decides where randomness comes from (crypto/rand in production)
// and where the ledger is stored.
package privacy
