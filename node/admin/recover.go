package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/eduspace/eduspace/node/bus"
	"github.com/eduspace/eduspace/node/recovery"
)

// RecoverRequest is the body of POST /v1/recover.
type RecoverRequest struct {
	// Timeout bounds the wait for the peers' answers, as a Go duration
	// ("2m"); empty: two minutes.
	Timeout string `json:"timeout,omitempty"`
	// AllowMissing recovers with the answers that came in time.
	AllowMissing bool `json:"allow_missing,omitempty"`
	// Peers are asked besides those the node's database names.
	Peers []string `json:"peers,omitempty"`
}

// RecoverLine is one line of POST /v1/recover's answer (NDJSON): progress
// as the recovery goes, then the report or the error that ended it.
type RecoverLine struct {
	Progress string           `json:"progress,omitempty"`
	Report   *recovery.Report `json:"report,omitempty"`
	Error    string           `json:"error,omitempty"`
}

// handleRecover recovers a node restored from an older copy of its
// database (node/recovery), streaming its progress.
func (s *Server) handleRecover(w http.ResponseWriter, r *http.Request) {
	var req RecoverRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request",
			`Body must be {"timeout": "2m", "allow_missing": false, "peers": ["uni-b"]} (every field optional)`, err.Error())
		return
	}
	var timeout time.Duration
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 || d > time.Hour {
			s.writeProblem(w, http.StatusBadRequest, "bad-timeout", "timeout must be a duration between 1s and 1h, such as 2m", "")
			return
		}
		timeout = d
	}
	for _, p := range req.Peers {
		if !bus.ValidName(p) {
			s.writeProblem(w, http.StatusBadRequest, "bad-peer", "peers must be node ids", "")
			return
		}
	}
	if s.ckpt.Restored() == "" {
		s.writeProblem(w, http.StatusConflict, "not-restored", "Nothing to recover",
			"this node's database is not older than the space's record of it")
		return
	}
	send := startLines[RecoverLine](w)
	rep, err := s.recovery.Recover(r.Context(), recovery.Options{Timeout: timeout, AllowMissing: req.AllowMissing, Peers: req.Peers,
		Progress: func(msg string) { send(RecoverLine{Progress: msg}) }})
	if err != nil {
		if errors.Is(err, recovery.ErrMissing) {
			send(RecoverLine{Report: &rep, Error: err.Error()})
			return
		}
		send(RecoverLine{Error: err.Error()})
		return
	}
	send(RecoverLine{Report: &rep})
}
