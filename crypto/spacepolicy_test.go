package crypto

import (
	"errors"
	"testing"
	"time"
)

// TestSpacePolicy: a policy signed by the authority parses back for its
// space only; altered, truncated, re-signed by another key, it does not;
// and it allows suites at its minimum and above.
func TestSpacePolicy(t *testing.T) {
	ak, err := GenerateAuthorityKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateAuthorityKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := SpacePolicy{Space: "demo", Serial: 3, Issued: time.Now().Truncate(time.Millisecond), MinSuite: SuiteXWing}
	data, err := ak.SignSpacePolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSpacePolicy(data, ak.Public(), "demo")
	if err != nil || got.Serial != 3 || got.MinSuite != SuiteXWing || !got.Issued.Equal(p.Issued) {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	if !got.Allows(SuiteXWing) || got.Allows(SuiteX25519) || got.Allows(SuiteID(9)) {
		t.Errorf("an X-Wing minimum allows X-Wing %v, X25519 %v, suite 9 %v; want true, false, false",
			got.Allows(SuiteXWing), got.Allows(SuiteX25519), got.Allows(SuiteID(9)))
	}
	var none *SpacePolicy
	if !none.Allows(SuiteX25519) || !none.Allows(SuiteSM2) {
		t.Error("no policy refuses X25519 or the GM/T suite")
	}
	if got.Allows(SuiteSM2) {
		t.Error("an X-Wing minimum allows the GM/T suite")
	}
	gmt := &SpacePolicy{Space: "demo", Serial: 4, Issued: p.Issued, MinSuite: SuiteSM2}
	gmtData, err := ak.SignSpacePolicy(*gmt)
	if err != nil {
		t.Fatal(err)
	}
	if gp, err := ParseSpacePolicy(gmtData, ak.Public(), "demo"); err != nil || gp.MinSuite != SuiteSM2 {
		t.Fatalf("GM/T policy parsed %+v, %v", gp, err)
	}
	for _, tc := range []struct {
		p     *SpacePolicy
		s     SuiteID
		allow bool
	}{
		{gmt, SuiteSM2, true}, {gmt, SuiteXWing, false}, {gmt, SuiteX25519, false},
		{&SpacePolicy{MinSuite: SuiteX25519}, SuiteSM2, false}, {&SpacePolicy{MinSuite: SuiteX25519}, SuiteXWing, true},
	} {
		if tc.p.Allows(tc.s) != tc.allow || (tc.p.Refusal(tc.s) == nil) != tc.allow {
			t.Errorf("minimum %s allows %s: %v (%v), want %v", tc.p.MinSuite, tc.s, tc.p.Allows(tc.s), tc.p.Refusal(tc.s), tc.allow)
		}
	}
	if _, err := ParseSpacePolicy(data, ak.Public(), "other"); err == nil {
		t.Error("a policy of space demo parsed for space other")
	}
	if _, err := ParseSpacePolicy(data, other.Public(), "demo"); !errors.Is(err, ErrCompositeSignature) {
		t.Errorf("under another root key: %v, want ErrCompositeSignature", err)
	}
	altered := append([]byte(nil), data...)
	altered[len(magicSpacePolicy)+1+1+len("demo")+8+8+1] ^= 3 // the minimum suite's low byte
	if _, err := ParseSpacePolicy(altered, ak.Public(), "demo"); err == nil {
		t.Error("a policy with its minimum suite altered parsed")
	}
	for _, bad := range [][]byte{nil, data[:len(data)-1], append(append([]byte(nil), data...), 0)} {
		if _, err := ParseSpacePolicy(bad, ak.Public(), "demo"); err == nil {
			t.Errorf("%d bytes of a broken policy parsed", len(bad))
		}
	}
	if _, err := ak.SignSpacePolicy(SpacePolicy{Space: "demo", Serial: 1, Issued: time.Now(), MinSuite: SuiteID(9)}); err == nil {
		t.Error("a policy with an unknown minimum suite was signed")
	}
}

// TestSpacePolicyLinkage: a policy naming a linkage evaluator parses back
// with it; a policy without one encodes as before; a linkage section that
// is altered, truncated, oversized or followed by bytes is refused.
func TestSpacePolicyLinkage(t *testing.T) {
	ak, err := GenerateAuthorityKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i + 1)
	}
	base := SpacePolicy{Space: "demo", Serial: 2, Issued: time.Now().Truncate(time.Millisecond), MinSuite: SuiteX25519}
	withL := base
	withL.Linkage = &LinkageEvaluator{Node: "uni-e", Suite: "ristretto255-SHA512", Key: key}
	data, err := ak.SignSpacePolicy(withL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSpacePolicy(data, ak.Public(), "demo")
	if err != nil || got.Linkage == nil || got.Linkage.Node != "uni-e" || got.Linkage.Suite != "ristretto255-SHA512" || string(got.Linkage.Key) != string(key) {
		t.Fatalf("parsed %+v (%+v), %v", got, got.Linkage, err)
	}
	plain, err := ak.SignSpacePolicy(base)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ParseSpacePolicy(plain, ak.Public(), "demo"); err != nil || p.Linkage != nil {
		t.Fatalf("policy without linkage: %+v, %v", p, err)
	}
	if b1, b2 := base.appendTo(nil), withL.appendTo(nil); string(b2[:len(b1)]) != string(b1) {
		t.Error("the linkage section changes the fields before it")
	}
	for name, l := range map[string]*LinkageEvaluator{
		"no node":   {Suite: "ristretto255-SHA512", Key: key},
		"no suite":  {Node: "uni-e", Key: key},
		"no key":    {Node: "uni-e", Suite: "ristretto255-SHA512"},
		"large key": {Node: "uni-e", Suite: "ristretto255-SHA512", Key: make([]byte, 200)},
	} {
		bad := base
		bad.Linkage = l
		if _, err := ak.SignSpacePolicy(bad); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	// A body with an unknown section or trailing bytes, signed properly,
	// is refused.
	for name, body := range map[string][]byte{
		"unknown section": append(base.appendTo(nil), 2, 0),
		"trailing":        append(withL.appendTo(nil), 0),
		"truncated":       withL.appendTo(nil)[:len(withL.appendTo(nil))-3],
	} {
		sig, err := ak.ck.Sign(PurposeSpacePolicy, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSpacePolicy(append(body, sig...), ak.Public(), "demo"); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// Flipping a byte of the key breaks the signature.
	flipped := append([]byte(nil), data...)
	flipped[len(withL.appendTo(nil))-1] ^= 1
	if _, err := ParseSpacePolicy(flipped, ak.Public(), "demo"); err == nil {
		t.Error("altered linkage key parsed")
	}
}
