package catalogue

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// The Dataspace Protocol 2024/1 catalogue binding (CATALOGUE.md §4).
const (
	// DSPContext is the JSON-LD context of DSP 2024/1 messages.
	DSPContext = "https://w3id.org/dspace/2024/1/context.json"
	// maxDSPRequest bounds a CatalogRequestMessage.
	maxDSPRequest = 64 << 10
)

// DSPHandler serves this node's own datasets to Dataspace Protocol
// connectors: POST /catalog/request answers a dcat:Catalog, GET
// /catalog/datasets/{id} one dcat:Dataset. It needs no authorization: it
// shows only what the node publishes to every member, with noised counts
// (CATALOGUE.md §5). Each remote address may make Config.DSPRate
// requests a minute, DSPBurst at once; past that it is answered 429.
func (c *Catalogue) DSPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/catalog/request", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			c.dspError(w, http.StatusMethodNotAllowed, "method_not_allowed", "POST a dspace:CatalogRequestMessage")
			return
		}
		c.handleCatalogRequest(w, r)
	})
	mux.HandleFunc("/catalog/datasets/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			c.dspError(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET a dataset by its id")
			return
		}
		c.handleDataset(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.dspError(w, http.StatusNotFound, "not_found", "this endpoint serves POST /catalog/request and GET /catalog/datasets/{id}")
	})
	return c.limit(newLimiter(c.c.DSPRate, c.c.DSPBurst, c.c.Now), mux)
}

// CatalogRequest is a dspace:CatalogRequestMessage as read.
type catalogRequest struct {
	Context json.RawMessage `json:"@context"`
	Type    string          `json:"@type"`
	Filter  json.RawMessage `json:"dspace:filter"`
}

// contextOK reports whether raw is the DSP 2024/1 context, alone or
// among others.
func contextOK(raw json.RawMessage) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == DSPContext
	}
	var many []json.RawMessage
	if json.Unmarshal(raw, &many) != nil {
		return false
	}
	return slices.ContainsFunc(many, func(m json.RawMessage) bool { return json.Unmarshal(m, &one) == nil && one == DSPContext })
}

// parseCatalogRequest checks a dspace:CatalogRequestMessage: the DSP
// 2024/1 context, the type (prefixed or compacted), and a filter, if any,
// that is an array. The error says what was expected.
func parseCatalogRequest(data []byte) error {
	var req catalogRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return fmt.Errorf("a JSON object expected: %w", err)
	}
	if !contextOK(req.Context) {
		return errors.New(`"@context" must be ` + DSPContext)
	}
	if req.Type != "dspace:CatalogRequestMessage" && req.Type != "CatalogRequestMessage" {
		return errors.New(`"@type" must be "dspace:CatalogRequestMessage"`)
	}
	if len(req.Filter) > 0 && string(req.Filter) != "null" {
		var f []json.RawMessage
		if json.Unmarshal(req.Filter, &f) != nil {
			return errors.New(`"dspace:filter" must be an array`)
		}
	}
	return nil
}

func (c *Catalogue) handleCatalogRequest(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxDSPRequest+1))
	if err != nil {
		c.dspError(w, http.StatusBadRequest, "bad_request", "the request body could not be read")
		return
	}
	if len(data) > maxDSPRequest {
		c.dspError(w, http.StatusRequestEntityTooLarge, "bad_request", fmt.Sprintf("a CatalogRequestMessage of at most %d bytes expected", maxDSPRequest))
		return
	}
	if err := parseCatalogRequest(data); err != nil {
		c.dspError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	own, err := c.Own(r.Context())
	if err != nil {
		c.c.Log.Warn("DSP catalogue request", "err", err)
		c.dspError(w, http.StatusInternalServerError, "", "the catalogue could not be read; try again")
		return
	}
	c.c.Metrics.Catalogue.DSP.WithLabelValues("catalog").Inc()
	c.writeLD(w, http.StatusOK, c.dcatCatalog(own))
}

func (c *Catalogue) handleDataset(w http.ResponseWriter, r *http.Request) {
	d, err := c.own(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrUnknown) {
		c.dspError(w, http.StatusNotFound, "not_found", "no dataset with that id is offered here")
		return
	}
	if err != nil {
		c.c.Log.Warn("DSP dataset request", "err", err)
		c.dspError(w, http.StatusInternalServerError, "", "the catalogue could not be read; try again")
		return
	}
	c.c.Metrics.Catalogue.DSP.WithLabelValues("dataset").Inc()
	ds := c.dcatDataset(d)
	ds["@context"] = DSPContext
	c.writeLD(w, http.StatusOK, ds)
}

// dspError answers a dspace:CatalogError with status; outcome "" counts
// nothing (a failure of this node, not of the request).
func (c *Catalogue) dspError(w http.ResponseWriter, status int, outcome, reason string) {
	if outcome != "" {
		c.c.Metrics.Catalogue.DSP.WithLabelValues(outcome).Inc()
	}
	c.writeLD(w, status, map[string]any{
		"@context":      DSPContext,
		"@type":         "dspace:CatalogError",
		"dspace:code":   strconv.Itoa(status),
		"dspace:reason": []string{reason},
	})
}

func (c *Catalogue) writeLD(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		c.c.Log.Debug("DSP answer not written whole", "err", err)
	}
}

