package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// checkEntry fails unless appendEntry encodes e exactly as json.Marshal does.
func checkEntry(t *testing.T, e Entry) {
	t.Helper()
	want, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if got := appendEntry(nil, &e); !bytes.Equal(got, want) {
		t.Errorf("appendEntry(%#v)\n got %s\nwant %s", e, got, want)
	}
	// Appending to a non-empty buffer must leave its prefix alone.
	if got := appendEntry([]byte("xy"), &e); !bytes.Equal(got, append([]byte("xy"), want...)) {
		t.Errorf("appendEntry with prefix: got %s", got)
	}
}

func TestAppendEntry(t *testing.T) {
	var controls strings.Builder
	for b := 0; b < 0x20; b++ {
		controls.WriteByte(byte(b))
	}
	controls.WriteString("\x7f")
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("subject-%03d-<%d>", i, i)
	}
	tests := []struct {
		name string
		e    Entry
	}{
		{"zero", Entry{}},
		{"minimal", Entry{Seq: 1, Time: 1795420800000, Node: "uni-a", Kind: KindIngest}},
		{"negative ints", Entry{Seq: -1, Time: -9223372036854775808, Count: -42}},
		{"max ints", Entry{Seq: 9223372036854775807, Time: 9223372036854775807, Count: 1<<63 - 1}},
		{"zero count omitted", Entry{Kind: KindDecide, Count: 0, Reason: "permit"}},
		{"all strings", Entry{Seq: 7, Time: 8, Node: "n", Kind: "k", Peer: "p", Agreement: "a",
			Purpose: "pu", LegalBasis: "lb", Standard: "st", Envelope: "env", Rule: "r", Reason: "re", Count: 3}},
		{"legal basis and standard", Entry{Kind: KindSeal, Agreement: "a", Purpose: "credit_transfer",
			LegalBasis: "contract", Standard: "EDU-CN-DEFAULT/1", Envelope: "e", Count: 1}},
		{"standard alone", Entry{Kind: KindReceive, Standard: "EDU-CN-DEFAULT/1"}},
		{"legal basis alone, escaped", Entry{Kind: KindExport, LegalBasis: "<consent>&\u2028"}},
		{"digest", Entry{Kind: KindExport, Agreement: "a", Count: 2, Digest: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Detail: map[string]int{"format_csv": 1}}},
		{"html", Entry{Node: "<script>&amp;</script>", Reason: "a<b>c&d", Detail: map[string]int{"<&>": 1}}},
		{"quotes and backslashes", Entry{Node: `"\"\\`, Kind: `\u0041`, Detail: map[string]int{`"k\`: 2}}},
		{"controls", Entry{Node: controls.String(), Subjects: []string{"\b\f\n\r\t", "\x00", "\x1f"}}},
		{"unicode", Entry{Node: "ünï", Kind: "日本語", Peer: "🎓", Reason: "\u00a0\u200b\ufeff", Detail: map[string]int{"é": 1, "e": 2}}},
		{"line separators", Entry{Node: "a\u2028b\u2029c", Detail: map[string]int{"\u2028": 1}}},
		{"near line separators", Entry{Node: "\u2027\u202a\u202f"}},
		{"invalid utf8", Entry{Node: "a\xffb", Kind: "\xc3", Peer: "\xed\xa0\x80", Reason: "\xf4\x90\x80\x80",
			Subjects: []string{"\x80\x80"}, Detail: map[string]int{"\xfe": 1, "\xff": 2}}},
		{"literal replacement char", Entry{Node: "\ufffd"}},
		{"nil subjects", Entry{Kind: "k", Subjects: nil}},
		{"empty subjects", Entry{Kind: "k", Subjects: []string{}}},
		{"empty subject string", Entry{Kind: "k", Subjects: []string{""}}},
		{"many subjects", Entry{Kind: KindSend, Count: len(many), Subjects: many}},
		{"nil detail", Entry{Kind: "k", Detail: nil}},
		{"empty detail", Entry{Kind: "k", Detail: map[string]int{}}},
		{"one detail", Entry{Kind: "k", Detail: map[string]int{"student/L3": 100}}},
		{"detail zero and negative", Entry{Kind: "k", Detail: map[string]int{"": 0, "b": -1}}},
		{"detail several keys", Entry{Kind: "k", Detail: map[string]int{
			"student/L3": 1, "student/L1": 2, "course": 3, "Course": 4, "a": 5, "aa": 6, "ab": 7, "b": 8,
		}}},
		{"detail more keys than stack buffer", Entry{Kind: "k", Detail: map[string]int{
			"k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "k6": 6, "k7": 7, "k8": 8, "k9": 9, "k10": 10,
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkEntry(t, tt.e) })
	}
}

func TestAppendEntryEveryByte(t *testing.T) {
	for b := 0; b < 256; b++ {
		s := string([]byte{'a', byte(b), 'z'})
		checkEntry(t, Entry{Node: s, Subjects: []string{s}, Detail: map[string]int{s: b}})
	}
}

func FuzzAppendEntry(f *testing.F) {
	f.Add(int64(1), int64(1795420800000), "uni-a", "decide", "receiver", "bench", "research", "contract",
		"EDU-CN-DEFAULT/1", "", "R-permit", "permitted", 100, "subject", "student/L3", 100)
	f.Add(int64(-1), int64(0), "<&>", "\u2028", "\xff", "\x00\b\f", `"\`, "", "\u2029", "日本", "", "", 0, "", "", 0)
	f.Fuzz(func(t *testing.T, seq, tm int64, node, kind, peer, agreement, purpose, basis, standard, envelope,
		rule, reason string, count int, subject, key string, val int) {
		e := Entry{Seq: seq, Time: tm, Node: node, Kind: kind, Peer: peer, Agreement: agreement,
			Purpose: purpose, LegalBasis: basis, Standard: standard, Envelope: envelope, Rule: rule, Reason: reason,
			Count: count, Digest: reason + envelope}
		if subject != "" {
			e.Subjects = []string{subject, node}
		}
		if key != "" {
			e.Detail = map[string]int{key: val, kind: count}
		}
		checkEntry(t, e)
	})
}

// benchEntry is a typical decision entry.
func benchEntry() Entry {
	subjects := make([]string, 100)
	for i := range subjects {
		sum := sha256.Sum256([]byte{byte(i)})
		subjects[i] = base64.RawURLEncoding.EncodeToString(sum[:]) // 43 characters
	}
	return Entry{Seq: 123456, Time: 1795420800000, Node: "uni-a", Kind: KindDecide, Peer: "receiver",
		Agreement: "bench", Purpose: "research", LegalBasis: "contract", Standard: "EDU-CN-DEFAULT/1", Rule: "R-permit", Reason: "permitted", Count: 100,
		Subjects: subjects, Detail: map[string]int{"student/L3": 100}}
}

func BenchmarkAppendEntry(b *testing.B) {
	e := benchEntry()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendEntry(buf[:0], &e)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendEntryFresh(b *testing.B) {
	e := benchEntry()
	b.ReportAllocs()
	for b.Loop() {
		_ = appendEntry(nil, &e)
	}
}

func BenchmarkMarshalEntry(b *testing.B) {
	e := benchEntry()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}
