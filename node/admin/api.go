package admin

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/eduspace/eduspace/node/agreement"
	"github.com/eduspace/eduspace/node/checkpoint"
	"github.com/eduspace/eduspace/node/consent"
	"github.com/eduspace/eduspace/node/evidence"
	"github.com/eduspace/eduspace/node/keys"
	"github.com/eduspace/eduspace/node/receive"
	"github.com/eduspace/eduspace/node/registry"
	"github.com/eduspace/eduspace/node/share"
	"github.com/eduspace/eduspace/policy"
	"github.com/eduspace/eduspace/schema"
)

// problem is an RFC 9457 problem document. Type is a stable URI per kind
// of error; Detail never carries record contents.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

const problemBase = "https://eduspace.invalid/problems/"

func (s *Server) writeProblem(w http.ResponseWriter, status int, kind, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	s.written(json.NewEncoder(w).Encode(problem{Type: problemBase + kind, Title: title, Status: status, Detail: detail}))
}

func (s *Server) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	s.written(json.NewEncoder(w).Encode(v))
}

// startLines begins a streamed answer of w (NDJSON, status 200: the
// …Line types) and returns what sends one line of it, flushed at once so
// that the client sees the progress as it comes. A line that cannot be
// written is dropped: the client has gone.
func startLines[L any](w http.ResponseWriter) (send func(L)) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	return func(l L) {
		if enc.Encode(l) == nil && flusher != nil {
			flusher.Flush()
		}
	}
}

// written logs a response that could not be written whole: the client
// has gone, or a value did not encode; nothing else can be done.
func (s *Server) written(err error) {
	if err != nil {
		s.log.Debug("response not written whole", "err", err)
	}
}

// adminHandler serves the health probes without authentication and the
// /v1 API behind the node's bearer token.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.WriteString(w, "ok\n")
		s.written(err)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if p := s.problems(); len(p) > 0 {
			s.writeProblem(w, http.StatusServiceUnavailable, "unhealthy", "Node unhealthy", strings.Join(p, "; "))
			return
		}
		if s.ckpt.SendingBlocked() {
			s.writeProblem(w, http.StatusServiceUnavailable, "fail-closed", "Node fails closed",
				"evidence checkpoints could not be published for longer than checkpoint.max_age; nothing is sent")
			return
		}
		if !s.ready() {
			s.writeProblem(w, http.StatusServiceUnavailable, "not-ready", "Node not ready", "not connected to NATS or not started")
			return
		}
		_, err := io.WriteString(w, "ready\n")
		s.written(err)
	})
	api := http.NewServeMux()
	api.HandleFunc("POST /v1/ingest", s.handleIngest)
	api.HandleFunc("POST /v1/agreements", s.handleAgreement)
	api.HandleFunc("GET /v1/agreements", s.handleAgreements)
	api.HandleFunc("POST /v1/agreements/propose", s.handlePropose)
	api.HandleFunc("POST /v1/agreements/{id}/accept", s.handleAccept)
	api.HandleFunc("POST /v1/agreements/{id}/revoke", s.handleRevoke)
	api.HandleFunc("POST /v1/shares", s.handleShare)
	api.HandleFunc("POST /v1/agreements/{id}/stream", s.handleStream)
	api.HandleFunc("GET /v1/received", s.handleReceived)
	api.HandleFunc("GET /v1/received/summary", s.handleHoldings)
	api.HandleFunc("GET /v1/evidence/export", s.handleEvidenceExport)
	api.HandleFunc("GET /v1/held", s.handleHeld)
	api.HandleFunc("GET /v1/status", s.handleStatus)
	api.HandleFunc("GET /v1/overview", s.handleOverview)
	api.HandleFunc("POST /v1/consents", s.handleConsent)
	api.HandleFunc("POST /v1/consents/{id}/withdraw", s.handleWithdraw)
	api.HandleFunc("GET /v1/consents", s.handleConsents)
	api.HandleFunc("GET /v1/consents/{id}", s.handleConsentGet)
	api.HandleFunc("POST /v1/subjects/report", s.handleSubjectReport)
	api.HandleFunc("POST /v1/recover", s.handleRecover)
	api.HandleFunc("GET /v1/data-key", s.handleDataKey)
	api.HandleFunc("POST /v1/data-key/rotate", s.handleDataKey)
	s.aggregateRoutes(api) // aggregates.go
	s.releaseRoutes(api)   // releases.go
	s.catalogueRoutes(api) // catalogue.go
	s.linkageRoutes(api)   // linkage.go
	mux.Handle("/v1/", s.audited(api, s.authorize(api)))
	mux.Handle("GET /status", s.statusPageHandler()) // loopback only, no token: status.go
	return mux
}

