// Package crypto is eduspace's cryptography: the sealed and signed envelope
// that carries records between nodes, the HPKE suites and KEM keys behind it,
// the GM/T suite (SM2, SM3, SM4-GCM), Ed25519 and SM2 signing keys, member
// credentials issued by the space authority, PEM key files, and
// per-recipient pseudonymous tokens.
//
// The envelope format is specified in ENVELOPE.md in this directory; test
// vectors live in testdata. In short: [Seal] encrypts a payload to the
// recipient's [KEMPublicKey] with one HPKE Base-mode context (X-Wing by
// default), uses the header as associated data, and signs the whole envelope
// with the sender's [SigningKey]. The GM/T suite [SuiteSM2] replaces HPKE
// with SM2 encryption and SM4-GCM, Ed25519 with SM2 and SHA-256 with SM3. A receiver calls [ParseEnvelope], then
// [Envelope.Verify] with the sender's key taken from its credential, and only
// then [Envelope.Open].
//
// Credentials are EdDSA JWTs ([AuthorityKey.Issue], [ParseCredential]) that
// bind a node id, institution, role and the node's public keys; an extra
// claim carries the authority's ML-DSA-65 signature, and both must verify.
// In a space on the GM/T suite they are SM2 JWTs by the authority's SM2 key.
// Composite Ed25519 + ML-DSA-65 keys ([CompositeKey]) sign what lives long:
// the authority's [RevocationList] and nodes' evidence checkpoints ([Checkpoint]).
// CREDENTIALS.md in this directory specifies credentials, composite
// signatures, key rotation and these signed statements.
//
// Private key types print as redacted and error messages never contain key
// material or plaintext. The package imports only the standard library,
// github.com/cloudflare/circl, github.com/golang-jwt/jwt/v5 and, for the
// GM/T suite (SM2, SM3, SM4), github.com/emmansun/gmsm.
package crypto
