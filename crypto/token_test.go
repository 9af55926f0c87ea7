package crypto

import (
	"regexp"
	"testing"
)

func TestTokens(t *testing.T) {
	secret := []byte("node secret for tests only, 32 b")
	kb, kc := TokenKey(secret, "uni-b"), TokenKey(secret, "center")
	if Token(kb, "2023010001") != Token(TokenKey(secret, "uni-b"), "2023010001") {
		t.Error("same value, same recipient: tokens differ")
	}
	if Token(kb, "2023010001") == Token(kc, "2023010001") {
		t.Error("same value, different recipients: tokens equal")
	}
	if Token(kb, "2023010001") == Token(kb, "2023010002") {
		t.Error("different values: tokens equal")
	}
	if Token(TokenKey([]byte("another node"), "uni-b"), "2023010001") == Token(kb, "2023010001") {
		t.Error("different node secrets: tokens equal")
	}
	if tok := Token(kb, "x"); !regexp.MustCompile(`^tk_[A-Za-z0-9_-]{22}$`).MatchString(tok) {
		t.Errorf("token %q has the wrong form", tok)
	}
	// Known answer, computed independently with Python's hmac module.
	if got, want := Token(kb, "2023010001"), knownToken; got != want {
		t.Errorf("Token = %q, want %q", got, want)
	}
}

const knownToken = "tk_kC5bUGNmI6isw102-3uBiw"

func TestTokenizerMatchesToken(t *testing.T) {
	key := TokenKey([]byte("node secret"), "uni-b")
	tz := NewTokenizer(key)
	for _, v := range []string{"", "2023010001", "张三", "2023010001"} {
		if got, want := tz.Token(v), Token(key, v); got != want {
			t.Errorf("Tokenizer.Token(%q) = %s, want %s", v, got, want)
		}
		if got, want := string(tz.AppendToken([]byte("x"), v)), "x"+Token(key, v); got != want {
			t.Errorf("Tokenizer.AppendToken(x, %q) = %s, want %s", v, got, want)
		}
	}
}

// TestReleaseTokens: a person's token in a release is derived from their
// recipient token and the release id: two releases to one recipient give
// the person two tokens, each differing from the recipient token, and the
// same release always gives the same one.
func TestReleaseTokens(t *testing.T) {
	secret := []byte("node secret for tests only, 32 b")
	kb := TokenKey(secret, "uni-b")
	rt := Token(kb, "2023010001")
	t1 := Token(ReleaseTokenKey(kb, "rel-0123456789abcdef"), rt)
	t2 := Token(ReleaseTokenKey(kb, "rel-fedcba9876543210"), rt)
	if t1 == t2 || t1 == rt || t2 == rt {
		t.Errorf("release tokens %s, %s of recipient token %s: want three different tokens", t1, t2, rt)
	}
	if again := Token(ReleaseTokenKey(TokenKey(secret, "uni-b"), "rel-0123456789abcdef"), rt); again != t1 {
		t.Errorf("same release, same person: %s, then %s", t1, again)
	}
	if other := Token(ReleaseTokenKey(TokenKey(secret, "center"), "rel-0123456789abcdef"), rt); other == t1 {
		t.Error("same release id under another recipient's key: tokens equal")
	}
	// Known answer, computed independently with Python's hmac module.
	if want := "tk_iuwbPbtgb8nT8ah1ZHp18g"; t1 != want {
		t.Errorf("release token = %q, want %q", t1, want)
	}
}
