package schema

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// residentID returns d17 followed by its MOD 11-2 check character,
// computed independently of the code under test.
func residentID(t testing.TB, d17 string) string {
	t.Helper()
	if len(d17) != 17 {
		t.Fatalf("residentID: need 17 digits, got %d", len(d17))
	}
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, w := range weights {
		sum += int(d17[i]-'0') * w
	}
	return d17 + string("10X98765432"[sum%11])
}

// badResidentID returns d17 followed by a wrong check character.
func badResidentID(t testing.TB, d17 string) string {
	good := residentID(t, d17)
	if good[17] == '0' {
		return d17 + "1"
	}
	return d17 + "0"
}

// expandIDs replaces {rid:D17} and {badrid:D17} placeholders.
func expandIDs(t testing.TB, s string) string {
	for _, p := range []struct {
		tag string
		f   func(testing.TB, string) string
	}{{"{rid:", residentID}, {"{badrid:", badResidentID}} {
		for {
			i := strings.Index(s, p.tag)
			if i < 0 {
				break
			}
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				t.Fatalf("unterminated placeholder in %q", s)
			}
			s = s[:i] + p.f(t, s[i+len(p.tag):i+j]) + s[i+j+1:]
		}
	}
	return s
}

type detectorVector struct {
	line     int
	detector string
	hit      bool
	input    string
}

func loadDetectorVectors(t testing.TB) []detectorVector {
	t.Helper()
	f, err := os.Open("testdata/detectors.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vs []detectorVector
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 || (parts[1] != "hit" && parts[1] != "miss") {
			t.Fatalf("detectors.txt:%d: malformed vector", n)
		}
		vs = append(vs, detectorVector{line: n, detector: parts[0], hit: parts[1] == "hit", input: expandIDs(t, parts[2])})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return vs
}

func date(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}
