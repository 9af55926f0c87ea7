package admin

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/eduspace/eduspace/node/aggregate"
)

// aggregateRoutes adds the aggregate API (node/aggregate/AGGREGATES.md §5)
// to the admin API: the center's queries and releases, and every node's
// budgets.
func (s *Server) aggregateRoutes(api *http.ServeMux) {
	api.HandleFunc("POST /v1/aggregate-queries", s.handleSubmitQuery)
	api.HandleFunc("GET /v1/aggregate-queries", s.handleQueries)
	api.HandleFunc("GET /v1/aggregate-queries/{id}", s.handleQuery)
	api.HandleFunc("POST /v1/aggregate-queries/{id}/cancel", s.handleCancelQuery)
	api.HandleFunc("GET /v1/aggregate-rounds", s.handleRounds)
	api.HandleFunc("GET /v1/aggregates", s.handleAggregates)
	api.HandleFunc("GET /v1/aggregates/{id}", s.handleAggregate)
	api.HandleFunc("GET /v1/budgets", s.handleBudgets)
	api.HandleFunc("PUT /v1/budgets", s.handleSetBudget)
}

func (s *Server) handleSubmitQuery(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unreadable request body", "")
		return
	}
	var q aggregate.Query
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&q); err != nil {
		s.writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid aggregate query", err.Error())
		return
	}
	info, err := s.agg.Submit(r.Context(), q)
	var de *aggregate.DimensionError
	switch {
	case errors.Is(err, aggregate.ErrNotCenter):
		s.writeProblem(w, http.StatusForbidden, "not-center", "Not a center", err.Error())
	case errors.As(err, &de):
		// reason code undeclared_dimension
		s.writeProblem(w, http.StatusUnprocessableEntity, "undeclared-dimension", "Aggregate query groups by an undeclared dimension", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusUnprocessableEntity, "invalid-query", "Aggregate query not accepted", err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		if err := json.NewEncoder(w).Encode(info); err != nil {
			s.log.Warn("aggregate query: answer not written", "err", err)
		}
	}
}

func (s *Server) handleAggregates(w http.ResponseWriter, r *http.Request) {
	list, err := s.agg.Releases(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "aggregates-failed", "Aggregates unavailable", "")
		return
	}
	s.writeJSON(w, list)
}

func (s *Server) handleAggregate(w http.ResponseWriter, r *http.Request) {
	id, asCSV := r.PathValue("id"), r.URL.Query().Get("format") == "csv"
	if base, ok := strings.CutSuffix(id, ".csv"); ok {
		id, asCSV = base, true
	}
	if f := r.URL.Query().Get("format"); f != "" && f != "csv" && f != "json" {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "format must be json or csv", "")
		return
	}
	rel, err := s.agg.Release(r.Context(), id)
	switch {
	case errors.Is(err, aggregate.ErrUnknownRelease):
		s.writeProblem(w, http.StatusNotFound, "unknown-aggregate", "Unknown aggregate", "")
		return
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "aggregates-failed", "Aggregate unavailable", "")
		return
	}
	if !asCSV {
		s.writeJSON(w, rel)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+rel.ID+`.csv"`)
	if err := writeReleaseCSV(w, rel); err != nil {
		s.log.Warn("aggregate: CSV not written", "aggregate", rel.ID, "err", err)
	}
}

