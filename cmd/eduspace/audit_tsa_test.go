package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/crypto/timestamp"
	"github.com/eduspace/eduspace/crypto/timestamp/tsatest"
)

// anchor has a local TSA stamp every checkpoint in the database at path,
// as a node with checkpoint.tsa_url does, and returns the tokens by count.
func anchor(t *testing.T, tsa *tsatest.TSA, path string) map[int64][]byte {
	t.Helper()
	tokens := map[int64][]byte{}
	c := &timestamp.Client{URL: tsa.URL, Trusted: tsa.CA}
	exec(t, path, func(db *sql.DB) error {
		rows, err := db.Query(`SELECT count, data FROM checkpoints`)
		if err != nil {
			return err
		}
		data := map[int64][]byte{}
		for rows.Next() {
			var n int64
			var d []byte
			if err := rows.Scan(&n, &d); err != nil {
				return err
			}
			data[n] = d
		}
		rows.Close()
		for n, d := range data {
			digest := sha256.Sum256(d)
			der, _, err := c.Stamp(context.Background(), digest[:])
			if err != nil {
				return err
			}
			tokens[n] = der
			if _, err := db.Exec(`UPDATE checkpoints SET tsa_token = ? WHERE count = ?`, der, n); err != nil {
				return err
			}
		}
		return nil
	})
	return tokens
}

// TestAuditVerifyTSA: audit verify --tsa-cert verifies the checkpoints'
// time-stamp tokens offline, from a database or an export, and reports the
// anchored time; a token of another TSA, or of another checkpoint, fails
// the verification and says so.
func TestAuditVerifyTSA(t *testing.T) {
	ctx := context.Background()
	tsa := tsatest.Start(t)
	other := tsatest.Start(t)
	s := newAuditSpace(t)
	tokens := anchor(t, tsa, s.a)
	export := filepath.Join(s.dir, "uni-a.export")
	if code, _, stderr := run(t, ctx, "audit", "export", "--db", s.a, "--out", export); code != exitOK {
		t.Fatalf("audit export: exit %d: %s", code, stderr)
	}

	// The export carries each token as base64, and openssl verifies it.
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(raw), "\n") {
		var cl struct {
			Type     string `json:"type"`
			Count    int64  `json:"count"`
			Data     []byte `json:"data"`
			TSAToken string `json:"tsa_token"`
		}
		if l == "" || json.Unmarshal([]byte(l), &cl) != nil || cl.Type != "checkpoint" {
			continue
		}
		der, err := base64.StdEncoding.DecodeString(cl.TSAToken)
		if err != nil || string(der) != string(tokens[cl.Count]) {
			t.Errorf("exported tsa_token of checkpoint %d is not the stored token (%v)", cl.Count, err)
			continue
		}
		n++
		if n == 1 {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "tok"), der, 0o600)
			os.WriteFile(filepath.Join(dir, "data"), cl.Data, 0o600)
			out := tsa.OpenSSL(t, nil, "ts", "-verify", "-data", filepath.Join(dir, "data"), "-in", filepath.Join(dir, "tok"), "-token_in", "-CAfile", tsa.CAFile)
			if !strings.Contains(string(out), "Verification: OK") {
				t.Errorf("openssl ts -verify of an exported token: %s", out)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d exported checkpoints carry a token, want 3", n)
	}

	for _, tc := range []struct {
		name     string
		tamper   func(t *testing.T)
		args     []string
		wantCode int
		want     string // in stdout, and in stderr on failure
	}{
		{name: "database", args: []string{"--db", s.a, "--authority", s.authority, "--tsa-cert", tsa.CAFile},
			wantCode: exitOK, want: "3 checkpoint(s) anchored by time-stamp tokens that verify under --tsa-cert; the latest, at entry 12, at 20"},
		{name: "export", args: []string{"--export", export, "--tsa-cert", tsa.CAFile},
			wantCode: exitOK, want: "the latest, at entry 12"},
		{name: "under the TSA's own certificate", args: []string{"--export", export, "--tsa-cert", tsa.TSACert},
			wantCode: exitOK, want: "3 checkpoint(s) anchored"},
		{name: "without --tsa-cert", args: []string{"--export", export},
			wantCode: exitOK, want: "3 checkpoint(s) carry time-stamp tokens, NOT verified (no --tsa-cert)"},
		{name: "another TSA's certificate", args: []string{"--export", export, "--tsa-cert", other.CAFile},
			wantCode: exitFailure, want: "time-stamp token does not verify: TSA certificate"},
		{name: "a token of another checkpoint", args: []string{"--db", s.a, "--tsa-cert", tsa.CAFile},
			tamper: func(t *testing.T) {
				exec(t, s.a, func(db *sql.DB) error {
					_, err := db.Exec(`UPDATE checkpoints SET tsa_token = (SELECT tsa_token FROM checkpoints WHERE count = 4) WHERE count = 8`)
					return err
				})
			},
			wantCode: exitFailure, want: "checkpoint at entry 8 from " + s.a + ": time-stamp token does not verify: it stamps another digest"},
		{name: "a token cut short", args: []string{"--db", s.a, "--tsa-cert", tsa.CAFile},
			tamper: func(t *testing.T) {
				exec(t, s.a, func(db *sql.DB) error {
					_, err := db.Exec(`UPDATE checkpoints SET tsa_token = substr(tsa_token, 1, 100) WHERE count = 12`)
					return err
				})
			},
			wantCode: exitFailure, want: "checkpoint at entry 12 from " + s.a + ": parse time-stamp token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tamper != nil {
				tc.tamper(t)
			}
			code, out, stderr := run(t, ctx, append([]string{"audit", "verify"}, tc.args...)...)
			if code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Errorf("audit verify %v: exit %d, want %d with %q in\n%s%s", tc.args, code, tc.wantCode, tc.want, out, stderr)
			}
			if tc.wantCode != exitOK && !strings.Contains(stderr, "failed to verify") {
				t.Errorf("stderr %q: want it to say checkpoints failed to verify", stderr)
			}
		})
	}
}
