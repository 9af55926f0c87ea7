package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/release"
)

// releaseRoutes serves dataset releases (node/release/RELEASES.md).
func (s *Server) releaseRoutes(api *http.ServeMux) {
	for pattern, h := range map[string]http.HandlerFunc{
		"POST /v1/releases":         s.handleRelease,
		"GET /v1/releases":          s.handleReleases,
		"GET /v1/releases/{id}":     s.handleReleaseGet,
		"GET /v1/releases/received": s.handleReleasesReceived,
		"POST /v1/provenance":       s.handleDeclare,
		"GET /v1/provenance":        s.handleProvenance,
	} {
		api.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if s.releases == nil {
				s.writeProblem(w, http.StatusNotFound, "no-releases", "This node keeps no releases", "")
				return
			}
			h(w, r)
		})
	}
}

// handleReleasesReceived lists the manifests of the releases this node
// received.
func (s *Server) handleReleasesReceived(w http.ResponseWriter, r *http.Request) {
	list, err := s.releases.Received(r.Context())
	writeList(s, w, list, err, "releases-failed", "Received releases unavailable")
}

// handleDeclare declares, on an ai_service node, which releases fed a
// model version (release.DeclareRequest).
func (s *Server) handleDeclare(w http.ResponseWriter, r *http.Request) {
	var req release.DeclareRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request",
			`Body must be {"model": "NAME", "version": "V", "releases": ["rel-…"], "use": "training"}`, "")
		return
	}
	d, err := s.releases.Declare(r.Context(), req)
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "declaration-refused", "Provenance not declared", err.Error())
		return
	}
	s.writeJSON(w, d)
}

// handleProvenance lists the provenance declarations this node made or
// received.
func (s *Server) handleProvenance(w http.ResponseWriter, r *http.Request) {
	list, err := s.releases.Declarations(r.Context())
	writeList(s, w, list, err, "provenance-failed", "Provenance unavailable")
}

// writeList answers with list as JSON, [] when there is none, or, when
// err says it could not be read, with a problem: code and title.
func writeList[T any](s *Server, w http.ResponseWriter, list []T, err error, code, title string) {
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, code, title, err.Error())
		return
	}
	if list == nil {
		list = []T{}
	}
	s.writeJSON(w, list)
}

// ReleaseLine is one line of POST /v1/releases's answer (NDJSON): progress
// as the release goes, then the release, or the refusal or error that
// ended it.
type ReleaseLine struct {
	Progress string           `json:"progress,omitempty"`
	Release  *release.Release `json:"release,omitempty"`
	Refusal  *release.Refusal `json:"refusal,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// handleRelease makes a release as the body (release.Request) asks,
// streaming its progress.
func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) {
	var req release.Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Agreement == "" {
		s.writeProblem(w, http.StatusBadRequest, "bad-request",
			`Body must be {"agreement": "ID", "types": ["student"], "k": 5, "dp": false, "epsilon": 1.0, "delta": 1e-6} (agreement required)`, "")
		return
	}
	send := startLines[ReleaseLine](w)
	rel, err := s.releases.Make(r.Context(), req, func(msg string) { send(ReleaseLine{Progress: msg}) })
	var ref *release.Refusal
	switch {
	case errors.As(err, &ref):
		send(ReleaseLine{Refusal: ref, Error: err.Error()})
	case err != nil:
		send(ReleaseLine{Error: err.Error()})
	default:
		send(ReleaseLine{Release: rel})
	}
}

func (s *Server) handleReleases(w http.ResponseWriter, r *http.Request) {
	list, err := s.releases.List(r.Context())
	writeList(s, w, list, err, "releases-failed", "Releases unavailable")
}

func (s *Server) handleReleaseGet(w http.ResponseWriter, r *http.Request) {
	rel, err := s.releases.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, release.ErrNotFound):
		s.writeProblem(w, http.StatusNotFound, "no-release", "No such release", "list them with eduspace dataset release --list")
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "releases-failed", "Release unavailable", err.Error())
	default:
		s.writeJSON(w, rel)
	}
}

// subjectReport is the subject report with the releases that included
// the subject.
type subjectReport struct {
	consent.SubjectReport
	Releases []release.Inclusion `json:"releases"`
}

// withReleases adds to rep the releases that included the subject.
func (s *Server) withReleases(ctx context.Context, rep consent.SubjectReport, subject string) (subjectReport, error) {
	out := subjectReport{SubjectReport: rep, Releases: []release.Inclusion{}}
	if s.releases == nil {
		return out, nil
	}
	in, err := s.releases.ForSubjectID(ctx, subject)
	if in != nil {
		out.Releases = in
	}
	return out, err
}
