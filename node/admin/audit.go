package admin

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// actionKey keys the *action of a request under way in its context.
type actionKey struct{}

// action is what a handler tells the admin log about the request it
// serves, besides its route and outcome: ids only, never personal data.
type action struct {
	agreement string
}

// noteAgreement names the agreement the request acts on, for the log.
func noteAgreement(r *http.Request, id string) {
	if a, ok := r.Context().Value(actionKey{}).(*action); ok {
		a.agreement = id
	}
}

// statusRecorder keeps the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// audited logs every request to the /v1 API once served: method, route
// (the pattern it matched on routes, not the path as sent), the id in
// the path, the agreement a handler named, the status and how long it
// took. Requests that change something are logged at info, reads at
// debug, refused ones (401, 403) at warn. No body, query or header is
// logged: a subject report names a student in its body.
func (s *Server) audited(routes *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_, route := routes.Handler(r)
		a := &action{}
		rec := &statusRecorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), actionKey{}, a))
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK // nothing written: net/http answers 200
		}
		level := slog.LevelInfo
		switch {
		case rec.status == http.StatusUnauthorized || rec.status == http.StatusForbidden:
			level = slog.LevelWarn
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			level = slog.LevelDebug
		}
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("route", route), slog.Int("status", rec.status),
			slog.Duration("took", time.Since(start))}
		// A consent's id is the institution's to choose and may hold a
		// student number: only agreement and query ids are logged.
		if id := r.PathValue("id"); id != "" && !strings.HasPrefix(route, "POST /v1/consents/") && !strings.HasPrefix(route, "GET /v1/consents/") {
			attrs = append(attrs, slog.String("id", id))
		}
		if a.agreement != "" {
			attrs = append(attrs, slog.String("agreement", a.agreement))
		}
		s.log.LogAttrs(r.Context(), level, "admin request", attrs...)
	})
}