func (s *Server) authorize(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="eduspace"`)
			s.writeProblem(w, http.StatusUnauthorized, "unauthorized", "Missing or wrong bearer token", "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleIngest stores the records of the body: ?type=T&format=ndjson|csv|edfi|xapi
// &encoding=utf-8|gb18030&all_or_nothing=true (format and encoding are
// detected when not given).
// inputOptions reads how the request's body is to be read: type, format,
// encoding, all_or_nothing. It answers the problem itself when they are
// wrong.
func (s *Server) inputOptions(w http.ResponseWriter, r *http.Request) (share.IngestOptions, bool) {
	q := r.URL.Query()
	o := share.IngestOptions{Type: q.Get("type"), Format: q.Get("format"), Encoding: q.Get("encoding")}
	switch v := q.Get("all_or_nothing"); v {
	case "", "false", "0":
	case "true", "1":
		o.AllOrNothing = true
	default:
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "all_or_nothing must be true or false", "")
		return o, false
	}
	if o.Format != "" && !slices.Contains(schema.Formats(), o.Format) {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unknown format", fmt.Sprintf("format %q: want one of %q", o.Format, schema.Formats()))
		return o, false
	}
	if o.Encoding != "" && !slices.Contains(schema.Encodings(), o.Encoding) {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unknown encoding", fmt.Sprintf("encoding %q: want one of %q", o.Encoding, schema.Encodings()))
		return o, false
	}
	if _, known := s.std.Type(o.Type); o.Type != "" && !known {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unknown record type",
			fmt.Sprintf("type %q is not a record type of %s: want one of %s", o.Type, s.std.Name(), strings.Join(s.std.Types(), ", ")))
		return o, false
	}
	return o, true
}

func (s *Server) handleIngest(w http.ResponseWriter, r *http.Request) {
	o, ok := s.inputOptions(w, r)
	if !ok {
		return
	}
	res, err := s.shares.Ingest(r.Context(), http.MaxBytesReader(w, r.Body, 1<<30), o)
	var de *schema.DecodeError
	switch {
	case errors.As(err, &de):
		s.writeProblem(w, http.StatusUnprocessableEntity, "undecodable", "Input does not decode",
			fmt.Sprintf("%v; %d records stored before it", de, res.Stored))
	case errors.Is(err, share.ErrCSVNeedsType):
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Record type required", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "ingest-failed", "Ingest failed", err.Error())
	default:
		s.writeJSON(w, res)
	}
}

// readAgreement reads and parses the agreement in the request's body, and
// names it for the admin log; it answers the problem itself and returns
// nil when there is none.
func (s *Server) readAgreement(w http.ResponseWriter, r *http.Request) *policy.Agreement {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unreadable request body", err.Error())
		return nil
	}
	a, err := policy.ParseAgreement(body, s.std)
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "invalid-agreement", "Invalid agreement", err.Error())
		return nil
	}
	noteAgreement(r, a.ID)
	return a
}

func (s *Server) handleAgreement(w http.ResponseWriter, r *http.Request) {
	a := s.readAgreement(w, r)
	if a == nil {
		return
	}
	if err := s.agreements.Add(r.Context(), a); err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "invalid-agreement", "Agreement not accepted", err.Error())
		return
	}
	w.WriteHeader(http.StatusCreated)
	s.writeJSON(w, map[string]string{"id": a.ID})
}

func (s *Server) handleShare(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Agreement string `json:"agreement"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.Agreement == "" {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Body must be {\"agreement\": \"<id>\"}", "")
		return
	}
	noteAgreement(r, req.Agreement)
	res, err := s.shares.Share(r.Context(), req.Agreement)
	if err != nil {
		s.shareProblem(w, err)
		return
	}
	s.writeJSON(w, res)
}

