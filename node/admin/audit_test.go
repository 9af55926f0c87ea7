package admin

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestAuditedLogsActions: a request to the API is logged once served with
// its route, path id, the agreement its handler named and its status; a
// refused one at warn; never its body.
func TestAuditedLogsActions(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), token: "secret"}
	routes := http.NewServeMux()
	routes.HandleFunc("POST /v1/agreements/{id}/accept", func(w http.ResponseWriter, r *http.Request) {
		noteAgreement(r, r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	routes.HandleFunc("POST /v1/subjects/report", func(w http.ResponseWriter, r *http.Request) {})
	routes.HandleFunc("POST /v1/consents/{id}/withdraw", func(w http.ResponseWriter, r *http.Request) {})
	h := s.audited(routes, s.authorize(routes))
	for _, c := range []struct {
		path, token, body string
		want              []string
	}{
		{"/v1/agreements/credit-1/accept", "secret", "", []string{"level=INFO", `route="POST /v1/agreements/{id}/accept"`,
			"id=credit-1", "agreement=credit-1", "status=204"}},
		{"/v1/agreements/credit-1/accept", "wrong", "", []string{"level=WARN", "status=401"}},
		{"/v1/subjects/report", "secret", `{"subject":"2024000123"}`, []string{"level=INFO", "status=200"}},
		{"/v1/consents/c-2024000123/withdraw", "secret", "", []string{"level=INFO", "status=200"}},
	} {
		logs.Reset()
		r := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body))
		r.Header.Set("Authorization", "Bearer "+c.token)
		h.ServeHTTP(httptest.NewRecorder(), r)
		line := logs.String()
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s with token %q: log %q lacks %s", c.path, c.token, line, w)
			}
		}
		if strings.Contains(line, "2024000123") {
			t.Errorf("the log holds a student id from a request body: %q", line)
		}
	}
}
