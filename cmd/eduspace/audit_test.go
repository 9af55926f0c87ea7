package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/authority"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/store"
)

// auditSpace is an authority and two nodes' databases: uni-a's with a log of
// 12 entries and its checkpoints after entries 4, 8 and 12, which uni-b's
// database holds too, as if received on the space. The odd entries name a
// legal basis and a standard, the even ones neither (as entries written
// before nodes named them).
type auditSpace struct {
	dir       string
	authority string // authority.pub.pem
	a, b      string // node.db files
}

const auditEntries = 12

func newAuditSpace(t *testing.T) *auditSpace {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	s := &auditSpace{
		dir:       dir,
		authority: filepath.Join(dir, "authority", authority.PublicKeyFile),
		a:         filepath.Join(dir, "uni-a", "node.db"),
		b:         filepath.Join(dir, "uni-b", "node.db"),
	}
	if _, err := authority.Init(filepath.Join(dir, "authority")); err != nil {
		t.Fatal(err)
	}
	ak, err := authority.Load(filepath.Join(dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ks, err := keys.InitKeys(filepath.Join(dir, "uni-a"), "uni-a", crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := authority.Issue(ak, filepath.Join(dir, "uni-a", keys.RequestFile), authority.Member{
		Space: "test", Institution: "University A", Role: crypto.RoleUniversity, Valid: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.Open(ctx, s.a)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := os.MkdirAll(filepath.Dir(s.b), 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := store.Open(ctx, s.b)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	log := evidence.New("uni-a", []byte("0123456789abcdef0123456789abcdef"), func() time.Time { return now })
	for i := 1; i <= auditEntries; i++ {
		err := a.Write(ctx, func(tx *sql.Tx) error {
			e := evidence.Entry{Kind: evidence.KindDecide, Reason: "permit", Count: i,
				Subjects: []string{log.Subject("2023010001")}}
			if i%2 == 1 {
				e.LegalBasis, e.Standard = "contract", "EDU-CN-DEFAULT/1"
			}
			return log.Append(ctx, tx, e)
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%4 != 0 {
			continue
		}
		c := crypto.Checkpoint{Space: "test", Node: "uni-a", Count: uint64(i), Time: now.Add(time.Duration(i) * time.Millisecond)}
		var head []byte
		if err := a.R.QueryRow(`SELECT hash FROM evidence WHERE seq = ?`, i).Scan(&head); err != nil {
			t.Fatal(err)
		}
		copy(c.Head[:], head)
		data, err := crypto.SignCheckpoint(ks.Checkpoint, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, db := range []*store.DB{a, b} {
			if _, err := db.W.Exec(`INSERT INTO checkpoints(node, count, head, time_ms, data, credential) VALUES (?, ?, ?, ?, ?, ?)`,
				"uni-a", i, head, c.Time.UnixMilli(), data, cred); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// exec edits a database the way someone with write access to the file could.
func exec(t *testing.T, path string, fn func(db *sql.DB) error) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := fn(db); err != nil {
		t.Fatal(err)
	}
}

func execSQL(t *testing.T, path, q string) {
	t.Helper()
	exec(t, path, func(db *sql.DB) error { _, err := db.Exec(q); return err })
}

// rechain deletes the first k entries of the log in path and renumbers and
// re-chains the rest, so that the chain alone looks intact.
func rechain(t *testing.T, path string, k int) {
	t.Helper()
	exec(t, path, func(db *sql.DB) error {
		rows, err := db.Query(`SELECT entry FROM evidence WHERE seq > ? ORDER BY seq`, k)
		if err != nil {
			return err
		}
		var entries []evidence.Entry
		for rows.Next() {
			var body []byte
			var e evidence.Entry
			if err := rows.Scan(&body); err != nil {
				return err
			}
			if err := json.Unmarshal(body, &e); err != nil {
				return err
			}
			entries = append(entries, e)
		}
		rows.Close()
		if _, err := db.Exec(`DELETE FROM evidence`); err != nil {
			return err
		}
		prev := make([]byte, sha256.Size)
		for i, e := range entries {
			e.Seq = int64(i + 1)
			body, _ := json.Marshal(e)
			h := sha256.Sum256(append(append([]byte(nil), prev...), body...))
			if _, err := db.Exec(`INSERT INTO evidence(seq, entry, prev_hash, hash, kind) VALUES (?, ?, ?, ?, ?)`, e.Seq, body, prev, h[:], e.Kind); err != nil {
				return err
			}
			prev = h[:]
		}
		return nil
	})
}

func TestAuditVerify(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		tamper   func(t *testing.T, s *auditSpace)
		args     func(t *testing.T, s *auditSpace) []string
		wantCode int
		want     string // in stdout (exit 0) or stderr
	}{
		{name: "intact", wantCode: exitOK, want: "3 checked, NOT authenticated"},
		{name: "intact, authenticated", wantCode: exitOK, want: "3 checked, authenticated",
			args: func(t *testing.T, s *auditSpace) []string { return []string{"--authority", s.authority} }},
		{name: "intact, with a peer's checkpoints", wantCode: exitOK, want: "3 from " + "PEER",
			args: func(t *testing.T, s *auditSpace) []string {
				return []string{"--authority", s.authority, "--checkpoints-from", s.b}
			}},
		{name: "edited entry", wantCode: exitFailure, want: "first bad entry 5: entry does not match its hash",
			tamper: func(t *testing.T, s *auditSpace) {
				execSQL(t, s.a, `UPDATE evidence SET entry = replace(entry, '"permit"', '"deny"') WHERE seq = 5`)
			}},
		{name: "deleted entry", wantCode: exitFailure, want: "first bad entry 6: entry 6 missing",
			tamper: func(t *testing.T, s *auditSpace) { execSQL(t, s.a, `DELETE FROM evidence WHERE seq = 6`) }},
		{name: "inserted entry", wantCode: exitFailure, want: "first bad entry 7",
			tamper: func(t *testing.T, s *auditSpace) {
				execSQL(t, s.a, `UPDATE evidence SET seq = -seq WHERE seq >= 7; UPDATE evidence SET seq = 1 - seq WHERE seq < 0; INSERT INTO evidence(seq, entry, prev_hash, hash) SELECT 7, entry, prev_hash, hash FROM evidence WHERE seq = 3`)
			}},
		{name: "reordered entries", wantCode: exitFailure, want: "first bad entry 3",
			tamper: func(t *testing.T, s *auditSpace) {
				execSQL(t, s.a, `UPDATE evidence SET seq = -1 WHERE seq = 3; UPDATE evidence SET seq = 3 WHERE seq = 6; UPDATE evidence SET seq = 6 WHERE seq = -1`)
			}},
		{name: "rewritten hash", wantCode: exitFailure, want: "first bad entry 9",
			tamper: func(t *testing.T, s *auditSpace) {
				execSQL(t, s.a, `UPDATE evidence SET hash = zeroblob(32) WHERE seq = 9`)
			}},
		{name: "head truncated and re-chained", wantCode: exitFailure, want: "first bad entry 1: a checkpoint says the head after entry 4",
			tamper: func(t *testing.T, s *auditSpace) { rechain(t, s.a, 3) }},
		{name: "head truncated and re-chained, own checkpoints deleted too", wantCode: exitFailure, want: "no checkpoint of uni-a verified",
			tamper: func(t *testing.T, s *auditSpace) {
				rechain(t, s.a, 3)
				execSQL(t, s.a, `DELETE FROM checkpoints`)
			}},
		{name: "head truncated and re-chained, caught by a peer's checkpoints", wantCode: exitFailure, want: "first bad entry 1",
			tamper: func(t *testing.T, s *auditSpace) {
				rechain(t, s.a, 3)
				execSQL(t, s.a, `DELETE FROM checkpoints`)
			},
			args: func(t *testing.T, s *auditSpace) []string {
				return []string{"--authority", s.authority, "--checkpoints-from", s.b}
			}},
		{name: "rewritten and renamed to another node", wantCode: exitFailure, want: "no checkpoint of uni-z verified",
			tamper: func(t *testing.T, s *auditSpace) {
				execSQL(t, s.a, `UPDATE evidence SET entry = replace(entry, '"uni-a"', '"uni-z"')`)
				rechain(t, s.a, 0)
			},
			args: func(t *testing.T, s *auditSpace) []string {
				return []string{"--authority", s.authority, "--checkpoints-from", s.b}
			}},
		{name: "checkpoint key revoked before its use", wantCode: exitFailure, want: "3 checkpoint(s) failed to verify",
			args: func(t *testing.T, s *auditSpace) []string {
				return []string{"--authority", s.authority, "--revocations", s.revokeCheckpointKey(t)}
			}},
		{name: "tail truncated under a checkpoint", wantCode: exitFailure, want: "first bad entry 9: the chain has 10 entries, a checkpoint covers 12",
			tamper: func(t *testing.T, s *auditSpace) { execSQL(t, s.a, `DELETE FROM evidence WHERE seq > 10`) }},
		{name: "forged checkpoint, authenticated", wantCode: exitFailure, want: "1 checkpoint(s) failed to verify",
			tamper: func(t *testing.T, s *auditSpace) {
				exec(t, s.a, func(db *sql.DB) error {
					var data []byte
					if err := db.QueryRow(`SELECT data FROM checkpoints WHERE count = 8`).Scan(&data); err != nil {
						return err
					}
					data[len(data)-100] ^= 0x40
					_, err := db.Exec(`UPDATE checkpoints SET data = ? WHERE count = 8`, data)
					return err
				})
			},
			args: func(t *testing.T, s *auditSpace) []string { return []string{"--authority", s.authority} }},
		{name: "checkpoint rewritten to fit a rewritten log, authenticated", wantCode: exitFailure, want: "first bad entry 1",
			tamper: func(t *testing.T, s *auditSpace) {
				rechain(t, s.a, 3)
				exec(t, s.a, func(db *sql.DB) error {
					_, err := db.Exec(`UPDATE checkpoints SET head = (SELECT hash FROM evidence WHERE seq = checkpoints.count) WHERE count <= 8`)
					return err
				})
			},
			args: func(t *testing.T, s *auditSpace) []string { return []string{"--authority", s.authority} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAuditSpace(t)
			if tc.tamper != nil {
				tc.tamper(t, s)
			}
			args := []string{"audit", "verify", "--db", s.a}
			if tc.args != nil {
				args = append(args, tc.args(t, s)...)
			}
			code, out, stderr := run(t, ctx, args...)
			want := strings.ReplaceAll(tc.want, "PEER", s.b)
			if code != tc.wantCode || !strings.Contains(out+stderr, want) {
				t.Fatalf("exit %d, want %d and %q\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, want, out, stderr)
			}
			t.Logf("stdout:\n%sstderr:\n%s", out, stderr)
		})
	}
}

func TestAuditExport(t *testing.T) {
	ctx := context.Background()
	s := newAuditSpace(t)
	exp := filepath.Join(s.dir, "uni-a.export")
	if code, out, stderr := run(t, ctx, "audit", "export", "--db", s.a, "--out", exp); code != exitOK {
		t.Fatalf("export: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr := run(t, ctx, "audit", "verify", "--export", exp, "--authority", s.authority, "--json")
	if code != exitOK {
		t.Fatalf("verify export: exit %d\n%s%s", code, out, stderr)
	}
	var rep struct {
		Version     int    `json:"version"`
		Node        string `json:"node"`
		Intact      bool   `json:"intact"`
		Entries     int64  `json:"entries"`
		Checkpoints struct {
			Checked       int    `json:"checked"`
			Authenticated bool   `json:"authenticated"`
			Space         string `json:"space"`
			Latest        int64  `json:"latest"`
		} `json:"checkpoints"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if rep.Version != 1 || rep.Node != "uni-a" || !rep.Intact || rep.Entries != auditEntries ||
		rep.Checkpoints.Checked != 3 || !rep.Checkpoints.Authenticated || rep.Checkpoints.Space != "test" || rep.Checkpoints.Latest != 12 {
		t.Errorf("report %+v", rep)
	}
	// Every entry line carries the legal basis and the standard its entry
	// names, and none where it names none.
	data, err := os.ReadFile(exp)
	if err != nil {
		t.Fatal(err)
	}
	named := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var l struct {
			Type  string `json:"type"`
			Seq   int    `json:"seq"`
			Entry struct {
				LegalBasis *string `json:"legal_basis"`
				Standard   *string `json:"standard"`
			} `json:"entry"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("export line %s: %v", line, err)
		}
		if l.Type != "entry" {
			continue
		}
		e := l.Entry
		switch {
		case l.Seq%2 == 1 && (e.LegalBasis == nil || *e.LegalBasis != "contract" || e.Standard == nil || *e.Standard != "EDU-CN-DEFAULT/1"):
			t.Errorf("export entry %d: %s; want legal_basis contract and standard EDU-CN-DEFAULT/1", l.Seq, line)
		case l.Seq%2 == 0 && (e.LegalBasis != nil || e.Standard != nil):
			t.Errorf("export entry %d: %s; want neither legal_basis nor standard", l.Seq, line)
		case l.Seq%2 == 1:
			named++
		}
	}
	if named != auditEntries/2 {
		t.Errorf("%d export entries name a legal basis and a standard, want %d", named, auditEntries/2)
	}

	// The auditor's export keeps the checkpoints: a later rewrite of the
	// database, with its checkpoints deleted, is caught against it.
	rechain(t, s.a, 2)
	execSQL(t, s.a, `DELETE FROM checkpoints`)
	if code, _, stderr := run(t, ctx, "audit", "verify", "--db", s.a); code != exitFailure || !strings.Contains(stderr, "no checkpoint of uni-a verified") {
		t.Errorf("rewritten db alone: exit %d, want %d (nothing to check it against)\n%s", code, exitFailure, stderr)
	}
	code, out, stderr = run(t, ctx, "audit", "verify", "--db", s.a, "--authority", s.authority, "--checkpoints-from", exp)
	if code != exitFailure || !strings.Contains(stderr, "first bad entry 1") {
		t.Errorf("rewritten db against the export: exit %d\n%s%s", code, out, stderr)
	}

	// An export of the rewritten database does not verify against the peer's checkpoints.
	exp2 := filepath.Join(s.dir, "rewritten.export")
	if code, out, stderr := run(t, ctx, "audit", "export", "--db", s.a, "--out", exp2); code != exitOK {
		t.Fatalf("export: exit %d\n%s%s", code, out, stderr)
	}
	code, out, stderr = run(t, ctx, "audit", "verify", "--export", exp2, "--checkpoints-from", s.b)
	if code != exitFailure || !strings.Contains(stderr, "first bad entry 1") {
		t.Errorf("rewritten export against the peer: exit %d\n%s%s", code, out, stderr)
	}

	// An entry line cut from the export is named.
	data, err = os.ReadFile(exp)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	cut := filepath.Join(s.dir, "cut.export")
	os.WriteFile(cut, []byte(strings.Join(append(lines[:4:4], lines[5:]...), "")), 0o644) // header, entries 1..3, then 5..
	code, out, stderr = run(t, ctx, "audit", "verify", "--export", cut)
	if code != exitFailure || !strings.Contains(stderr, "first bad entry 4") {
		t.Errorf("export without entry 4: exit %d\n%s%s", code, out, stderr)
	}
}

// TestAuditDemo runs the demo, keeps its files, and audits a kept node
// database against its own and a peer's checkpoints (nodes publish a final
// checkpoint when they close); then edits it, and then rewrites it.
func TestAuditDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "space")
	if code, _, stderr := run(t, ctx, "demo", "--students", "20", "--dir", dir); code != exitOK {
		t.Fatalf("demo: exit %d\n%s", code, stderr)
	}
	db := filepath.Join(dir, "nodes/uni-beihu/node.db")
	peer := filepath.Join(dir, "nodes/edu-center/node.db")
	args := []string{"audit", "verify", "--db", db, "--authority", filepath.Join(dir, "authority/authority.pub.pem"),
		"--checkpoints-from", peer}
	code, out, stderr := run(t, ctx, append(args, "--json")...)
	if code != exitOK {
		t.Fatalf("audit of the demo's database: exit %d\n%s%s", code, out, stderr)
	}
	var rep struct {
		Entries     int64 `json:"entries"`
		Checkpoints struct {
			Latest int64 `json:"latest"`
			From   []struct {
				Count int `json:"count"`
			} `json:"from"`
		} `json:"checkpoints"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Checkpoints.From) != 2 || rep.Checkpoints.From[0].Count == 0 || rep.Checkpoints.From[1].Count == 0 ||
		rep.Checkpoints.Latest != rep.Entries {
		t.Fatalf("want checkpoints from the node and its peer, the latest covering all %d entries:\n%s", rep.Entries, out)
	}

	orig, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	execSQL(t, db, `UPDATE evidence SET entry = replace(entry, '"seq":3,', '"seq":3, ') WHERE seq = 3`)
	if code, out, stderr := run(t, ctx, args...); code != exitFailure || !strings.Contains(stderr, "first bad entry 3") {
		t.Errorf("edited demo database: exit %d\n%s%s", code, out, stderr)
	}

	// Rewritten: the first two entries gone, the rest re-chained, the
	// node's own checkpoints deleted. The peer's checkpoints catch it.
	if err := os.WriteFile(db, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	rechain(t, db, 2)
	execSQL(t, db, `DELETE FROM checkpoints`)
	if code, out, stderr := run(t, ctx, "audit", "verify", "--db", db); code != exitFailure || !strings.Contains(stderr, "no checkpoint") {
		t.Errorf("rewritten demo database alone: exit %d, want %d (nothing to check it against)\n%s%s", code, exitFailure, out, stderr)
	}
	if code, out, stderr := run(t, ctx, args...); code != exitFailure || !strings.Contains(stderr, "first bad entry 1") {
		t.Errorf("rewritten demo database against the peer: exit %d\n%s%s", code, out, stderr)
	}
}

func TestAuditUsage(t *testing.T) {
	ctx := context.Background()
	s := newAuditSpace(t)
	missing := filepath.Join(s.dir, "missing.db")
	for _, args := range [][]string{
		{"audit"},
		{"audit", "frobnicate"},
		{"audit", "verify"},
		{"audit", "verify", "--db", s.a, "--export", s.a},
		{"audit", "verify", "--db", missing},
		{"audit", "verify", "--export", missing},
		{"audit", "verify", "--db", s.a, "--checkpoints-from", missing},
		{"audit", "verify", "--db", s.a, "--authority", missing},
		{"audit", "verify", "--db", s.a, "stray"},
		{"audit", "export", "--db", s.a},
		{"audit", "export", "--out", filepath.Join(s.dir, "x")},
		{"audit", "export", "--db", missing, "--out", filepath.Join(s.dir, "x")},
	} {
		if code, _, stderr := run(t, ctx, args...); code != exitUsage {
			t.Errorf("eduspace %v: exit %d, want %d\n%s", args[1:], code, exitUsage, stderr)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing database was created: %v", err)
	}
	// Not a node database: a failure, not a usage error.
	notDB := filepath.Join(s.dir, "not.db")
	os.WriteFile(notDB, []byte("hello"), 0o644)
	if code, _, _ := run(t, ctx, "audit", "verify", "--db", notDB); code != exitFailure {
		t.Errorf("verify a non-database: exit %d, want %d", code, exitFailure)
	}
}

func TestOpenReadOnly(t *testing.T) {
	s := newAuditSpace(t)
	if _, err := store.OpenReadOnly(filepath.Join(s.dir, "nope.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	db, err := store.OpenReadOnly(s.a)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM evidence`); err == nil {
		t.Error("a read-only database took a write")
	}
	if h, err := evidence.Verify(context.Background(), db); err != nil || h.Count != auditEntries {
		t.Errorf("verify: %+v, %v", h, err)
	}
}

// revokeCheckpointKey writes a revocation list, signed by the space's
// authority, that revokes uni-a's checkpoint key an hour before its
// checkpoints, and returns its path.
func (s *auditSpace) revokeCheckpointKey(t *testing.T) string {
	t.Helper()
	ak, err := authority.Load(filepath.Join(s.dir, "authority"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.LoadKeys(filepath.Join(s.dir, "uni-a"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	data, err := ak.SignRevocations(crypto.RevocationList{Space: "test", Serial: 1, Issued: now, Entries: []crypto.Revocation{
		{NodeID: "uni-a", KeyID: ks.Checkpoint.Public().KeyID(), Revoked: now.Add(-time.Hour), Reason: "key compromised"}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, "revocations.edrl")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
