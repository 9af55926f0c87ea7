package test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/text/encoding/simplifiedchinese"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/share"
)

// TestIngestFormats: ingest takes what institutions export, through the
// importers classify uses: NDJSON, CSV (with its type) and Ed-Fi XML, in
// UTF-8 (with or without a byte order mark) or GBK, detected. Input that
// does not decode is refused at its line, never stored with replacement
// characters; with all_or_nothing a refused record stores nothing. A
// record type the standard does not have is refused up front, with the
// types it has.
func TestIngestFormats(t *testing.T) {
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	dir := s.conf["uni-a"].DataDir
	ingest := func(query, body string) (*http.Response, share.IngestResult) {
		t.Helper()
		var res share.IngestResult
		return adminCall(t, a, dir, http.MethodPost, "/v1/ingest?"+query, body, &res), res
	}
	csv := "student_id,name,gender\n2024001,张伟,男\n2024002,李娜,女\n"
	gbk, err := simplifiedchinese.GBK.NewEncoder().String(csv)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, query, body, format, encoding string
		stored                              int
	}{
		{"ndjson", "", `{"type":"course_grade","student_id":"2024001","course_code":"CS101","score":90}` + "\n", "ndjson", "utf-8", 1},
		{"csv", "type=student", csv, "csv", "utf-8", 2},
		{"csv with a byte order mark", "type=student", "\ufeff" + strings.Replace(csv, "2024001", "2024003", 1), "csv", "utf-8", 1},
		{"gbk csv", "type=student", strings.Replace(gbk, "2024001", "2024004", 1), "csv", "gb18030", 1},
	} {
		resp, res := ingest(c.query, c.body)
		if resp.StatusCode != http.StatusOK || res.Format != c.format || res.Encoding != c.encoding || res.Stored != c.stored || res.Invalid != 0 {
			t.Errorf("%s: %s, %+v; want %d stored as %s in %s", c.name, resp.Status, res, c.stored, c.format, c.encoding)
		}
	}
	// The GBK names arrived as names, not as replacement characters.
	var names []string
	for _, r := range heldRecords(t, dir, "student") {
		names = append(names, r["name"].(string))
	}
	if !strings.Contains(strings.Join(names, ","), "张伟") || strings.ContainsRune(strings.Join(names, ","), '\ufffd') {
		t.Errorf("held names %q: want them decoded", names)
	}
	// The institution reads what it holds through the admin API, field by
	// field as ingested (`eduspace held --type student`).
	resp, body := adminRaw(t, a, dir, http.MethodGet, "/v1/held?type=student", "")
	if resp.StatusCode != http.StatusOK || resp.Trailer.Get("Eduspace-Export-Error") != "" {
		t.Fatalf("held: %s %s", resp.Status, body)
	}
	byID := map[string]map[string]any{}
	for line := range strings.Lines(string(body)) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("held line %q: %v", line, err)
		}
		byID[fmt.Sprint(m["student_id"])] = m
	}
	if m := byID["2024004"]; m["type"] != "student" || m["name"] != "张伟" || m["gender"] != "男" || len(m) != 4 {
		t.Errorf("held record 2024004 (from the GBK CSV): %v", m)
	}
	if resp, _ := adminRaw(t, a, dir, http.MethodGet, "/v1/held?type=nope", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("held of an unknown type: %s", resp.Status)
	}

	// GBK declared as UTF-8: refused at its line, nothing stored from it.
	resp = adminCall(t, a, dir, http.MethodPost, "/v1/ingest?type=student&encoding=utf-8", strings.Replace(gbk, "2024001", "2024009", 1), nil)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("GBK read as UTF-8: %s, want 422", resp.Status)
	}
	// CSV without its type.
	if resp := adminCall(t, a, dir, http.MethodPost, "/v1/ingest", csv, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("CSV without a type: %s, want 400", resp.Status)
	}
	// A type the standard does not have: refused before reading, naming
	// the types there are, for ingest and for a stream under an agreement.
	for _, path := range []string{"/v1/ingest?type=grade", "/v1/agreements/any/stream?type=grade"} {
		tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+a.AdminAddr()+path, strings.NewReader(csv))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Title, Detail string }
		json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || p.Title != "Unknown record type" || !strings.Contains(p.Detail, "course_grade, digital_competency, discipline") {
			t.Errorf("%s: %s, %+v; want 400 naming the record types", path, resp.Status, p)
		}
	}
	// All or nothing: one bad record stores none.
	bad := "student_id,name,gender\n2024010,王芳,女\n2024011,赵强,男\n,缺学号,男\n"
	var res share.IngestResult
	adminCall(t, a, dir, http.MethodPost, "/v1/ingest?type=student&all_or_nothing=true", bad, &res)
	if res.Invalid != 1 || res.Stored != 0 || !res.NoneStored || res.ByReason["required"] != 1 {
		t.Errorf("all or nothing: %+v; want one refused (required), none stored", res)
	}

	// Ed-Fi XML, from the fixtures.
	fx := filepath.Join(moduleRoot(t), "..", "shared", "fixtures", "edfi-grand-bend", "Student.xml")
	data, err := os.ReadFile(fx)
	if err != nil {
		t.Logf("Ed-Fi fixtures absent (%v): the Ed-Fi part is skipped", err)
		return
	}
	adminCall(t, a, dir, http.MethodPost, "/v1/ingest", string(data), &res)
	if res.Format != "edfi" || res.Stored < 900 {
		t.Errorf("Ed-Fi Student.xml: %+v; want its 960 students stored", res)
	}
}

// heldRecords reads the records of type typ the node in dir holds.
func heldRecords(t *testing.T, dir, typ string) []map[string]any {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "node.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT key, body FROM records WHERE type = ?`, typ)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	dk := dataKey(t, dir)
	var out []map[string]any
	for rows.Next() {
		var key, body []byte
		if err := rows.Scan(&key, &body); err != nil {
			t.Fatal(err)
		}
		if body, err = share.OpenBody(dk, key, body); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(body, &m)
		out = append(out, m)
	}
	return out
}
