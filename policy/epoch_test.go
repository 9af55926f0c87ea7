package policy

import "testing"

// TestValidEpoch: years and names, and what is refused.
func TestValidEpoch(t *testing.T) {
	for e, want := range map[string]bool{"2026": true, "2999": true, "1999": false, "202": false, "spring-2026": true,
		"a": true, "": false, "-x": false, "Spring": false, "x y": false, "a.b_c-d": true, "abcdefghijklmnopqrstuvwxyz0123456": false} {
		if got := ValidEpoch(e); got != want {
			t.Errorf("ValidEpoch(%q) = %v, want %v", e, got, want)
		}
	}
}
