package admin

import (
	"errors"
	"io"
	"net/http"

	"github.com/eduspace/eduspace/node/catalogue"
)

// catalogueRoutes adds the catalogue API (node/catalogue/CATALOGUE.md §6):
// the space's catalogue, one dataset, and this node's offers.
func (s *Server) catalogueRoutes(api *http.ServeMux) {
	api.HandleFunc("GET /v1/datasets", s.handleDatasets)
	api.HandleFunc("GET /v1/datasets/{id}", s.handleDataset)
	api.HandleFunc("POST /v1/datasets", s.handleOffer)
	api.HandleFunc("DELETE /v1/datasets/{id}", s.handleWithdrawOffer)
	api.HandleFunc("POST /v1/datasets/publish", s.handlePublishCatalogue)
}

// DatasetList is the answer of GET /v1/datasets (`dataset list --json`),
// versioned.
type DatasetList struct {
	Version  int               `json:"version"` // 1
	Datasets []catalogue.Entry `json:"datasets"`
}

func (s *Server) handleDatasets(w http.ResponseWriter, r *http.Request) {
	list, err := s.cat.List(r.Context())
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "catalogue-failed", "Catalogue not read", err.Error())
		return
	}
	s.writeJSON(w, DatasetList{Version: 1, Datasets: list})
}

func (s *Server) handleDataset(w http.ResponseWriter, r *http.Request) {
	e, err := s.cat.Get(r.Context(), r.PathValue("id"), r.URL.Query().Get("publisher"))
	switch {
	case errors.Is(err, catalogue.ErrUnknown):
		s.writeProblem(w, http.StatusNotFound, "unknown-dataset", "Unknown dataset",
			err.Error()+": `eduspace dataset list` lists the space's datasets")
	case errors.Is(err, catalogue.ErrAmbiguous):
		s.writeProblem(w, http.StatusConflict, "ambiguous-dataset", "Dataset id offered by several members", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "catalogue-failed", "Catalogue not read", err.Error())
	default:
		s.writeJSON(w, e)
	}
}

func (s *Server) handleOffer(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		s.writeProblem(w, http.StatusBadRequest, "bad-request", "Unreadable request body", "an offer of at most 1 MiB expected")
		return
	}
	o, err := catalogue.ParseOffer(body, s.std)
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "invalid-offer", "Invalid dataset offer", err.Error())
		return
	}
	d, err := s.cat.Offer(r.Context(), o)
	if errors.Is(err, catalogue.ErrAuditor) {
		s.writeProblem(w, http.StatusForbidden, "auditor", "An auditor offers no datasets", err.Error())
		return
	}
	if err != nil {
		s.writeProblem(w, http.StatusUnprocessableEntity, "offer-failed", "Dataset not offered", err.Error())
		return
	}
	s.writeJSON(w, d)
}

func (s *Server) handleWithdrawOffer(w http.ResponseWriter, r *http.Request) {
	err := s.cat.Withdraw(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, catalogue.ErrUnknown):
		s.writeProblem(w, http.StatusNotFound, "unknown-dataset", "This node offers no such dataset", err.Error())
	case err != nil:
		s.writeProblem(w, http.StatusInternalServerError, "catalogue-failed", "Offer not withdrawn", err.Error())
	default:
		s.writeJSON(w, map[string]string{"withdrawn": r.PathValue("id")})
	}
}

func (s *Server) handlePublishCatalogue(w http.ResponseWriter, r *http.Request) {
	k, err := s.cat.Publish(r.Context())
	if errors.Is(err, catalogue.ErrAuditor) {
		s.writeProblem(w, http.StatusForbidden, "auditor", "An auditor publishes no catalogue", err.Error())
		return
	}
	if err != nil {
		s.writeProblem(w, http.StatusInternalServerError, "publish-failed", "Catalogue not published", err.Error())
		return
	}
	s.writeJSON(w, map[string]int{"members": k})
}