// handleStream streams the records in the body under the agreement named
// in the path, without holding them (`eduspace share --agreement ID FILE`).
// The query names the input as for ingest: type, format, encoding.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	noteAgreement(r, id)
	o, ok := s.inputOptions(w, r)
	if !ok {
		return
	}
	if o.AllOrNothing {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "all_or_nothing applies to ingest only",
			"records streamed under an agreement are sent as they are decided; ingest with all_or_nothing, then share")
		return
	}
	res, err := s.shares.Stream(r.Context(), id, http.MaxBytesReader(w, r.Body, 1<<40), o)
	if err != nil {
		s.shareProblem(w, err)
		return
	}
	s.writeJSON(w, res)
}

// handleHoldings lists what this node received, by agreement and type.
func (s *Server) handleHoldings(w http.ResponseWriter, r *http.Request) {
	list, err := s.recv.Holdings(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "received-failed", "Listing what was received failed", err.Error())
		return
	}
	s.writeJSON(w, list)
}

// Export headers and trailer: the count and digest are known, and in the
// evidence log, before the first record is written; an error after it is
// the trailer's, and a client keeps nothing of an export that has one.
const (
	headerExportRecords = "Eduspace-Export-Records"
	headerExportDigest  = "Eduspace-Export-Digest"
	trailerExportError  = "Eduspace-Export-Error"
)

// handleReceived exports what was received under an agreement
// (?agreement=ID[&type=T][&format=ndjson|csv]), streamed.
func (s *Server) handleReceived(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := receive.ExportOptions{Agreement: q.Get("agreement"), Type: q.Get("type"), Format: q.Get("format")}
	if o.Agreement == "" {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "agreement required",
			"name the agreement whose records to export: ?agreement=ID (GET /v1/received/summary lists them)")
		return
	}
	noteAgreement(r, o.Agreement)
	started := false
	o.Start = func(res receive.ExportResult) {
		started = true
		ct := "application/x-ndjson"
		if o.Format == "csv" {
			ct = "text/csv; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set(headerExportRecords, strconv.Itoa(res.Records))
		w.Header().Set(headerExportDigest, res.Digest)
		w.Header().Set("Trailer", trailerExportError)
		w.WriteHeader(http.StatusOK)
	}
	_, err := s.recv.Export(r.Context(), o, w)
	if err == nil {
		return
	}
	if started {
		s.log.Warn("export cut short", "agreement", o.Agreement, "err", err)
		w.Header().Set(trailerExportError, err.Error())
		return
	}
	if e, ok := receive.IsExportRefused(err); ok {
		status := http.StatusForbidden
		switch e.Reason {
		case receive.ExportUnknownAgreement:
			status = http.StatusNotFound
		case receive.ExportBadFormat:
			status = http.StatusBadRequest
		}
		s.writeProblem(w, status, e.Reason, "Export refused", e.Error())
		return
	}
	s.writeProblem(w, http.StatusInternalServerError, "export-failed", "Export failed", err.Error())
}

// handleEvidenceExport streams this node's evidence log and its
// checkpoints in the export format (node/evidence/EXPORT.md), for `eduspace
// audit fetch`: hashes, reason codes and counts, never a payload or an
// identifier. An error once streaming has begun goes in the trailer, and
// a client keeps nothing of an export that has one.
func (s *Server) handleEvidenceExport(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Trailer", trailerExportError)
	if err := checkpoint.Export(r.Context(), s.db.R, s.nodeID, w); err != nil {
		s.log.Warn("evidence export cut short", "err", err)
		w.Header().Set(trailerExportError, err.Error())
	}
}

