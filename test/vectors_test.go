package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/envelope"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/nodetest"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
	"github.com/eduspace/eduspace/test/wait"
)

// Offsets into an envelope (crypto/ENVELOPE.md §1).
const (
	offSuite   = 5
	offSeq     = 24
	offExpires = 40
	headerFix  = 52
	sigLen     = 64
)

// Indexes of the header's len8 strings.
const (
	strSender = iota
	strSenderKey
	strRecipient
	strRecipientKey
	strAgreement
	strPurpose
	strRecordType
	strLevel
	strLegalBasis // version 2 only
	strStandard   // version 2 only
)

// strOffset is where the content of header string i starts in envelope b.
func strOffset(b []byte, i int) int {
	off := headerFix
	for range i {
		off += 1 + int(b[off])
	}
	return off + 1
}

// headerEnd is the offset of the first byte after the header.
func headerEnd(b []byte) int {
	last := strLevel
	if b[4] == 2 {
		last = strStandard
	}
	return strOffset(b, last) + int(b[strOffset(b, last)-1])
}

// resign replaces an envelope's signature with signer's over its bytes as
// they are now (crypto/ENVELOPE.md §4), as a sender who alters its own
// envelope would.
func resign(b []byte, signer *crypto.SigningKey) []byte {
	signed := b[:len(b)-sigLen]
	label := fmt.Sprintf("eduspace envelope v%d sig", b[4])
	d := sha256.Sum256(append([]byte(label), signed...))
	return append(bytes.Clone(signed), signer.Sign(d[:])...)
}

