package schema

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/transform"
)

// The text encodings the importers read. GB18030 covers GBK and GB2312,
// what most Chinese school information systems export.
const (
	EncodingUTF8    = "utf-8"
	EncodingGB18030 = "gb18030"
)

// Encodings are the encodings Decode takes ("" detects).
func Encodings() []string { return []string{EncodingUTF8, EncodingGB18030} }

// DecodeError says where input stopped decoding: the 1-based line and the
// byte offset (of the input for UTF-8, of the decoded text for GB18030).
// It carries no byte of the input.
type DecodeError struct {
	Encoding string
	Line     int
	Offset   int64
}

func (e *DecodeError) Error() string {
	hint := ""
	if e.Encoding == EncodingUTF8 {
		hint = " (GBK or GB18030 input: give that encoding)"
	}
	return fmt.Sprintf("input is not valid %s at line %d, byte %d%s; nothing after it was read", e.Encoding, e.Line, e.Offset, hint)
}

// detectWindow is how much of the input detection looks at.
const detectWindow = 64 << 10

// Decode returns r's text as UTF-8, and the encoding it was read in.
// encoding "" detects it: a UTF-8 byte order mark, or a first 64 KiB that
// is valid UTF-8, mean UTF-8; anything else is read as GB18030. A byte
// order mark is dropped. Input that does not decode stops the reader
// with a *DecodeError: nothing is replaced, so nothing is stored with
// replacement characters.
func Decode(r io.Reader, encoding string) (io.Reader, string, error) {
	br := bufio.NewReaderSize(r, detectWindow)
	peek, err := br.Peek(detectWindow)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, "", err
	}
	bom := bytes.HasPrefix(peek, []byte("\xef\xbb\xbf"))
	switch encoding {
	case "":
		encoding = EncodingGB18030
		if bom || validUTF8Prefix(peek, len(peek) == detectWindow) {
			encoding = EncodingUTF8
		}
	case EncodingUTF8, EncodingGB18030:
	default:
		return nil, "", fmt.Errorf("unknown encoding %q (want one of %q, or none to detect)", encoding, Encodings())
	}
	if bom && encoding == EncodingUTF8 {
		br.Discard(3)
	}
	if encoding == EncodingUTF8 {
		return &strictText{r: br, enc: encoding, line: 1}, encoding, nil
	}
	return &strictText{r: transform.NewReader(br, simplifiedchinese.GB18030.NewDecoder()), enc: encoding, line: 1, decoded: true},
		encoding, nil
}

// validUTF8Prefix reports whether b is valid UTF-8, but for an incomplete
// sequence at its end when more input follows.
func validUTF8Prefix(b []byte, more bool) bool {
	if utf8.Valid(b) {
		return true
	}
	for cut := 1; more && cut <= utf8.UTFMax-1 && cut <= len(b); cut++ {
		if utf8.Valid(b[:len(b)-cut]) {
			return true
		}
	}
	return false
}

// strictText passes UTF-8 text through and fails at the first byte that
// is not valid UTF-8; decoded (the output of a decoder, valid UTF-8 by
// construction) fails at the first replacement character instead, which
// marks input the decoder could not read.
type strictText struct {
	r       io.Reader
	enc     string
	decoded bool
	line    int
	off     int64  // bytes passed before the pending ones
	pending []byte // an incomplete rune at the end of the last read
	err     error
}

func (t *strictText) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	buf := append(t.pending, p[:n]...)
	i := 0
	for i < len(buf) {
		c := buf[i]
		if c < utf8.RuneSelf {
			if c == '\n' {
				t.line++
			}
			i++
			continue
		}
		if !utf8.FullRune(buf[i:]) {
			break // the rest comes with the next read
		}
		r, size := utf8.DecodeRune(buf[i:])
		if r == utf8.RuneError && (size == 1 || t.decoded) {
			t.err = &DecodeError{Encoding: t.enc, Line: t.line, Offset: t.off + int64(i)}
			return 0, t.err
		}
		i += size
	}
	t.off += int64(i)
	t.pending = append(t.pending[:0], buf[i:]...)
	if errors.Is(err, io.EOF) && len(t.pending) > 0 {
		t.err = &DecodeError{Encoding: t.enc, Line: t.line, Offset: t.off}
		return 0, t.err
	}
	return n, err
}