// handleHeld streams the records this node holds of one type
// (?type=T), as NDJSON, each as ingest stored it with its "type" member:
// the institution's own view of what it ingested (`eduspace held`).
func (s *Server) handleHeld(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	if _, ok := s.std.Type(typ); !ok {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Record type required",
			fmt.Sprintf("type %q: want one of %q", typ, s.std.Types()))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Trailer", trailerExportError)
	bw := bufio.NewWriterSize(w, 64<<10)
	prefix := append(schema.AppendJSONString([]byte(`{"type":`), typ), ',')
	err := s.shares.ScanRecords(r.Context(), typ, func(_ string, body []byte) error {
		if len(body) < 2 || body[0] != '{' {
			return fmt.Errorf("a held record of %s is not a JSON object", typ)
		}
		if string(body) == "{}" {
			prefix := prefix[:len(prefix)-1]
			_, err := bw.Write(append(append(prefix, '}'), '\n'))
			return err
		}
		if _, err := bw.Write(prefix); err != nil {
			return err
		}
		_, err := bw.Write(append(body[1:len(body):len(body)], '\n'))
		return err
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.Warn("held records cut short", "type", typ, "err", err)
		w.Header().Set(trailerExportError, err.Error())
	}
}

// shareProblem answers a share or stream that failed.
func (s *Server) shareProblem(w http.ResponseWriter, err error) {
	var de *schema.DecodeError
	switch {
	case errors.As(err, &de):
		s.writeProblem(w, http.StatusUnprocessableEntity, "undecodable", "Input does not decode",
			fmt.Sprintf("%v; the records before it were decided and what was permitted is on its way", de))
	case errors.Is(err, share.ErrCSVNeedsType):
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Record type required", err.Error())
	case errors.Is(err, agreement.ErrUnknown):
		s.writeProblem(w, http.StatusNotFound, "unknown-agreement", "Unknown agreement", err.Error())
	case errors.Is(err, registry.ErrRevoked):
		s.writeProblem(w, http.StatusForbidden, "revoked", "Revoked by the space authority", err.Error())
	case errors.Is(err, agreement.ErrNotActive):
		// Proposed or accepted a moment ago: the other party's answer is on
		// its way over the space.
		w.Header().Set("Retry-After", "1")
		s.writeProblem(w, http.StatusConflict, "agreement-not-active", "Agreement not in force yet",
			err.Error()+": the other party's acceptance has not arrived; try again in a moment")
	default:
		s.writeProblem(w, http.StatusInternalServerError, "share-failed", "Share failed", err.Error())
	}
}

// Status is a node's state at a glance.
type Status struct {
	Node            string `json:"node"`
	Space           string `json:"space"`
	Role            string `json:"role"`
	Ready           bool   `json:"ready"`
	Records         int64  `json:"records"`
	Received        int64  `json:"received"`
	OutboxDepth     int64  `json:"outbox_depth"`
	EvidenceEntries int64  `json:"evidence_entries"`
	// The serials of the revocation list and the space policy the node
	// holds (0: none), and the policy's weakest suite; both are followed
	// on the space as the authority publishes them.
	// Problems are what keeps the node from being ready (its database,
	// disk, credential), a sentence each saying what to do.
	Problems       []string `json:"problems,omitempty"`
	RevocationList uint64   `json:"revocation_list"`
	SpacePolicy    uint64   `json:"space_policy"`
	MinSuite       string   `json:"min_suite,omitempty"`
}

// Status reports the node's state.
func (s *Server) Status(ctx context.Context) (Status, error) {
	st := Status{Node: s.nodeID, Space: s.space, Role: string(s.cred.Role), Ready: s.ready(), RevocationList: s.reg.RevocationSerial(),
		Problems: s.problems()}
	if p := s.reg.Policy(); p != nil {
		st.SpacePolicy, st.MinSuite = p.Serial, p.MinSuite.String()
	}
	var errs []error
	for _, x := range []struct {
		out *int64
		f   func(context.Context) (float64, error)
	}{{&st.Records, s.shares.Held}, {&st.Received, s.recv.Records}, {&st.OutboxDepth, s.out.Depth}, {&st.EvidenceEntries, s.evidenceEntries}} {
		v, err := x.f(ctx)
		errs = append(errs, err)
		*x.out = int64(v)
	}
	return st, errors.Join(errs...)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Status(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "status-failed", "Status unavailable", err.Error())
		return
	}
	s.writeJSON(w, st)
}

// VerifyEvidence checks the node's whole evidence chain.
func (s *Server) VerifyEvidence(ctx context.Context) (evidence.Head, error) {
	return evidence.Verify(ctx, s.db.R)
}

func (s *Server) handleConsent(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unreadable request body", "")
		return
	}
	c, err := policy.ParseConsent(body)
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "invalid-consent", "Invalid consent", err.Error())
		return
	}
	receipt, err := s.consents.Grant(r.Context(), c)
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "consent-refused", "Consent not recorded", err.Error())
		return
	}
	w.WriteHeader(http.StatusCreated)
	s.writeJSON(w, map[string]string{"id": c.ID, "receipt": receipt})
}

// handleConsents lists the consent ledger a page at a time:
// ?purpose=P&after=ID&limit=N (at most 10,000, default 1,000). The
// subjects are in the answer, never in the URL.
func (s *Server) handleConsents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			s.writeProblem(w, http.StatusBadRequest, "bad-request", "limit must be 1 to 10000", "")
			return
		}
		limit = n
	}
	list, err := s.consents.List(r.Context(), policy.Purpose(q.Get("purpose")), q.Get("after"), limit)
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "consents-failed", "Consents unavailable", "")
		return
	}
	s.writeJSON(w, list)
}