// refusedCounts reads eduspace_envelopes_refused_total by reason.
func refusedCounts(t *testing.T, n *node.Node) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, line := range strings.Split(nodetest.Scrape(t, n), "\n") {
		rest, ok := strings.CutPrefix(line, `eduspace_envelopes_refused_total{reason="`)
		if !ok {
			continue
		}
		reason, count, _ := strings.Cut(rest, `"} `)
		var c int
		fmt.Sscan(count, &c)
		if c > 0 {
			got[reason] = c
		}
	}
	return got
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestReceivePathRefusals publishes, on a running node's deliver subject,
// one envelope for each way an envelope can be wrong, each made with the
// space's real keys: every one is refused with its reason, counted in
// eduspace_envelopes_refused_total, recorded in the evidence log and never
// stored, and the consumer goes on to store the valid envelope after them.
func TestReceivePathRefusals(t *testing.T) {
	ctx := context.Background()
	s := newSpace(t)
	for _, id := range []string{"uni-a", "uni-b", "uni-c"} {
		s.prepare(id, crypto.DefaultSuite, s.now)
	}
	a := s.open("uni-a", node.Env{})
	b := s.open("uni-b", node.Env{})
	s.open("uni-c", node.Env{})
	ag := gradeAgreement("a-to-b", "uni-a", "uni-b", s.now)
	// An agreement that was in force until yesterday, for a backdated
	// envelope.
	old := gradeAgreement("a-to-b-old", "uni-a", "uni-b", s.now)
	old.ValidFrom, old.ValidUntil = s.now.AddDate(0, 0, -40), s.now.AddDate(0, 0, -1)
	// An agreement that lists a free-text field, for values the standard
	// raises above its level.
	comments := gradeAgreement("a-to-b-comments", "uni-a", "uni-b", s.now)
	comments.RecordTypes = map[string][]string{"course_grade": {"student_id", "course_code", "score", "comment"}}
	// An L3 agreement for students' birth dates, which a minor's raises
	// to L4 (C3).
	students := gradeAgreement("a-to-b-students", "uni-a", "uni-b", s.now)
	students.RecordTypes = map[string][]string{"student": {"student_id", "birth_date"}}
	for _, n := range []*node.Node{a, b} {
		for _, x := range []*policy.Agreement{ag, old, comments, students} {
			if err := n.AddAgreement(ctx, x); err != nil {
				t.Fatal(err)
			}
		}
	}
	nodeKeys := map[string]*keys.Keys{}
	for _, id := range []string{"uni-a", "uni-b", "uni-c"} {
		k, err := keys.LoadKeys(s.conf[id].DataDir)
		if err != nil {
			t.Fatal(err)
		}
		nodeKeys[id] = k
	}
	aSig, cSig := nodeKeys["uni-a"].Signing, nodeKeys["uni-c"].Signing
	bKEM, cKEM := nodeKeys["uni-b"].KEM.Public(), nodeKeys["uni-c"].KEM.Public()
	classic, err := crypto.GenerateKEMKey(crypto.SuiteX25519, nil)
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := crypto.GenerateSigningKey(nil)
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	payload := []byte(`{"type":"course_grade","student_id":"tk_0123456789abcdefghijkl","course_code":"CS101","score":91}` + "\n")
	header := func(seq uint64) crypto.Header {
		h := crypto.Header{Suite: bKEM.Suite(), Kind: crypto.KindRecords, Sender: "uni-a", SenderKeyID: aSig.Public().KeyID(),
			Recipient: "uni-b", RecipientKeyID: bKEM.KeyID(), Seq: seq, Created: now, Expires: now.Add(time.Hour),
			Agreement: ag.ID, Purpose: string(ag.Purpose), RecordType: "course_grade", Count: 1, Level: "L2"}
		rand.Read(h.ID[:])
		return h
	}
	seal := func(h crypto.Header, to *crypto.KEMPublicKey, signer *crypto.SigningKey, pt []byte) []byte {
		t.Helper()
		b, err := crypto.Seal(nil, h, to, signer, pt)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seq := uint64(1000)
	valid := func() []byte { seq++; return seal(header(seq), bKEM, aSig, payload) }
	edit := func(f func(b []byte) []byte) []byte { return f(valid()) }

	first := valid()
	cases := []struct {
		name, want string // want "" = accepted (stored, or a duplicate)
		env        []byte
	}{
		{"valid, before the attacks", "", first},
		{"garbage", envelope.RefuseMalformed, []byte("not an envelope")},
		{"truncated by one byte", envelope.RefuseMalformed, edit(func(b []byte) []byte { return b[:len(b)-1] })},
		{"truncated to the header", envelope.RefuseMalformed, edit(func(b []byte) []byte { return b[:headerEnd(b)] })},
		{"one byte after the signature", envelope.RefuseMalformed, edit(func(b []byte) []byte { return append(b, 0) })},
		{"suite downgraded to X25519 and re-signed", envelope.RefuseMalformed, edit(func(b []byte) []byte { b[offSuite+1] = 2; return resign(b, aSig) })},
		{"a receipt on the deliveries subject", envelope.RefuseMalformed, func() []byte {
			h := header(1)
			h.Kind = crypto.KindReceipt
			return seal(h, bKEM, aSig, []byte(`{}`))
		}()},
		{"recipient altered", envelope.RefuseMisaddressed, edit(func(b []byte) []byte { b[strOffset(b, strRecipient)+4] = 'c'; return b })},
		{"addressed and sealed to uni-c", envelope.RefuseMisaddressed, func() []byte {
			h := header(1)
			h.Recipient, h.RecipientKeyID = "uni-c", cKEM.KeyID()
			return seal(h, cKEM, aSig, payload)
		}()},
		{"sealed to uni-c's key, addressed to uni-b", envelope.RefuseUnknownKey, func() []byte {
			h := header(1)
			h.RecipientKeyID = cKEM.KeyID()
			return seal(h, cKEM, aSig, payload)
		}()},
		{"recipient key id altered", envelope.RefuseUnknownKey, edit(func(b []byte) []byte { b[strOffset(b, strRecipientKey)+5] ^= 1; return b })},
		{"suite mismatch: X25519 envelope naming uni-b's X-Wing key", envelope.RefuseUnknownKey, func() []byte {
			h := header(1)
			h.Suite, h.RecipientKeyID = crypto.SuiteX25519, classic.Public().KeyID()
			b := seal(h, classic.Public(), aSig, payload)
			copy(b[strOffset(b, strRecipientKey):], bKEM.KeyID())
			return resign(b, aSig)
		}()},
		{"unknown sender key id", envelope.RefuseUnknownKey, func() []byte {
			h := header(1)
			h.SenderKeyID = mallory.Public().KeyID()
			return seal(h, bKEM, mallory, payload)
		}()},
		{"unknown sender", envelope.RefuseUnknownPeer, func() []byte {
			h := header(1)
			h.Sender, h.SenderKeyID = "uni-x", mallory.Public().KeyID()
			return seal(h, bKEM, mallory, payload)
		}()},
		{"expired", envelope.RefuseExpired, func() []byte {
			h := header(1)
			h.Created, h.Expires = now.Add(-2*time.Hour), now.Add(-time.Hour)
			return seal(h, bKEM, aSig, payload)
		}()},
		{"sequence altered", envelope.RefuseSignature, edit(func(b []byte) []byte { b[offSeq+7] ^= 0x40; return b })},
		{"expiry extended", envelope.RefuseSignature, edit(func(b []byte) []byte { b[offExpires+4]++; return b })},
		{"agreement altered", envelope.RefuseSignature, edit(func(b []byte) []byte { b[strOffset(b, strAgreement)] = 'x'; return b })},
		{"level altered", envelope.RefuseSignature, edit(func(b []byte) []byte { b[strOffset(b, strLevel)+1] = '1'; return b })},
		{"ciphertext bit flipped", envelope.RefuseSignature, edit(func(b []byte) []byte { b[len(b)-sigLen-20] ^= 1; return b })},
		{"signature bit flipped", envelope.RefuseSignature, edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b })},
		{"signed by uni-c under uni-a's key id", envelope.RefuseSignature, edit(func(b []byte) []byte { return resign(b, cSig) })},
		{"sequence altered and re-signed (header is associated data)", envelope.RefuseDecrypt, edit(func(b []byte) []byte { b[offSeq+7] ^= 0x40; return resign(b, aSig) })},
		{"ciphertext bit flipped and re-signed", envelope.RefuseDecrypt, edit(func(b []byte) []byte { b[len(b)-sigLen-20] ^= 1; return resign(b, aSig) })},
		{"agreement unknown", envelope.RefuseNoAgreement, func() []byte {
			h := header(1)
			h.Agreement = "no-such-agreement"
			return seal(h, bKEM, aSig, payload)
		}()},
		{"record type outside the agreement", envelope.RefuseNoAgreement, func() []byte {
			h := header(1)
			h.RecordType = "student"
			return seal(h, bKEM, aSig, []byte(`{"type":"student","student_id":"tk_x"}`+"\n"))
		}()},
		{"header counts two records, payload holds one", envelope.RefuseContent, func() []byte {
			seq++
			h := header(seq)
			h.Count = 2
			return seal(h, bKEM, aSig, payload)
		}()},
		{"a field outside the record type", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte(`{"type":"course_grade","student_id":"tk_x","salary":1}`+"\n"))
		}()},
		// A member's attacks on the delivery path: none may hold up the
		// valid envelope after them.
		{"sender not a valid node id (nothing to look up), signed by nobody's key", envelope.RefuseUnknownPeer, func() []byte {
			h := header(1)
			h.Sender, h.SenderKeyID = "x y", mallory.Public().KeyID()
			return seal(h, bKEM, mallory, payload)
		}()},
		{"sequence number 2^63", envelope.RefuseMalformed, seal(header(1<<63), bKEM, aSig, payload)},
		{"sequence number 2^64-1", envelope.RefuseMalformed, seal(header(math.MaxUint64), bKEM, aSig, payload)},
		{"backdated into an agreement that has expired since", envelope.RefuseNoAgreement, func() []byte {
			seq++
			h := header(seq)
			h.Agreement = old.ID
			h.Created, h.Expires = now.AddDate(0, 0, -29), now.Add(time.Hour)
			return seal(h, bKEM, aSig, payload)
		}()},
		{"a student id in clear where the agreement tokenises it", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte(`{"type":"course_grade","student_id":"20240001","course_code":"CS101","score":91}`+"\n"))
		}()},
		{"a field the record type has and the agreement does not list", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte(`{"type":"course_grade","student_id":"tk_x","course_code":"CS101","course_name":"Data structures"}`+"\n"))
		}()},
		// Records the receiver's readers would read otherwise, or not at
		// all, so that they could be neither exported nor erased.
		{"a second type member naming another type", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte(`{"type":"course_grade","student_id":"tk_x","course_code":"CS101","type":"discipline"}`+"\n"))
		}()},
		{"a line longer than a reader takes", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte(`{"type":"course_grade","student_id":"tk_x","course_code":"`+strings.Repeat("C", schema.MaxLineBytes)+`"}`+"\n"))
		}()},
		{"invalid UTF-8 behind an escape", envelope.RefuseContent, func() []byte {
			seq++
			return seal(header(seq), bKEM, aSig, []byte("{\"type\":\"course_grade\",\"student_id\":\"tk_\\\"x\xff\",\"course_code\":\"CS101\"}\n"))
		}()},
		// Values the standard raises above the agreement's level, which
		// the sender's header does not show.
		{"a comment naming a diagnosis (L4 under an L3 agreement)", envelope.RefuseContent, func() []byte {
			seq++
			h := header(seq)
			h.Agreement = comments.ID
			return seal(h, bKEM, aSig, []byte(`{"type":"course_grade","student_id":"tk_x","course_code":"CS101","comment":"diagnosis: depression"}`+"\n"))
		}()},
		{"a ten-year-old's birth date (a minor: L4) under an L3 agreement", envelope.RefuseContent, func() []byte {
			seq++
			h := header(seq)
			h.Agreement, h.RecordType, h.Level = students.ID, "student", "L3"
			return seal(h, bKEM, aSig, []byte(`{"type":"student","student_id":"tk_0123456789abcdefghijkl","birth_date":"`+
				now.AddDate(-10, 0, 0).Format(time.DateOnly)+`"}`+"\n"))
		}()},
		{"a student id in clear in a shape the receiver saw shorter before", envelope.RefuseContent, func() []byte {
			seq++
			h := header(seq)
			h.Count = 4
			return seal(h, bKEM, aSig, []byte(`{"type":"course_grade","course_code":"CS101","student_id":"tk_0123456789abcdefghijkl","score":1}`+"\n"+
				`{"type":"course_grade","course_code":"CS101","score":1}`+"\n"+
				`{"type":"course_grade","course_code":"CS101","score":1,"student_id":"tk_0123456789abcdefghijkl"}`+"\n"+
				`{"type":"course_grade","course_code":"CS101","score":1,"student_id":"20240001"}`+"\n"))
		}()},
		{"the first envelope again (a duplicate, acknowledged)", "", first},
		{"the first envelope's sequence under a new id", envelope.RefuseReplayed, seal(header(1001), bKEM, aSig, payload)},
	}
	last := valid()
	cases = append(cases, struct {
		name, want string
		env        []byte
	}{"valid, after the attacks", "", last})

	js := s.js()
	subject := bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a")
	want := map[string]int{}
	for _, c := range cases {
		if _, err := js.Publish(ctx, subject, c.env); err != nil {
			t.Fatalf("%s: publish: %v", c.name, err)
		}
		if c.want != "" {
			want[c.want]++
		}
	}
	// Oversized: above the server's maximum payload the envelope never
	// reaches the node (crypto refuses anything above 8 MiB in any case).
	big := make([]byte, js.Conn().MaxPayload()+1)
	if _, err := js.Publish(ctx, subject, big); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("oversized: publish gave %v, want %v", err, nats.ErrMaxPayload)
	}

	wait.Until(t, 20*time.Second, "uni-b to store the two valid envelopes", func() bool {
		st, err := b.Status(ctx)
		return err == nil && st.Received == 2
	})
	wait.Until(t, 20*time.Second, "every refusal counted", func() bool { return sameCounts(refusedCounts(t, b), want) })
	if got := refusedCounts(t, b); !sameCounts(got, want) {
		t.Errorf("refusals by reason:\ngot  %v\nwant %v", got, want)
	}
	if got := refusals(t, s.conf["uni-b"].DataDir); !sameCounts(got, want) {
		t.Errorf("evidence log refusals by reason:\ngot  %v\nwant %v", got, want)
	}
	stored := received(t, s.conf["uni-b"].DataDir)
	if len(stored) != 2 {
		t.Fatalf("uni-b stored %d records, want 2: %v", len(stored), stored)
	}
	for _, r := range stored {
		if r["course_code"] != "CS101" || r["salary"] != nil {
			t.Errorf("stored record %v is not the valid payload", r)
		}
	}
}