// The DSP identifiers: the participant (this node in its space, an
// IRI as the DSP context types dspace:participantId, odrl:assigner and
// dct:creator) and, under it, its catalogue, data service, datasets and
// offers.
func (c *Catalogue) participant() string {
	return "urn:eduspace:" + c.c.Layout.Space + ":" + c.c.NodeID
}
func (c *Catalogue) catalogID() string          { return c.participant() + ":catalog" }
func (c *Catalogue) serviceID() string          { return c.participant() + ":dsp" }
func (c *Catalogue) datasetID(id string) string { return c.participant() + ":dataset:" + id }
func (c *Catalogue) offerID(id string) string   { return c.participant() + ":offer:" + id }

func (c *Catalogue) dataService() map[string]any {
	s := map[string]any{
		"@id":                      c.serviceID(),
		"@type":                    "dcat:DataService",
		"dcat:endpointDescription": "dspace:connector",
	}
	if c.c.Endpoint != "" {
		s["dcat:endpointURL"] = c.c.Endpoint
	}
	return s
}

// dcatCatalog is own as a DSP 2024/1 dcat:Catalog (CATALOGUE.md §4).
func (c *Catalogue) dcatCatalog(own []Dataset) map[string]any {
	cat := map[string]any{
		"@context":             DSPContext,
		"@id":                  c.catalogID(),
		"@type":                "dcat:Catalog",
		"dct:title":            "Datasets offered by " + c.c.NodeID,
		"dct:creator":          c.participant(),
		"dspace:participantId": c.participant(),
		"dcat:service":         []any{c.dataService()},
	}
	if c.c.Institution != "" {
		cat["dct:title"] = "Datasets offered by " + c.c.Institution
		cat["dct:publisher"] = c.c.Institution
	}
	// The schema wants at least one dataset when the key is there.
	if len(own) > 0 {
		list := make([]any, 0, len(own))
		for _, d := range own {
			list = append(list, c.dcatDataset(d))
		}
		cat["dcat:dataset"] = list
	}
	return cat
}

// dcatDataset is d as a DSP 2024/1 dcat:Dataset: its offer (the allowed
// purposes as an odrl:purpose constraint, the retention as a delete duty)
// and its distribution through this node's data service. What DCAT and
// ODRL have no term for is under eduspace: keys (absolute IRIs of the
// eduspace: scheme, CATALOGUE.md §4).
func (c *Catalogue) dcatDataset(d Dataset) map[string]any {
	purposes := make([]string, len(d.Purposes))
	for i, p := range d.Purposes {
		purposes[i] = string(p)
	}
	fields := make([]any, len(d.Fields))
	for i, f := range d.Fields {
		fields[i] = map[string]any{"eduspace:recordType": f.RecordType, "eduspace:name": f.Name,
			"eduspace:category": f.Category, "eduspace:level": f.Level, "eduspace:directIdentifier": f.Direct}
	}
	ds := map[string]any{
		"@id":               c.datasetID(d.ID),
		"@type":             "dcat:Dataset",
		"dct:identifier":    d.ID,
		"dct:title":         d.Title,
		"dct:creator":       cmp.Or(d.Institution, d.Publisher),
		"dct:publisher":     d.Publisher,
		"dct:modified":      d.Updated.UTC().Format(time.RFC3339),
		"dct:conformsTo":    d.Standard,
		"dct:license":       d.Licence,
		"dcat:contactPoint": d.Contact,
		"dcat:keyword":      append(slices.Clone(d.Keywords), d.RecordTypes...),
		"odrl:hasPolicy": []any{map[string]any{
			"@id":           c.offerID(d.ID),
			"@type":         "odrl:Offer",
			"odrl:assigner": c.participant(),
			"odrl:permission": []any{map[string]any{
				"odrl:action": "odrl:use",
				"odrl:constraint": []any{map[string]any{
					"odrl:leftOperand":  "odrl:purpose",
					"odrl:operator":     "odrl:isAnyOf",
					"odrl:rightOperand": purposes,
				}},
			}},
			"odrl:obligation": []any{map[string]any{
				"odrl:action": "odrl:delete",
				"odrl:constraint": []any{map[string]any{
					"odrl:leftOperand":  "odrl:elapsedTime",
					"odrl:operator":     "odrl:gteq",
					"odrl:rightOperand": fmt.Sprintf("P%dD", d.RetentionDays),
				}},
			}},
		}},
		"dcat:distribution": []any{map[string]any{
			"@type":              "dcat:Distribution",
			"dct:format":         "eduspace:envelope",
			"dcat:accessService": []any{c.dataService()},
		}},
		"eduspace:recordTypes":   d.RecordTypes,
		"eduspace:fields":        fields,
		"eduspace:level":         d.Level,
		"eduspace:retentionDays": d.RetentionDays,
		"eduspace:rows": map[string]any{
			"eduspace:noisedCount": d.Rows.Noised,
			"eduspace:day":         d.Rows.Day,
			"eduspace:mechanism":   d.Rows.Mechanism,
			"eduspace:sigma2":      d.Rows.Sigma2,
			"eduspace:rho":         d.Rows.Rho,
		},
	}
	if d.Description != "" {
		ds["dct:description"] = []any{map[string]any{"@value": d.Description, "@language": cmp.Or(d.Language, "en")}}
	}
	return ds
}