func (s *Server) handleConsentGet(w http.ResponseWriter, r *http.Request) {
	c, err := s.consents.Get(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, consent.ErrUnknown):
		s.writeProblem(w, http.StatusNotFound, "unknown-consent", "Unknown consent", "")
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "consents-failed", "Consent unavailable", "")
	default:
		s.writeJSON(w, c)
	}
}

func (s *Server) handleWithdraw(w http.ResponseWriter, r *http.Request) {
	res, err := s.consents.Withdraw(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, consent.ErrUnknown):
		s.writeProblem(w, http.StatusNotFound, "unknown-consent", "Unknown consent", "")
	case err != nil:
		s.writeProblem(w, http.StatusUnprocessableEntity, "withdraw-failed", "Withdrawal failed", err.Error())
	default:
		s.writeJSON(w, res)
	}
}

// handleSubjectReport takes the subject in the body, not the URL, so that
// no student id ends up in a proxy's access log.
func (s *Server) handleSubjectReport(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subject string `json:"subject"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12)).Decode(&req); err != nil || req.Subject == "" {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Body must be {\"subject\": \"<student_id>\"}", "")
		return
	}
	rep, err := s.consents.SubjectReport(r.Context(), req.Subject)
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "report-failed", "Subject report failed", "")
		return
	}
	out, err := s.withReleases(r.Context(), rep, req.Subject)
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "report-failed", "Subject report failed", "")
		return
	}
	s.writeJSON(w, out)
}

// handleDataKey reports the data key's state (GET) or rotates it (POST):
// a new key seals from now on, and what is stored under the old one is
// re-sealed in the background (node/keys/KEYS.md §1).
func (s *Server) handleDataKey(w http.ResponseWriter, r *http.Request) {
	if s.dataKey == nil {
		s.writeProblem(w, http.StatusConflict, "no-data-key", "No data key", keys.ErrNoDataKey.Error())
		return
	}
	state, status := s.dataKey.State, http.StatusOK
	if r.Method == http.MethodPost {
		state, status = s.dataKey.Rotate, http.StatusAccepted
	}
	st, err := state(r.Context())
	switch {
	case errors.Is(err, keys.ErrNoDataKey):
		s.writeProblem(w, http.StatusConflict, "no-data-key", "No data key", err.Error())
	case errors.Is(err, keys.ErrRotationUnderway):
		s.writeProblem(w, http.StatusConflict, "rotation-underway", "Data key rotation under way", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "data-key-failed", "Data key unavailable", err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		s.written(json.NewEncoder(w).Encode(st))
	}
}

func (s *Server) handleAgreements(w http.ResponseWriter, r *http.Request) {
	list, err := s.agreements.List(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "agreements-failed", "Agreements unavailable", err.Error())
		return
	}
	s.writeJSON(w, list)
}

func (s *Server) handlePropose(w http.ResponseWriter, r *http.Request) {
	a := s.readAgreement(w, r)
	if a == nil {
		return
	}
	if err := s.agreements.Propose(r.Context(), a); err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "proposal-failed", "Agreement not proposed", err.Error())
		return
	}
	w.WriteHeader(http.StatusAccepted)
	s.writeJSON(w, map[string]string{"id": a.ID, "state": agreement.Proposed})
}

func (s *Server) handleAccept(w http.ResponseWriter, r *http.Request) {
	if err := s.agreements.Accept(r.Context(), r.PathValue("id")); err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, agreement.ErrUnknown) {
			status = http.StatusNotFound
		}
		s.writeProblem(w, status, "accept-failed", "Agreement not accepted", err.Error())
		return
	}
	s.writeJSON(w, map[string]string{"id": r.PathValue("id"), "state": agreement.Active})
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	dropped, err := s.agreements.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, agreement.ErrUnknown) {
			status = http.StatusNotFound
		}
		s.writeProblem(w, status, "revoke-failed", "Agreement not revoked", err.Error())
		return
	}
	s.writeJSON(w, map[string]any{"id": r.PathValue("id"), "state": agreement.Revoked, "dropped_envelopes": dropped})
}

// problems is Config.Health's answer, none without it.
func (s *Server) problems() []string {
	if s.health == nil {
		return nil
	}
	return s.health()
}