// writeReleaseCSV writes one row per cell: the dimension values ("" for
// other), the noisy count, the noisy sum for a sum measure, and whether the
// cell was suppressed (its figures then empty).
func writeReleaseCSV(w io.Writer, rel *aggregate.Release) error {
	if rel.Joined != nil {
		return writeJoinedCSV(w, rel.Joined)
	}
	cw := csv.NewWriter(w)
	head := append([]string{}, rel.GroupBy...)
	head = append(head, "count")
	if rel.Measure.Kind == "sum" {
		head = append(head, "sum_"+rel.Measure.Field)
	}
	if err := cw.Write(append(head, "suppressed")); err != nil {
		return err
	}
	for _, c := range rel.Cells {
		row := csvKey(c.Key, len(head)+1)
		row = append(row, optInt(c.Count))
		if rel.Measure.Kind == "sum" {
			row = append(row, optInt(c.Sum))
		}
		if err := cw.Write(append(row, strconv.FormatBool(c.Suppressed))); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvKey is a cell's key as CSV fields, none of which a spreadsheet
// takes for a formula.
func csvKey(key []string, capacity int) []string {
	row := make([]string, 0, capacity)
	for _, k := range key {
		if k != "" && strings.ContainsRune("=+-@\t\r", rune(k[0])) {
			k = "'" + k // not a formula in a spreadsheet
		}
		row = append(row, k)
	}
	return row
}

// writeJoinedCSV writes one row per joined cell: the population then the
// outcome dimension values, the noised population and outcome counts, the
// rate, for a sum the sum and the mean, the interval at the stated level
// of the mean (or, without a sum, of the rate),
// and whether the cell was suppressed (its figures then empty).
func writeJoinedCSV(w io.Writer, j *aggregate.JoinedRelease) error {
	cw := csv.NewWriter(w)
	head := append(append([]string{}, j.PopulationGroupBy...), j.OutcomeGroupBy...)
	head = append(head, "population", "count")
	sum := j.Measure.Kind == "sum"
	head = append(head, "rate")
	if sum {
		head = append(head, "sum_"+j.Measure.Field, "mean")
	}
	head = append(head, "level", "lower", "upper", "suppressed")
	if err := cw.Write(head); err != nil {
		return err
	}
	f := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', 6, 64)
	}
	for _, c := range j.Cells {
		row := csvKey(c.Key, len(head))
		row = append(row, optInt(c.Population), optInt(c.Count))
		row = append(row, f(c.Rate))
		if sum {
			row = append(row, optInt(c.Sum), f(c.Mean))
		}
		if a := c.Accuracy; a != nil {
			row = append(row, f(&a.Level), f(&a.Lower), f(&a.Upper))
		} else {
			row = append(row, "", "", "")
		}
		if err := cw.Write(append(row, strconv.FormatBool(c.Suppressed))); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func optInt(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func (s *Server) handleBudgets(w http.ResponseWriter, r *http.Request) {
	list, err := s.agg.Budgets(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "budgets-failed", "Budgets unavailable", "")
		return
	}
	s.writeJSON(w, list)
}

// handleSetBudget sets the budget of a (recipient, population) account,
// per calendar year. The population is a subject key ("student_id"); a
// record type given as "dataset" (the body of versions whose accounts were
// per record type) names the population it is about.
func (s *Server) handleSetBudget(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Recipient  string  `json:"recipient"`
		Population string  `json:"population"`
		Dataset    string  `json:"dataset"`
		Rho        float64 `json:"budget_rho"`
	}
	const usage = `Body must be {"recipient": …, "population": …, "budget_rho": …}`
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12)).Decode(&req); err != nil || req.Recipient == "" ||
		(req.Population == "") == (req.Dataset == "") {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", usage, "")
		return
	}
	population := req.Population
	if req.Dataset != "" {
		p, err := s.agg.PopulationOf(req.Dataset)
		if err != nil {
			s.writeProblem(w, http.StatusUnprocessableEntity, "budget-refused", "Budget not set", "dataset: "+err.Error())
			return
		}
		population = p
	}
	if err := s.agg.SetBudget(r.Context(), req.Recipient, population, req.Rho); err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "budget-refused", "Budget not set", err.Error())
		return
	}
	s.handleBudgets(w, r)
}

func (s *Server) handleQueries(w http.ResponseWriter, r *http.Request) {
	list, err := s.agg.Queries(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "aggregates-failed", "Aggregate queries unavailable", "")
		return
	}
	s.writeJSON(w, list)
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	s.answerQuery(w, r, s.agg.QueryByID)
}

func (s *Server) handleCancelQuery(w http.ResponseWriter, r *http.Request) {
	s.answerQuery(w, r, s.agg.Cancel)
}

// answerQuery answers with what f does to the query named in the path.
func (s *Server) answerQuery(w http.ResponseWriter, r *http.Request, f func(context.Context, string) (aggregate.QueryState, error)) {
	qs, err := f(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, aggregate.ErrUnknownQuery):
		s.writeProblem(w, http.StatusNotFound, "unknown-query", "Unknown aggregate query", err.Error())
	case errors.Is(err, aggregate.ErrQueryNotActive):
		s.writeProblem(w, http.StatusConflict, "query-not-active", "Aggregate query not active", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "aggregates-failed", "Aggregate query unavailable", "")
	default:
		s.writeJSON(w, qs)
	}
}

func (s *Server) handleRounds(w http.ResponseWriter, r *http.Request) {
	list, err := s.agg.Rounds(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "aggregates-failed", "Aggregate rounds unavailable", "")
		return
	}
	s.writeJSON(w, list)
}
