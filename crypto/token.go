package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
)

const labelTokenKey = "eduspace token key v1"

// TokenKey derives the key for pseudonymous tokens sent to recipient from the
// node's secret: HMAC-SHA256(nodeSecret, "eduspace token key v1" ‖ 0x00 ‖
// recipient). Each recipient gets its own key, so two recipients cannot join
// their copies on the tokens. The result is secret.
func TokenKey(nodeSecret []byte, recipient string) []byte {
	m := hmac.New(sha256.New, nodeSecret)
	m.Write([]byte(labelTokenKey))
	m.Write([]byte{0})
	m.Write([]byte(recipient))
	return m.Sum(nil)
}

const labelReleaseTokenKey = "eduspace release token key v1"

// ReleaseTokenKey derives the key of the tokens of one dataset release
// from the recipient's token key (TokenKey):
// HMAC-SHA256(recipientKey, "eduspace release token key v1" ‖ 0x00 ‖
// releaseID). A release's token of a person is Token of the person's
// recipient token under it, so every release gives a person a token of
// its own: two releases to one recipient cannot be joined on their tokens
// without the provider's secret, and the provider, knowing the release
// ids, can name them all in an erasure request. The result is secret.
func ReleaseTokenKey(recipientKey []byte, releaseID string) []byte {
	m := hmac.New(sha256.New, recipientKey)
	m.Write([]byte(labelReleaseTokenKey))
	m.Write([]byte{0})
	m.Write([]byte(releaseID))
	return m.Sum(nil)
}

// Token returns the pseudonymous token of value under key: "tk_" and the
// unpadded base64url of the first 16 bytes of HMAC-SHA256(key, value), 25
// characters in all. The same value and key always give the same token.
func Token(key []byte, value string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(value))
	return "tk_" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// Tokenizer computes the tokens of one key without setting up HMAC anew for
// every value: for the hot path of a share, one per goroutine (it is not
// safe for concurrent use). Its tokens equal Token's.
type Tokenizer struct {
	mac hash.Hash
	in  []byte // the value, copied: HMAC takes bytes
	sum []byte
	buf []byte
}

// NewTokenizer returns a Tokenizer for key (from TokenKey).
func NewTokenizer(key []byte) *Tokenizer {
	return &Tokenizer{mac: hmac.New(sha256.New, key)}
}

// Token returns the token of value, as Token(key, value) does.
func (t *Tokenizer) Token(value string) string {
	t.buf = t.AppendToken(t.buf[:0], value)
	return string(t.buf)
}

// AppendToken appends the token of value to dst. A token is "tk_" and
// base64url without padding: it needs no escaping in JSON.
func (t *Tokenizer) AppendToken(dst []byte, value string) []byte {
	t.mac.Reset()
	t.in = append(t.in[:0], value...)
	t.mac.Write(t.in)
	t.sum = t.mac.Sum(t.sum[:0])
	dst = append(dst, "tk_"...)
	return base64.RawURLEncoding.AppendEncode(dst, t.sum[:16])
}