// vecFile is a crypto/testdata/*.vec vector (crypto/ENVELOPE.md §8).
type vecFile struct {
	name, expect, description string
	suite                     crypto.SuiteID
	recipient, sender         []byte // recipient KEM private key, sender Ed25519 seed or SM2 d
	senderSM2                 bool   // sender-algorithm: SM2
	envelope                  []byte
}

func readVectors(t *testing.T) []vecFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(moduleRoot(t), "crypto", "testdata", "*.vec"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no vectors in crypto/testdata: %v", err)
	}
	var vs []vecFile
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		head, body, ok := bytes.Cut(data, []byte("\n\n"))
		if !ok {
			t.Fatalf("%s: no blank line", p)
		}
		v := vecFile{name: strings.TrimSuffix(filepath.Base(p), ".vec")}
		sc := bufio.NewScanner(bytes.NewReader(head))
		for sc.Scan() {
			key, val, _ := strings.Cut(sc.Text(), ": ")
			switch key {
			case "description":
				v.description = val
			case "expect":
				v.expect = val
			case "suite":
				v.suite, err = crypto.ParseSuite(val)
			case "recipient-key":
				v.recipient, err = hex.DecodeString(val)
			case "sender-key":
				v.sender, err = hex.DecodeString(val)
			case "sender-algorithm":
				v.senderSM2 = val == "SM2"
			}
			if err != nil {
				t.Fatalf("%s: %s: %v", p, key, err)
			}
		}
		if v.envelope, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", "")); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		vs = append(vs, v)
	}
	return vs
}

