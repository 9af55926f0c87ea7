package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/eduspace/eduspace/node/linkage"
	"github.com/eduspace/eduspace/policy"
)

// linkageRoutes adds the linkage API (node/linkage/LINKAGE.md) to the
// admin API.
func (s *Server) linkageRoutes(api *http.ServeMux) {
	api.HandleFunc("POST /v1/linkage/pseudonymize", s.handlePseudonymize)
	api.HandleFunc("GET /v1/linkage/status", s.handleLinkageStatus)
}

// PseudonymizeRequest is the body of POST /v1/linkage/pseudonymize.
type PseudonymizeRequest struct {
	Purpose string `json:"purpose"`
	// Epoch is a year ("2026") or a named epoch; empty: the current year.
	Epoch string `json:"epoch,omitempty"`
}

// PseudonymizeLine is one line of POST /v1/linkage/pseudonymize's answer
// (NDJSON): progress as the linkage goes, then the report, or the error
// (with the refusal's reason code when the evaluator or this node refused)
// that ended it. No line carries an identifier or a pseudonym.
type PseudonymizeLine struct {
	Progress *linkage.Progress `json:"progress,omitempty"`
	Report   *linkage.Report   `json:"report,omitempty"`
	Error    string            `json:"error,omitempty"`
	Reason   string            `json:"reason,omitempty"`
}

// handlePseudonymize links the students this node holds (their pseudonyms
// stay in the node), streaming progress and the report.
func (s *Server) handlePseudonymize(w http.ResponseWriter, r *http.Request) {
	var req PseudonymizeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", `Body must be {"purpose": "statistics", "epoch": "2026"} (epoch optional)`, err.Error())
		return
	}
	if !policy.Purpose(req.Purpose).Valid() {
		s.writeProblem(w, http.StatusBadRequest, "bad-purpose", "purpose must be one of the space's purposes, such as statistics or research", "")
		return
	}
	if req.Epoch != "" && !policy.ValidEpoch(req.Epoch) {
		s.writeProblem(w, http.StatusBadRequest, "bad-epoch",
			"epoch must be a year such as 2026, or a name of at most 32 of a-z, 0-9, '.', '_', '-' starting with a letter", "")
		return
	}
	send := startLines[PseudonymizeLine](w)
	_, rep, err := s.linkage.Pseudonyms(r.Context(), policy.Purpose(req.Purpose), req.Epoch, func(p linkage.Progress) {
		send(PseudonymizeLine{Progress: &p})
	})
	if err != nil {
		l := PseudonymizeLine{Error: err.Error()}
		var refused *linkage.RefusedError
		if errors.As(err, &refused) {
			l.Reason = refused.Reason
		}
		send(l)
		return
	}
	send(PseudonymizeLine{Report: &rep})
}

// handleLinkageStatus reports the space's linkage evaluator and key, and
// on the evaluator each member's usage.
func (s *Server) handleLinkageStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.linkage.Status(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "linkage-status-failed", "Linkage status unavailable", "")
		return
	}
	s.writeJSON(w, st)
}
