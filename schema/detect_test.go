package schema

import (
	"slices"
	"testing"
)

func TestDetectorVectors(t *testing.T) {
	std := Default()
	asOf := date("2026-01-01")
	vs := loadDetectorVectors(t)
	if len(vs) < 50 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		d := slices.Index(detectorNames[:], v.detector)
		if d < 0 {
			t.Fatalf("detectors.txt:%d: unknown detector %q", v.line, v.detector)
		}
		// The detector itself.
		if got := std.detect(v.input, 1<<d) != 0; got != v.hit {
			t.Errorf("detectors.txt:%d: %s(%q) = %v, want %v", v.line, v.detector, v.input, got, v.hit)
		}
		// Classify: in a text field every detector runs; in a non-text
		// string field only cn_resident_id and bank_card.
		rec := Record{Type: "student", Fields: map[string]any{"student_id": "S1", "notes": v.input, "address": v.input}}
		l, err := std.Classify(rec, asOf)
		if err != nil {
			t.Fatalf("detectors.txt:%d: Classify: %v", v.line, err)
		}
		if got := slices.Contains(l.Fields["notes"].Detectors, v.detector); got != v.hit {
			t.Errorf("detectors.txt:%d: notes detectors %v, want %s hit=%v", v.line, l.Fields["notes"].Detectors, v.detector, v.hit)
		}
		everywhere := v.detector == "cn_resident_id" || v.detector == "bank_card"
		if got := slices.Contains(l.Fields["address"].Detectors, v.detector); got != (v.hit && everywhere) {
			t.Errorf("detectors.txt:%d: address detectors %v, want %s hit=%v", v.line, l.Fields["address"].Detectors, v.detector, v.hit && everywhere)
		}
		if v.hit {
			lv, _ := std.DetectorLevel(v.detector)
			if got := l.Fields["notes"].Level; got < lv {
				t.Errorf("detectors.txt:%d: notes level %v, want at least %v", v.line, got, lv)
			}
		}
	}
}

func TestResidentIDHelper(t *testing.T) {
	// The example of GB 11643 has check character X.
	if got, want := residentID(t, "11010519491231002"), "11010519491231002X"; got != want {
		t.Fatalf("residentID = %s, want %s", got, want)
	}
	for _, d17 := range []string{"11010519491231002", "44030619900307123", "32010619880101001"} {
		if got := validResidentID(residentID(t, d17)); !got {
			t.Errorf("validResidentID(%s) = false, want true", residentID(t, d17))
		}
		if got := validResidentID(badResidentID(t, d17)); got {
			t.Errorf("validResidentID(%s) = true, want false", badResidentID(t, d17))
		}
	}
}

func FuzzDetectors(f *testing.F) {
	for _, v := range loadDetectorVectors(f) {
		f.Add(v.input)
	}
	std := Default()
	f.Fuzz(func(t *testing.T, s string) {
		hits := std.detect(s, 1<<numDetectors-1)
		if hits&(1<<detResidentID) != 0 && !findResidentID(s) {
			t.Fatal("inconsistent resident ID result")
		}
		_ = hits.names()
	})
}

func TestSkipNonDigits(t *testing.T) {
	naive := func(s string, i int) int {
		for ; i < len(s) && !isDigit(s[i]); i++ {
		}
		return i
	}
	// Every byte value at every offset of a 17-byte string.
	for b := 0; b < 256; b++ {
		for pos := 0; pos < 17; pos++ {
			buf := []byte("\xe5\xad\xa6abc/:;@ \x80\xff\x7f\x00~!")
			buf[pos] = byte(b)
			s := string(buf)
			for i := 0; i <= len(s); i++ {
				if got, want := skipNonDigits(s, i), naive(s, i); got != want {
					t.Fatalf("skipNonDigits(%q, %d) = %d, want %d", s, i, got, want)
				}
			}
		}
	}
}
