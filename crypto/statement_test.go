package crypto

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testRevocationList() RevocationList {
	return RevocationList{
		Space:  "city-edu",
		Serial: 3,
		Issued: issued.Add(10 * 24 * time.Hour),
		Entries: []Revocation{
			{NodeID: "uni-c", Revoked: issued.Add(5 * 24 * time.Hour), Reason: "membership ended"},
			{NodeID: "uni-a", KeyID: "s-0123456789abcdef", Revoked: issued.Add(7 * 24 * time.Hour), Reason: "key compromised 密钥泄露"},
		},
	}
}

func TestRevocationList(t *testing.T) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	other, _ := GenerateAuthorityKey(detRand("other authority"))
	rl := testRevocationList()
	data, err := a.SignRevocations(rl)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRevocationList(data, a.Public(), "city-edu")
	if err != nil {
		t.Fatalf("ParseRevocationList: %v", err)
	}
	if got.Space != rl.Space || got.Serial != rl.Serial || !got.Issued.Equal(rl.Issued) || len(got.Entries) != 2 ||
		got.Entries[1] != (Revocation{NodeID: "uni-a", KeyID: "s-0123456789abcdef", Revoked: rl.Entries[1].Revoked.UTC(), Reason: rl.Entries[1].Reason}) {
		t.Fatalf("got %+v\nwant %+v", got, rl)
	}
	if again := got.appendTo(nil); !bytes.Equal(again, data[:len(data)-CompositeSignatureSize]) {
		t.Error("parsed list does not re-encode to the signed bytes")
	}
	if !bytes.HasPrefix(data, []byte("EDRL\x01\x08city-edu")) {
		t.Errorf("encoding starts %q", data[:16])
	}

	day := func(d int) time.Time { return issued.Add(time.Duration(d) * 24 * time.Hour) }
	for _, tt := range []struct {
		node, key string
		at        time.Time
		want      bool
	}{
		{"uni-c", "", day(5), true},
		{"uni-c", "k-0000000000000000", day(6), true}, // whole node: every key
		{"uni-c", "", day(4), false},                  // before the revocation
		{"uni-a", "s-0123456789abcdef", day(7), true},
		{"uni-a", "s-0123456789abcdef", day(7).Add(-time.Millisecond), false},
		{"uni-a", "s-fedcba9876543210", day(8), false}, // another key of the node
		{"uni-a", "", day(8), false},                   // the node as a whole is not revoked
		{"uni-b", "", day(9), false},
	} {
		if g := got.Revoked(tt.node, tt.key, tt.at); g != tt.want {
			t.Errorf("Revoked(%q, %q, day %v) = %v, want %v", tt.node, tt.key, tt.at.Sub(issued).Hours()/24, g, tt.want)
		}
	}
	var nilList *RevocationList
	if nilList.Revoked("uni-c", "", day(9)) {
		t.Error("nil list revokes")
	}
	older := rl
	older.Serial = 2
	if !got.Supersedes(&older) || got.Supersedes(got) || !got.Supersedes(nil) || older.Supersedes(got) {
		t.Error("Supersedes")
	}

	// An empty list is valid.
	empty, err := a.SignRevocations(RevocationList{Space: "city-edu", Serial: 1, Issued: issued})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := ParseRevocationList(empty, a.Public(), "city-edu"); err != nil || len(l.Entries) != 0 {
		t.Errorf("empty list: %v", err)
	}

	flip := func(i int) []byte {
		b := bytes.Clone(data)
		b[i] ^= 1
		return b
	}
	withCount := func(n uint32) []byte {
		b := bytes.Clone(data)
		binary.BigEndian.PutUint32(b[4+1+9+8+8:], n)
		return b
	}
	resigned := func(edit func([]byte) []byte) []byte {
		body := edit(bytes.Clone(data[:len(data)-CompositeSignatureSize]))
		sig, _ := a.ck.Sign(PurposeRevocationList, body)
		return append(body, sig...)
	}
	otherSpace, _ := a.SignRevocations(func() RevocationList { r := testRevocationList(); r.Space = "other"; return r }())
	byOther, _ := other.SignRevocations(rl)
	asCheckpoint := resigned(func(b []byte) []byte { return b })
	{ // signed under the wrong purpose
		body := data[:len(data)-CompositeSignatureSize]
		sig, _ := a.ck.Sign(PurposeCheckpoint, body)
		asCheckpoint = append(bytes.Clone(body), sig...)
	}
	mixed := append(bytes.Clone(data[:len(data)-CompositeSignatureSize+64]), byOther[len(byOther)-CompositeSignatureSize+64:]...)
	tests := []struct {
		name string
		data []byte
		sig  bool // the error must wrap ErrCompositeSignature
	}{
		{"magic", flip(0), false},
		{"version 2", flip(4) /* 1 → 0 */, false},
		{"space length", flip(5), false},
		{"serial", flip(4 + 1 + 9 + 7), true},
		{"issue time", flip(4 + 1 + 9 + 8 + 7), true},
		{"entry reason", flip(len(data) - CompositeSignatureSize - 1), true},
		{"Ed25519 part", flip(len(data) - CompositeSignatureSize), true},
		{"ML-DSA part", flip(len(data) - 1), true},
		{"ML-DSA part by another authority", mixed, true},
		{"count too large", withCount(1000), false},
		{"count too small", withCount(1), false},
		{"truncated", data[:len(data)-1], false},
		{"only a signature", data[len(data)-CompositeSignatureSize:], false},
		{"trailing byte", append(bytes.Clone(data), 0), false},
		{"other space", otherSpace, false},
		{"other authority", byOther, true},
		{"signed as a checkpoint", asCheckpoint, true},
		{"serial 0", resigned(func(b []byte) []byte { clear(b[4+1+9 : 4+1+9+8]); return b }), false},
		{"negative time", resigned(func(b []byte) []byte { b[4+1+9+8] = 0xff; return b }), false},
		{"control character in reason", resigned(func(b []byte) []byte { b[len(b)-1] = '\n'; return b }), false},
		{"bad key id", resigned(func(b []byte) []byte {
			i := bytes.Index(b, []byte("s-0123"))
			b[i] = 'x'
			return b
		}), false},
		{"too large", make([]byte, MaxRevocationListSize+1), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		_, err := ParseRevocationList(tt.data, a.Public(), "city-edu")
		t.Logf("%s: %v", tt.name, err)
		if err == nil || tt.sig != errors.Is(err, ErrCompositeSignature) {
			t.Errorf("%s: got %v, want an error (signature: %v)", tt.name, err, tt.sig)
		}
	}

	for name, bad := range map[string]func(*RevocationList){
		"no space":       func(r *RevocationList) { r.Space = "" },
		"serial 0":       func(r *RevocationList) { r.Serial = 0 },
		"no issue time":  func(r *RevocationList) { r.Issued = time.Time{} },
		"no node":        func(r *RevocationList) { r.Entries[0].NodeID = "" },
		"bad key id":     func(r *RevocationList) { r.Entries[0].KeyID = "key-1" },
		"long reason":    func(r *RevocationList) { r.Entries[0].Reason = strings.Repeat("x", 257) },
		"no revoke time": func(r *RevocationList) { r.Entries[0].Revoked = time.Time{} },
		"too many": func(r *RevocationList) {
			r.Entries = make([]Revocation, MaxRevocationListSize/12)
			for i := range r.Entries {
				r.Entries[i] = Revocation{NodeID: "n", Revoked: issued}
			}
		},
	} {
		r := testRevocationList()
		r.Entries = append([]Revocation(nil), r.Entries...)
		bad(&r)
		if _, err := a.SignRevocations(r); err == nil {
			t.Errorf("SignRevocations accepted %s", name)
		}
	}
}

