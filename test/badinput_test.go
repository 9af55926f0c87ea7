package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/crypto"
	"github.com/eduspace/eduspace/node/share"
)

// TestIngestBadInput: each kind of bad input gets a refusal that says
// where: a record refused alone with its index and reason (the request
// answers 200 with the counts, and the command exits non-zero on them),
// or the whole input refused with its line and byte (422) when it does
// not decode. The good records around a refused one are stored once; a
// request refused whole stores nothing after the point it names.
func TestIngestBadInput(t *testing.T) {
	s := newSpace(t)
	a := s.member("uni-a", crypto.SuiteX25519)
	dir := s.conf["uni-a"].DataDir
	grade := func(i int) string {
		return fmt.Sprintf(`{"type":"course_grade","student_id":"B%04d","course_code":"CS101","score":%d}`+"\n", i, 50+i)
	}
	post := func(query, body string) (int, share.IngestResult, string) {
		t.Helper()
		resp, data := adminRaw(t, a, dir, http.MethodPost, "/v1/ingest?"+query, body)
		var res share.IngestResult
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(data, &res); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, res, string(data)
	}
	long := `{"type":"course_grade","student_id":"B9999","course_code":"` + strings.Repeat("x", 4<<20) + `"}` + "\n"
	for _, c := range []struct {
		name, query, body string
		status            int
		stored            int
		refused           map[int]string // index → reason
		detail            string         // in the problem's detail
	}{
		{name: "a 4 MiB line among good ones", body: grade(1) + long + grade(2), status: 200, stored: 2,
			refused: map[int]string{1: "syntax"}},
		{name: "a byte order mark in the middle", body: grade(3) + "\ufeff" + grade(4) + grade(5), status: 200, stored: 2,
			refused: map[int]string{1: "syntax"}},
		{name: "a truncated file", body: grade(6) + grade(7)[:30], status: 200, stored: 1,
			refused: map[int]string{1: "syntax"}},
		{name: "invalid UTF-8 past what detection reads", body: strings.Repeat(grade(8), 4000) + "{\"type\":\"course_grade\",\"student_id\":\"B\xff\"}\n",
			status: 422, detail: "line 4001"},
		{name: "an Ed-Fi file named as CSV", query: "format=csv&type=student", body: "<InterchangeStudentParent>\n</InterchangeStudentParent>\n",
			status: 200, refused: map[int]string{0: "unknown_field"}},
		{name: "NDJSON named as Ed-Fi XML", query: "format=edfi", body: grade(9), status: 200,
			refused: map[int]string{0: "syntax"}},
	} {
		status, res, body := post(c.query, c.body)
		if status != c.status {
			t.Errorf("%s: %d %s; want %d", c.name, status, body, c.status)
			continue
		}
		if status != 200 {
			if !strings.Contains(body, c.detail) {
				t.Errorf("%s: %s; want the detail to name %q", c.name, body, c.detail)
			}
			continue
		}
		if res.Stored != c.stored || res.Invalid != len(c.refused) {
			t.Errorf("%s: %+v; want %d stored, %d refused", c.name, res, c.stored, len(c.refused))
		}
		for _, e := range res.Errors {
			if c.refused[e.Index] != e.Reason {
				t.Errorf("%s: refused %+v; want %v", c.name, e, c.refused)
			}
		}
		if bytes.Contains([]byte(body), []byte("B9999")) {
			t.Errorf("%s: the answer repeats a value: %s", c.name, body)
		}
	}
}
