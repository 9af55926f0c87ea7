package evidence_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/store"
)

const testSpace = "test"

var cpTime = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// rowsOf reads every row of db's chain.
func rowsOf(t *testing.T, db *store.DB) []evidence.Row {
	t.Helper()
	var out []evidence.Row
	for r, err := range evidence.DBRows(context.Background(), db.R) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// headAt returns the hash after entry n of db's chain.
func headAt(t *testing.T, db *store.DB, n int64) []byte {
	t.Helper()
	if n == 0 {
		return make([]byte, sha256.Size)
	}
	var h []byte
	if err := db.R.QueryRow(`SELECT hash FROM evidence WHERE seq = ?`, n).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// rechain rewrites db's chain the way an attacker who wants a valid-looking
// log would: mutate the rows, then renumber them from 1 and recompute every
// entry's seq, prev_hash and hash, and the kind column beside it.
func rechain(t *testing.T, db *store.DB, mutate func([]evidence.Row) []evidence.Row) {
	t.Helper()
	rows := mutate(rowsOf(t, db))
	prev := make([]byte, sha256.Size)
	err := db.Write(context.Background(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM evidence`); err != nil {
			return err
		}
		for i, r := range rows {
			var e evidence.Entry
			if err := json.Unmarshal(r.Entry, &e); err != nil {
				return err
			}
			e.Seq = int64(i + 1)
			body, err := json.Marshal(e)
			if err != nil {
				return err
			}
			h := sha256.Sum256(append(append([]byte(nil), prev...), body...))
			if _, err := tx.Exec(`INSERT INTO evidence(seq, entry, prev_hash, hash, kind) VALUES (?, ?, ?, ?, ?)`, e.Seq, body, prev, h[:], e.Kind); err != nil {
				return err
			}
			prev = h[:]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCheckpoints(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(t *testing.T, db *store.DB)
		at      []int64               // checkpoints taken from the intact chain
		extra   []evidence.Checkpoint // checkpoints added as they are
		wantSeq int64                 // 0: intact
		plainOK bool                  // Verify alone passes the tampered chain
	}{
		{name: "intact", at: []int64{4, 8, 10}},
		{name: "intact, checkpoint of the empty chain", at: []int64{0, 10}},
		{name: "intact, no checkpoints"},
		{name: "intact, duplicate checkpoints", at: []int64{4, 4, 10, 10}},
		{name: "tail not covered", at: []int64{4, 8},
			tamper: func(t *testing.T, db *store.DB) { db.W.Exec(`DELETE FROM evidence WHERE seq > 9`) }, plainOK: true},
		{name: "head truncated and re-chained", at: []int64{4, 8}, wantSeq: 1, plainOK: true,
			tamper: func(t *testing.T, db *store.DB) {
				rechain(t, db, func(r []evidence.Row) []evidence.Row { return r[2:] })
			}},
		{name: "middle deleted and re-chained", at: []int64{4, 8}, wantSeq: 5, plainOK: true,
			tamper: func(t *testing.T, db *store.DB) {
				rechain(t, db, func(r []evidence.Row) []evidence.Row { return append(r[:5:5], r[6:]...) })
			}},
		{name: "tail truncated under a checkpoint", at: []int64{4, 10}, wantSeq: 5, plainOK: true,
			tamper: func(t *testing.T, db *store.DB) { db.W.Exec(`DELETE FROM evidence WHERE seq > 7`) }},
		{name: "everything deleted", at: []int64{4}, wantSeq: 1, plainOK: true,
			tamper: func(t *testing.T, db *store.DB) { db.W.Exec(`DELETE FROM evidence`) }},
		{name: "edited entry breaks its link first", at: []int64{4, 8}, wantSeq: 6,
			tamper: func(t *testing.T, db *store.DB) {
				db.W.Exec(`UPDATE evidence SET entry = replace(entry, '"permit"', '"deny"') WHERE seq = 6`)
			}},
		{name: "entry of another node", wantSeq: 3,
			tamper: func(t *testing.T, db *store.DB) {
				rechain(t, db, func(r []evidence.Row) []evidence.Row {
					r[2].Entry = bytes.Replace(r[2].Entry, []byte(`"uni-a"`), []byte(`"uni-b"`), 1)
					return r
				})
			}},
		{name: "wrong head", at: []int64{4}, wantSeq: 5,
			extra: []evidence.Checkpoint{{Count: 8, Head: make([]byte, 32)}}},
		{name: "wrong head of the empty chain", wantSeq: 1,
			extra: []evidence.Checkpoint{{Count: 0, Head: []byte{1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := chain(t, 10)
			cps := append([]evidence.Checkpoint(nil), tc.extra...)
			for _, n := range tc.at {
				cps = append(cps, evidence.Checkpoint{Count: n, Head: headAt(t, db, n)})
			}
			if tc.tamper != nil {
				tc.tamper(t, db)
			}
			_, err := evidence.Verify(context.Background(), db.R)
			if plainOK := err == nil; tc.tamper != nil && plainOK != tc.plainOK {
				t.Errorf("Verify: %v; want passing %v", err, tc.plainOK)
			}
			head, err := evidence.VerifyCheckpoints(evidence.DBRows(context.Background(), db.R), cps)
			var be *evidence.BrokenError
			switch {
			case tc.wantSeq == 0 && err != nil:
				t.Fatalf("got %v, want intact", err)
			case tc.wantSeq == 0:
				if head.Node != "uni-a" || head.Count == 0 {
					t.Errorf("head %+v, want uni-a's", head)
				}
			case !errors.As(err, &be) || be.Seq != tc.wantSeq:
				t.Fatalf("got %v, want broken at entry %d", err, tc.wantSeq)
			default:
				t.Logf("%v", err)
			}
		})
	}
}

// member is a node with a credential from an authority, signing
// checkpoints.
type member struct {
	ak   *crypto.AuthorityKey
	root crypto.AuthorityPublicKey
	ck   *crypto.CompositeKey
	cred string
}

func newMember(t *testing.T, node string) *member {
	t.Helper()
	ak, err := crypto.GenerateAuthorityKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return issueMember(t, ak, node)
}

func issueMember(t *testing.T, ak *crypto.AuthorityKey, node string) *member {
	t.Helper()
	kem, err := crypto.GenerateKEMKey(crypto.DefaultSuite, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := crypto.GenerateSigningKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := crypto.GenerateCompositeKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issued := cpTime.Add(-24 * time.Hour)
	cred, err := ak.Issue(crypto.Credential{
		Space: testSpace, NodeID: node, Institution: "Institution " + node, Role: crypto.RoleUniversity,
		KEMKeys:        []crypto.KEMKeyInfo{{ID: kem.Public().KeyID(), Suite: kem.Public().Suite(), Key: kem.Public().Bytes()}},
		SigningKeys:    []crypto.SigningKeyInfo{{ID: sk.Public().KeyID(), Key: sk.Public().Bytes()}},
		CheckpointKeys: []crypto.CompositeKeyInfo{{ID: ck.Public().KeyID(), Key: ck.Public().Bytes()}},
		IssuedAt:       issued, Expires: issued.Add(365 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &member{ak: ak, root: ak.Public(), ck: ck, cred: cred}
}

// checkpoint signs the head after entry n of db's chain.
func (m *member) checkpoint(t *testing.T, db *store.DB, node string, n int64) evidence.Signed {
	t.Helper()
	c := crypto.Checkpoint{Space: testSpace, Node: node, Count: uint64(n), Time: cpTime.Add(time.Duration(n) * time.Second)}
	copy(c.Head[:], headAt(t, db, n))
	data, err := crypto.SignCheckpoint(m.ck, c)
	if err != nil {
		t.Fatal(err)
	}
	return evidence.Signed{Node: node, Count: n, Head: c.Head[:], TimeMS: c.Time.UnixMilli(), Data: data, Credential: m.cred}
}

func store1(t *testing.T, db *store.DB, s evidence.Signed) {
	t.Helper()
	if _, err := db.W.Exec(`INSERT INTO checkpoints(node, count, head, time_ms, data, credential) VALUES (?, ?, ?, ?, ?, ?)`,
		s.Node, s.Count, s.Head, s.TimeMS, s.Data, s.Credential); err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticate(t *testing.T) {
	db := chain(t, 5)
	m := newMember(t, "uni-a")
	good := m.checkpoint(t, db, "uni-a", 5)
	c, err := good.Authenticate(m.root, testSpace)
	if err != nil || c.Count != 5 || !bytes.Equal(c.Head, headAt(t, db, 5)) {
		t.Fatalf("got %+v, %v; want the checkpoint at 5", c, err)
	}
	if got := evidence.CredentialSpace(m.cred); got != testSpace {
		t.Errorf("CredentialSpace = %q, want %q", got, testSpace)
	}
	other := newMember(t, "uni-a") // the same node id under another authority
	peer := issueMember(t, m.ak, "uni-b")
	for _, tc := range []struct {
		name   string
		mutate func(s *evidence.Signed)
		root   crypto.AuthorityPublicKey
		space  string
	}{
		{name: "flipped signature byte", mutate: func(s *evidence.Signed) { s.Data[len(s.Data)-5] ^= 1 }},
		{name: "flipped count byte", mutate: func(s *evidence.Signed) { s.Data[len(s.Data)-3373-8-32-1] ^= 1 }},
		{name: "stored count differs", mutate: func(s *evidence.Signed) { s.Count = 4 }},
		{name: "stored head differs", mutate: func(s *evidence.Signed) { s.Head = make([]byte, 32) }},
		{name: "stored time differs", mutate: func(s *evidence.Signed) { s.TimeMS++ }},
		{name: "another authority", root: other.root},
		{name: "another space", space: "elsewhere"},
		{name: "another node's credential", mutate: func(s *evidence.Signed) { s.Credential = peer.cred }},
		{name: "credential not yet valid", mutate: func(s *evidence.Signed) {
			*s = m.checkpoint(t, db, "uni-a", 5)
			s.TimeMS = cpTime.Add(-48 * time.Hour).UnixMilli()
		}},
		{name: "stored node differs", mutate: func(s *evidence.Signed) { s.Node = "uni-b" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Data = bytes.Clone(good.Data)
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			root, space := m.root, testSpace
			if !tc.root.IsZero() {
				root = tc.root
			}
			if tc.space != "" {
				space = tc.space
			}
			if c, err := s.Authenticate(root, space); err == nil {
				t.Fatalf("got %+v, want an error", c)
			} else {
				t.Logf("%v", err)
			}
		})
	}
}

func mustAuthority(t *testing.T) *crypto.AuthorityKey {
	t.Helper()
	ak, err := crypto.GenerateAuthorityKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ak
}

func TestExportRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := chain(t, 12)
	m := newMember(t, "uni-a")
	for _, n := range []int64{5, 12} {
		store1(t, db, m.checkpoint(t, db, "uni-a", n))
	}
	// A peer's checkpoint in the same table is not part of uni-a's export.
	peer := issueMember(t, mustAuthority(t), "uni-b")
	store1(t, db, peer.checkpoint(t, db, "uni-b", 3))

	var buf bytes.Buffer
	if err := checkpoint.Export(ctx, db.R, "uni-a", &buf); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1+12+2 {
		t.Errorf("export has %d lines, want 15:\n%s", strings.Count(buf.String(), "\n"), buf.String())
	}
	x, err := evidence.NewExportReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	h := x.Header
	if h.Node != "uni-a" || h.Space != testSpace || h.Entries != 12 || h.Checkpoints != 2 || h.Version != 1 {
		t.Errorf("header %+v", h)
	}
	want := rowsOf(t, db)
	var got []evidence.Row
	for r, err := range x.Rows() {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Entry, want[i].Entry) ||
			!bytes.Equal(got[i].PrevHash, want[i].PrevHash) || !bytes.Equal(got[i].Hash, want[i].Hash) {
			t.Errorf("row %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	signed, err := x.Checkpoints()
	if err != nil || len(signed) != 2 {
		t.Fatalf("checkpoints: %d, %v; want 2", len(signed), err)
	}
	var cps []evidence.Checkpoint
	for _, s := range signed {
		c, err := s.Authenticate(m.root, h.Space)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, c)
	}
	// Checkpoints first, entries second: read the file again.
	x, _ = evidence.NewExportReader(bytes.NewReader(buf.Bytes()))
	head, err := evidence.VerifyCheckpoints(x.Rows(), cps)
	if err != nil || head.Count != 12 || !bytes.Equal(head.Hash, headAt(t, db, 12)) {
		t.Fatalf("verify export: %+v, %v", head, err)
	}
	// Checkpoints without reading the entries first.
	x, _ = evidence.NewExportReader(bytes.NewReader(buf.Bytes()))
	if signed, err := x.Checkpoints(); err != nil || len(signed) != 2 {
		t.Errorf("checkpoints without rows: %d, %v", len(signed), err)
	}
}

func TestExportReaderRejects(t *testing.T) {
	hdr := `{"type":"header","format":"eduspace-evidence-export","version":1,"node":"uni-a","exported":"2026-11-23T09:00:00Z","entries":0,"checkpoints":0}` + "\n"
	cp := `{"type":"checkpoint","node":"uni-a","count":1,"head":"00","time_ms":1,"data":"AA==","credential":"x.y.z"}` + "\n"
	entry := `{"type":"entry","seq":1,"prev_hash":"00","hash":"00","entry":{"seq":1}}` + "\n"
	for _, tc := range []struct{ name, file string }{
		{"empty", ""},
		{"not JSON", "SQLite format 3\x00"},
		{"no header", entry},
		{"other version", strings.Replace(hdr, `"version":1`, `"version":2`, 1)},
		{"no node", strings.Replace(hdr, `"node":"uni-a"`, `"node":""`, 1)},
		{"entry after checkpoint", hdr + cp + entry},
		{"bad hex", hdr + strings.Replace(entry, `"hash":"00"`, `"hash":"zz"`, 1)},
		{"unknown line", hdr + `{"type":"gossip"}` + "\n"},
		{"truncated line", hdr + entry[:30]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := evidence.NewExportReader(strings.NewReader(tc.file))
			if err == nil {
				_, err = x.Checkpoints()
			}
			if err == nil {
				t.Fatal("read without an error")
			}
			t.Logf("%v", err)
		})
	}
}
