package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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

// Token returns the pseudonymous token of value under key: "tk_" and the
// unpadded base64url of the first 16 bytes of HMAC-SHA256(key, value), 25
// characters in all. The same value and key always give the same token.
func Token(key []byte, value string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(value))
	return "tk_" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}