// vectorRefusal is the refusal each crypto vector must meet at a node that
// holds the vectors' keys. The crypto outcome maps to the node's reason;
// vectors whose envelope is intact (success) or fails only at opening
// (decrypt, suite) are refused for want of an agreement, because a node
// checks the agreement before it opens anything and the vectors' purpose
// is not in the policy vocabulary, so no agreement can cover them; a
// vector sealed to a key the node does not hold is an unknown key.
var vectorRefusal = map[string]string{
	"too-large": envelope.RefuseMalformed,
	"malformed": envelope.RefuseMalformed,
	"version":   envelope.RefuseMalformed,
	"suite":     envelope.RefuseNoAgreement,
	"signature": envelope.RefuseSignature,
	"decrypt":   envelope.RefuseNoAgreement,
	"success":   envelope.RefuseNoAgreement,
}

var vectorRefusalByName = map[string]string{
	"wrong_recipient": envelope.RefuseUnknownKey,
	"suite_255":       envelope.RefuseMalformed, // an unknown suite does not parse
}

// TestVectorsAtNode runs every crypto/testdata vector through a running
// node's receive path: a node uni-b holding the three vector recipient keys
// (as three key generations), a sender uni-a whose credential lists the
// vector sender keys (Ed25519 and SM2), and the node's clock at the
// vectors' time.
func TestVectorsAtNode(t *testing.T) {
	ctx := context.Background()
	vs := readVectors(t)
	s := newSpace(t)
	vecTime := time.Date(2026, 3, 1, 8, 0, 1, 0, time.UTC)
	start := time.Now()
	clock := func() time.Time { return vecTime.Add(time.Since(start)) }

	// uni-b's generation 1 holds the X25519 vector key, generation 2 the
	// X-Wing one, generation 3 the GM/T one (node/keys/KEYS.md).
	nd := filepath.Join(s.dir, "uni-b")
	k, err := keys.InitKeys(nd, "uni-b", crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	var signer, signerSM2 *crypto.SigningKey
	kems := map[crypto.SuiteID]*crypto.KEMPrivateKey{}
	for _, v := range vs {
		if v.name == "sm2_ok" {
			if kems[v.suite], err = crypto.ParseKEMPrivateKey(v.suite, v.recipient); err != nil {
				t.Fatal(err)
			}
			if signerSM2, err = crypto.ParseSM2SigningKey(v.sender); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if v.name != "xwing_ok" && v.name != "x25519_ok" {
			continue
		}
		if kems[v.suite], err = crypto.ParseKEMPrivateKey(v.suite, v.recipient); err != nil {
			t.Fatal(err)
		}
		sk, err := crypto.ParseSigningKey(v.sender)
		if err != nil {
			t.Fatal(err)
		}
		if signer != nil && !signer.Equal(sk) {
			t.Fatal("the valid vectors have different sender keys")
		}
		signer = sk
	}
	if len(kems) != 3 || signer == nil || signerSM2 == nil {
		t.Fatal("xwing_ok, x25519_ok and sm2_ok vectors not found")
	}
	if err := crypto.WriteKEMKeyFile(filepath.Join(nd, "keys", "kem.pem"), kems[crypto.SuiteX25519]); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(nd, "keys", "2"), 0o700)
	if err := crypto.WriteKEMKeyFile(filepath.Join(nd, "keys", "2", "kem.pem"), kems[crypto.SuiteXWing]); err != nil {
		t.Fatal(err)
	}
	if err := crypto.WriteSigningKeyFile(filepath.Join(nd, "keys", "2", "signing.pem"), k.Signing); err != nil {
		t.Fatal(err)
	}
	if err := crypto.WriteCompositeKeyFile(filepath.Join(nd, "keys", "2", "checkpoint.pem"), k.Checkpoint); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(nd, "keys", "3"), 0o700)
	for name, write := range map[string]func(string) error{
		"kem.pem":        func(p string) error { return crypto.WriteKEMKeyFile(p, kems[crypto.SuiteSM2]) },
		"signing.pem":    func(p string) error { return crypto.WriteSigningKeyFile(p, k.Signing) },
		"checkpoint.pem": func(p string) error { return crypto.WriteCompositeKeyFile(p, k.Checkpoint) },
	} {
		if err := write(filepath.Join(nd, "keys", "3", name)); err != nil {
			t.Fatal(err)
		}
	}
	kemInfo := func(p *crypto.KEMPublicKey) crypto.KEMKeyInfo {
		return crypto.KEMKeyInfo{ID: p.KeyID(), Suite: p.Suite(), Key: p.Bytes()}
	}
	sigInfo := func(v crypto.VerifyKey) crypto.SigningKeyInfo {
		return crypto.SigningKeyInfo{ID: v.KeyID(), Key: v.Bytes()}
	}
	ckInfo := crypto.CompositeKeyInfo{ID: k.Checkpoint.Public().KeyID(), Key: k.Checkpoint.Public().Bytes()}
	issue := func(c crypto.Credential) string {
		t.Helper()
		c.Space, c.Institution, c.Role = space, "Institution "+c.NodeID, crypto.RoleUniversity
		c.IssuedAt, c.Expires = clock(), clock().Add(time.Hour)
		tok, err := s.ak.Issue(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokB := issue(crypto.Credential{NodeID: "uni-b",
		KEMKeys: []crypto.KEMKeyInfo{kemInfo(kems[crypto.SuiteX25519].Public()), kemInfo(kems[crypto.SuiteXWing].Public()),
			kemInfo(kems[crypto.SuiteSM2].Public())},
		SigningKeys: []crypto.SigningKeyInfo{sigInfo(k.Signing.Public())}, CheckpointKeys: []crypto.CompositeKeyInfo{ckInfo}})
	if err := os.WriteFile(filepath.Join(nd, "credential.jwt"), []byte(tokB), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.Space, cfg.DataDir = "uni-b", space, nd
	cfg.AuthorityKey = filepath.Join(s.dir, "authority", "authority.pub.pem")
	cfg.NATS.URL = s.emb.ClientURL()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Suite = crypto.SuiteX25519.String()
	s.conf["uni-b"] = cfg
	b := s.open("uni-b", node.Env{Now: clock})

	// uni-a is a member whose credential lists the vector sender key; it
	// need not run.
	senderKEM, _ := crypto.GenerateKEMKey(crypto.SuiteX25519, nil)
	tokA := issue(crypto.Credential{NodeID: "uni-a", KEMKeys: []crypto.KEMKeyInfo{kemInfo(senderKEM.Public())},
		SigningKeys: []crypto.SigningKeyInfo{sigInfo(signer.Public()), sigInfo(signerSM2.Public())}})
	js := s.js()
	reg, err := js.KeyValue(ctx, bus.Layout{Space: space}.RegistryBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Put(ctx, "uni-a", []byte(tokA)); err != nil {
		t.Fatal(err)
	}

	subject := bus.Layout{Space: space}.DeliverSubject("uni-b", "uni-a")
	want := map[string]int{}
	for _, v := range vs {
		reason, ok := vectorRefusalByName[v.name]
		if !ok {
			reason, ok = vectorRefusal[v.expect]
		}
		if !ok {
			t.Fatalf("%s: no node outcome for expect %q", v.name, v.expect)
		}
		want[reason]++
		if _, err := js.Publish(ctx, subject, v.envelope); err != nil {
			t.Fatalf("%s: publish: %v", v.name, err)
		}
	}
	wait.Until(t, 20*time.Second, fmt.Sprintf("%d vectors refused at uni-b", len(vs)), func() bool { return sameCounts(refusedCounts(t, b), want) })
	if got := refusals(t, nd); !sameCounts(got, want) {
		t.Errorf("evidence log refusals by reason:\ngot  %v\nwant %v", got, want)
	}
	if st, err := b.Status(ctx); err != nil || st.Received != 0 {
		t.Errorf("uni-b stored %d records from the vectors, want none (%v)", st.Received, err)
	}
	b2, _ := json.Marshal(want)
	t.Logf("%d vectors, refusals %s", len(vs), b2)
}
