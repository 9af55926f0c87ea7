package schema

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestScanWords checks the eight-byte tests against byte-by-byte ones for
// every byte value at every position, among harmless neighbours.
func TestScanWords(t *testing.T) {
	for pos := range 8 {
		for c := range 256 {
			w := []byte("abcdefgh")
			w[pos] = byte(c)
			x := binary.LittleEndian.Uint64(w)
			if got, want := hasLess(x, 0x20), c < 0x20; got != want {
				t.Errorf("hasLess(%q, 0x20) = %v", w, got)
			}
			if got, want := hasByte(x, '"'), c == '"'; got != want {
				t.Errorf("hasByte(%q, '\"') = %v", w, got)
			}
			if got, want := hasByte(x, 0xE2), c == 0xE2; got != want {
				t.Errorf("hasByte(%q, 0xE2) = %v", w, got)
			}
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain ascii text", "张三丰 学生公寓13号楼", "a\"b", `a\b`, "tab\there", "\x00",
		"\u2028", "“quoted”", "eight by\u2028 eight bytes", "“12345678901234567890”", "\xff\xfe", "0123456789abcdef\n", "四川省成都市武侯区人民南路3段97号26栋5单元"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendJSONString(nil, s)
		if want := appendJSONStringSlow(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: fast %s, rune by rune %s", s, got, want)
		}
		if !utf8.ValidString(s) {
			return
		}
		if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }) {
			if plain := AppendPlainJSONString(nil, s); !bytes.Equal(plain, got) {
				t.Fatalf("%q: AppendPlainJSONString %s, AppendJSONString %s", s, plain, got)
			}
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("%q: wrote %s, which reads back as %q (%v)", s, got, back, err)
		}
	})
}