func TestCheckpoint(t *testing.T) {
	k := testCompositeKey(t, "checkpoint")
	other := testCompositeKey(t, "other checkpoint")
	c := Checkpoint{Space: "city-edu", Node: "uni-a", Count: 1000, Head: [32]byte{0: 0xab, 31: 0xcd}, Time: issued.Add(1234567 * time.Microsecond)}
	data, err := SignCheckpoint(k, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCheckpoint(data, k.Public())
	if err != nil {
		t.Fatalf("ParseCheckpoint: %v", err)
	}
	want := c
	want.Time = c.Time.Truncate(time.Millisecond)
	if *got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if node, kid, err := CheckpointSigner(data); err != nil || node != "uni-a" || kid != k.Public().KeyID() {
		t.Errorf("CheckpointSigner = %q, %q, %v", node, kid, err)
	}
	if again := got.appendTo(nil, k.Public().KeyID()); !bytes.Equal(again, data[:len(data)-CompositeSignatureSize]) {
		t.Error("parsed checkpoint does not re-encode to the signed bytes")
	}
	if len(data) != 4+1+9+6+19+8+32+8+CompositeSignatureSize {
		t.Errorf("checkpoint of %d bytes", len(data))
	}

	flip := func(i int) []byte {
		b := bytes.Clone(data)
		b[i] ^= 1
		return b
	}
	resigned := func(edit func([]byte) []byte) []byte {
		body := edit(bytes.Clone(data[:len(data)-CompositeSignatureSize]))
		sig, _ := k.Sign(PurposeCheckpoint, body)
		return append(body, sig...)
	}
	body := len(data) - CompositeSignatureSize
	byOther, _ := SignCheckpoint(other, c)
	// A checkpoint made by another key but naming this key's id.
	namingK := func() []byte {
		b := bytes.Clone(data[:body])
		sig, _ := other.Sign(PurposeCheckpoint, b)
		return append(b, sig...)
	}()
	tests := []struct {
		name string
		data []byte
		sig  bool
	}{
		{"magic", flip(1), false},
		{"version", flip(4), false},
		{"space", flip(6), true},
		{"node", flip(4 + 1 + 9 + 1), true},
		{"count", flip(body - 8 - 32 - 1), true},
		{"head", flip(body - 8 - 1), true},
		{"time", flip(body - 1), true},
		{"Ed25519 part", flip(body + 1), true},
		{"ML-DSA part", flip(len(data) - 2), true},
		{"key id altered", flip(4 + 1 + 9 + 6 + 5), true},
		{"by another key", byOther, true},
		{"another key naming this key", namingK, true},
		{"truncated", data[:len(data)-1], false},
		{"trailing", append(bytes.Clone(data), 0), false},
		{"huge", make([]byte, 10000), false},
		{"empty", nil, false},
		{"Ed25519 key id", resigned(func(b []byte) []byte { b[4+1+9+6+1] = 's'; return b }), false},
		{"bad node id", resigned(func(b []byte) []byte { b[4+1+9+1] = '.'; return b }), false},
		{"negative time", resigned(func(b []byte) []byte { b[len(b)-8] = 0x80; return b }), false},
	}
	for _, tt := range tests {
		_, err := ParseCheckpoint(tt.data, k.Public())
		t.Logf("%s: %v", tt.name, err)
		if err == nil || tt.sig != errors.Is(err, ErrCompositeSignature) {
			t.Errorf("%s: got %v, want an error (signature: %v)", tt.name, err, tt.sig)
		}
	}
	if _, err := ParseCheckpoint(data, CompositeVerifyKey{}); err == nil {
		t.Error("zero key accepted")
	}
	for name, bad := range map[string]func(*Checkpoint){
		"no space": func(c *Checkpoint) { c.Space = "" },
		"no node":  func(c *Checkpoint) { c.Node = "a b" },
		"no time":  func(c *Checkpoint) { c.Time = time.Time{} },
		"1969":     func(c *Checkpoint) { c.Time = time.Unix(-1, 0) },
	} {
		cc := c
		bad(&cc)
		if _, err := SignCheckpoint(k, cc); err == nil {
			t.Errorf("SignCheckpoint accepted %s", name)
		}
	}
}

func TestAuthorityPublicKeyFile(t *testing.T) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	dir := t.TempDir()
	p := filepath.Join(dir, "authority.pub.pem")
	if err := WriteAuthorityPublicKey(p, a.Public()); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %04o, want 0644", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(p)
	b1, rest := pem.Decode(data)
	b2, rest := pem.Decode(rest)
	if b1 == nil || b2 == nil || len(bytes.TrimSpace(rest)) != 0 || b1.Type != "PUBLIC KEY" || b2.Type != "PUBLIC KEY" {
		t.Fatalf("public key file:\n%s", data)
	}
	// RFC 9881: SEQUENCE { SEQUENCE { OID 2.16.840.1.101.3.4.3.18 }, BIT STRING (1952 bytes) }.
	wantPrefix := []byte{0x30, 0x82, 0x07, 0xb2, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12, 0x03, 0x82, 0x07, 0xa1, 0x00}
	if !bytes.HasPrefix(b2.Bytes, wantPrefix) || !bytes.Equal(b2.Bytes[len(wantPrefix):], a.Public().Bytes()[32:]) {
		t.Errorf("ML-DSA-65 block %x…", b2.Bytes[:32])
	}
	got, err := ReadAuthorityPublicKey(p)
	if err != nil || !got.Equal(a.Public()) || got.KeyID() != a.Public().KeyID() {
		t.Fatalf("ReadAuthorityPublicKey: %v", err)
	}
	other, _ := GenerateAuthorityKey(detRand("other authority"))
	op := filepath.Join(dir, "other.pem")
	WriteAuthorityPublicKey(op, other.Public())
	odata, _ := os.ReadFile(op)
	o1, orest := pem.Decode(odata)
	o2, _ := pem.Decode(orest)
	enc := func(bs ...*pem.Block) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, pem.EncodeToMemory(b)...)
		}
		return out
	}
	for name, content := range map[string][]byte{
		"Ed25519 only":            enc(b1),
		"ML-DSA-65 only":          enc(b2),
		"swapped":                 enc(b2, b1),
		"three blocks":            enc(b1, b2, b2),
		"Ed25519 twice":           enc(b1, b1),
		"other type":              enc(b1, &pem.Block{Type: "ML-DSA PUBLIC KEY", Bytes: b2.Bytes}),
		"short ML-DSA key":        enc(b1, &pem.Block{Type: "PUBLIC KEY", Bytes: b2.Bytes[:len(b2.Bytes)-1]}),
		"trailing garbage":        append(enc(b1, b2), "junk"...),
		"ML-DSA with a parameter": enc(b1, &pem.Block{Type: "PUBLIC KEY", Bytes: append(append([]byte{0x30, 0x82, 0x07, 0xb4, 0x30, 0x0d}, wantPrefix[6:17]...), append([]byte{0x05, 0x00}, b2.Bytes[17:]...)...)}),
	} {
		f := filepath.Join(dir, "bad.pem")
		os.WriteFile(f, content, 0o644)
		if _, err := ReadAuthorityPublicKey(f); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Halves of two different roots form a different key.
	f := filepath.Join(dir, "mixed.pem")
	os.WriteFile(f, enc(b1, o2), 0o644)
	if mixed, err := ReadAuthorityPublicKey(f); err != nil || mixed.Equal(a.Public()) || mixed.Equal(other.Public()) {
		t.Errorf("mixed halves: %v", err)
	}
	_ = o1

	// A 32-byte (Ed25519-only) authority key file is refused with a
	// message that says so.
	old := filepath.Join(dir, "old.key.pem")
	WriteKeyFile(old, pemAuthorityKey, make([]byte, 32))
	if _, err := ReadAuthorityKeyFile(old); err == nil || !strings.Contains(err.Error(), "before composite") {
		t.Errorf("32-byte authority key: %v", err)
	}
}

func BenchmarkStatements(b *testing.B) {
	a, _ := GenerateAuthorityKey(detRand("authority"))
	k := testCompositeKey(b, "checkpoint")
	c := Checkpoint{Space: "city-edu", Node: "uni-a", Count: 1000, Time: issued}
	cp, _ := SignCheckpoint(k, c)
	rl := RevocationList{Space: "city-edu", Serial: 1, Issued: issued}
	for i := range 1000 {
		rl.Entries = append(rl.Entries, Revocation{NodeID: "node-" + string(rune('a'+i%26)), KeyID: "s-0123456789abcdef", Revoked: issued, Reason: "rotated"})
	}
	rlData, _ := a.SignRevocations(rl)
	b.Run("checkpoint-sign", func(b *testing.B) {
		for b.Loop() {
			SignCheckpoint(k, c)
		}
	})
	b.Run("checkpoint-parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseCheckpoint(cp, k.Public()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("revocations-1000-parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := ParseRevocationList(rlData, a.Public(), "city-edu"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
