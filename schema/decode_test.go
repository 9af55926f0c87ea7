package schema

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/text/encoding/simplifiedchinese"
)

// TestDecode: UTF-8 with or without a byte order mark and GBK/GB18030 are
// detected and read as UTF-8; a byte that does not decode stops the read
// at its line and offset, whatever the read sizes; nothing is replaced.
func TestDecode(t *testing.T) {
	text := "student_id,name\n2024001,张伟\n2024002,李娜\n"
	gbk, err := simplifiedchinese.GBK.NewEncoder().String(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, in, enc, wantEnc string
	}{
		{"utf-8", text, "", EncodingUTF8},
		{"utf-8 with a byte order mark", "\xef\xbb\xbf" + text, "", EncodingUTF8},
		{"gbk, detected", gbk, "", EncodingGB18030},
		{"gbk, named", gbk, EncodingGB18030, EncodingGB18030},
	} {
		for _, slow := range []bool{false, true} {
			var r io.Reader = strings.NewReader(c.in)
			if slow {
				r = iotest.OneByteReader(r) // runes split across reads
			}
			dr, enc, err := Decode(r, c.enc)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got, err := io.ReadAll(dr)
			if err != nil || string(got) != text || enc != c.wantEnc {
				t.Errorf("%s (one byte a read %v): %q, %s, %v; want the text in %s", c.name, slow, got, enc, err, c.wantEnc)
			}
		}
	}
	for _, c := range []struct {
		name, in, enc string
		line          int
		offset        int64
	}{
		{"gbk read as utf-8", "a,b\n" + gbk, EncodingUTF8, 3, 28},
		{"a stray byte in utf-8", "a,b\nc,\xffd\n", EncodingUTF8, 2, 6},
		{"a truncated rune at the end", "a,b\nc,\xe5\xbc", EncodingUTF8, 2, 6},
		{"bytes gb18030 cannot read", "a,b\n\x81\x20\n", EncodingGB18030, 2, 4},
	} {
		dr, _, err := Decode(strings.NewReader(c.in), c.enc)
		if err == nil {
			_, err = io.ReadAll(dr)
		}
		var de *DecodeError
		if !errors.As(err, &de) || de.Line != c.line || de.Offset != c.offset {
			t.Errorf("%s: %v; want a DecodeError at line %d, byte %d", c.name, err, c.line, c.offset)
		}
	}
	if _, _, err := Decode(strings.NewReader(text), "latin1"); err == nil {
		t.Error("an unknown encoding was taken")
	}
}
