package catalogue_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/eduspace/eduspace/node"
	"github.com/eduspace/eduspace/node/nodetest"
)

// dspSchemas are the Dataspace Protocol 2024/1 JSON schemas of the
// catalogue (testdata/dsp-2024-1, README there), compiled by their ids.
type dspSchemas map[string]*jsonschema.Schema

const schemaBase = "https://w3id.org/dspace/2024/1/"

func loadDSPSchemas(t *testing.T) dspSchemas {
	t.Helper()
	c := jsonschema.NewCompiler()
	files := map[string]string{
		"catalog-schema.json":                 "catalog/catalog-schema.json",
		"dataset-schema.json":                 "catalog/dataset-schema.json",
		"catalog-request-message-schema.json": "catalog/catalog-request-message-schema.json",
		"catalog-error-schema.json":           "catalog/catalog-error-schema.json",
		"contract-schema.json":                "negotiation/contract-schema.json",
	}
	for file, id := range files {
		f, err := os.Open(filepath.Join("testdata", "dsp-2024-1", file))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := c.AddResource(schemaBase+id, doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	out := dspSchemas{}
	for file, id := range files {
		s, err := c.Compile(schemaBase + id)
		if err != nil {
			t.Fatalf("compile %s: %v", file, err)
		}
		out[strings.TrimSuffix(file, "-schema.json")] = s
	}
	return out
}

// validate checks the JSON document data against schema name.
func (s dspSchemas) validate(t *testing.T, name string, data []byte) error {
	t.Helper()
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", name, err, data)
	}
	return s[name].Validate(inst)
}

// TestDSPSchemasThemselves: the schemas accept the specification's own
// example catalogue and request and refuse what they must, so that a pass
// of the node's answers means something.
func TestDSPSchemasThemselves(t *testing.T) {
	s := loadDSPSchemas(t)
	example, err := os.ReadFile("testdata/dsp-2024-1/example-catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.validate(t, "catalog", example); err != nil {
		t.Errorf("the specification's example catalogue: %v", err)
	}
	for _, c := range []struct {
		schema, doc string
		ok          bool
	}{
		{"catalog-request-message", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:CatalogRequestMessage","dspace:filter":[]}`, true},
		{"catalog-request-message", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:DatasetRequestMessage"}`, false},
		{"catalog", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dcat:Catalog"}`, true},
		{"catalog", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dcat:Catalog","dcat:dataset":[]}`, false},
		{"catalog", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dcat:Catalog","dcat:dataset":[{"@type":"dcat:Dataset"}]}`, false},
		{"catalog", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dcat:Catalog","dcat:dataset":[{"odrl:hasPolicy":[{"@id":"p","@type":"odrl:Offer","odrl:assigner":"x","odrl:target":"d","odrl:permission":[{"odrl:action":"odrl:use"}]}]}]}`, false},
		{"catalog-error", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:CatalogError","dspace:code":"400"}`, true},
		{"catalog-error", `{"@type":"dspace:CatalogError"}`, false},
		{"dataset", `{"odrl:hasPolicy":[{"@id":"p","@type":"odrl:Offer","odrl:assigner":"x","odrl:permission":[{"odrl:action":"odrl:use"}]}]}`, true},
		{"dataset", `{"odrl:hasPolicy":[{"@id":"p","@type":"odrl:Offer","odrl:assigner":"x","odrl:permission":[{"odrl:action":"odrl:steal"}]}]}`, false},
	} {
		err := s.validate(t, c.schema, []byte(c.doc))
		if (err == nil) != c.ok {
			t.Errorf("%s %s: valid %v, want %v (%v)", c.schema, c.doc, err == nil, c.ok, err)
		}
	}
}

func postDSP(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/catalog/request", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

const catalogRequest = `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:CatalogRequestMessage","dspace:filter":[]}`

// TestDSPCatalogSchema: the node's answers at its DSP endpoint validate
// against the DSP 2024/1 schemas: the catalogue without datasets and with
// two, one dataset, and every error.
func TestDSPCatalogSchema(t *testing.T) {
	s := loadDSPSchemas(t)
	_, a, _ := space(t)
	url := a.DSPURL()
	if err := s.validate(t, "catalog-request-message", []byte(catalogRequest)); err != nil {
		t.Fatalf("the test's request: %v", err)
	}
	code, empty := postDSP(t, url, catalogRequest)
	if code != http.StatusOK {
		t.Fatalf("empty catalogue: %d %s", code, empty)
	}
	if err := s.validate(t, "catalog", empty); err != nil {
		t.Errorf("empty catalogue: %v\n%s", err, empty)
	}
	offer(t, a, "grades-2026")
	offer(t, a, "grades-2027")
	for _, req := range []string{catalogRequest,
		// The compacted form, without a filter, and a context among others.
		`{"@context":["https://w3id.org/dspace/2024/1/context.json"],"@type":"CatalogRequestMessage"}`} {
		code, full := postDSP(t, url, req)
		if code != http.StatusOK {
			t.Fatalf("catalogue: %d %s", code, full)
		}
		if err := s.validate(t, "catalog", full); err != nil {
			t.Errorf("catalogue: %v\n%s", err, full)
		}
	}
	resp, err := http.Get(url + "/catalog/datasets/grades-2026")
	if err != nil {
		t.Fatal(err)
	}
	ds, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dataset: %d %s", resp.StatusCode, ds)
	}
	if err := s.validate(t, "dataset", ds); err != nil {
		t.Errorf("dataset: %v\n%s", err, ds)
	}

	for _, c := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"not JSON", "POST", "/catalog/request", `{`, 400},
		{"wrong context", "POST", "/catalog/request", `{"@context":"https://w3id.org/dspace/2025/1/context.jsonld","@type":"CatalogRequestMessage"}`, 400},
		{"wrong type", "POST", "/catalog/request", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:DatasetRequestMessage"}`, 400},
		{"filter not an array", "POST", "/catalog/request", `{"@context":"https://w3id.org/dspace/2024/1/context.json","@type":"dspace:CatalogRequestMessage","dspace:filter":"x"}`, 400},
		{"too large", "POST", "/catalog/request", `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"GET the request path", "GET", "/catalog/request", "", 405},
		{"unknown dataset", "GET", "/catalog/datasets/nope", "", 404},
		{"POST a dataset", "POST", "/catalog/datasets/grades-2026", "{}", 405},
		{"elsewhere", "GET", "/negotiations/1", "", 404},
	} {
		req, err := http.NewRequest(c.method, url+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, resp.StatusCode, c.status, data)
		}
		if err := s.validate(t, "catalog-error", data); err != nil {
			t.Errorf("%s: %v\n%s", c.name, err, data)
		}
		var e map[string]any
		if json.Unmarshal(data, &e) != nil || e["dspace:code"] != strconv.Itoa(c.status) {
			t.Errorf("%s: dspace:code %v, want %d", c.name, e["dspace:code"], c.status)
		}
	}
	m := nodetest.Scrape(t, a)
	for _, want := range []string{`eduspace_dsp_requests_total{outcome="catalog"} 3`, `eduspace_dsp_requests_total{outcome="dataset"} 1`,
		`eduspace_dsp_requests_total{outcome="bad_request"} 5`, `eduspace_dsp_requests_total{outcome="method_not_allowed"} 2`,
		`eduspace_dsp_requests_total{outcome="not_found"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestDSPRateLimited: past dsp.burst requests from one address, the
// endpoint answers 429 with Retry-After and a dspace:CatalogError that
// validates, counted as rate_limited; at the rate, a token comes back.
// The node's clock is set, so the test depends on no timing.
func TestDSPRateLimited(t *testing.T) {
	schemas := loadDSPSchemas(t)
	s := nodetest.NewSpace(t)
	cfg := s.Config("uni-a")
	cfg.DSP.Listen = "127.0.0.1:0"
	cfg.DSP.RatePerMinute, cfg.DSP.Burst = 6, 2 // a token every 10 s
	var mu sync.Mutex
	now := s.Now
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := s.Open(cfg, node.Env{Now: clock})
	url := a.DSPURL()
	for i := range 2 {
		if code, data := postDSP(t, url, catalogRequest); code != http.StatusOK {
			t.Fatalf("request %d of a burst of 2: %d %s", i+1, code, data)
		}
	}
	resp, err := http.Post(url+"/catalog/request", "application/json", strings.NewReader(catalogRequest))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "10" {
		t.Errorf("3rd request: %d, Retry-After %q; want 429, 10: %s", resp.StatusCode, resp.Header.Get("Retry-After"), data)
	}
	if err := schemas.validate(t, "catalog-error", data); err != nil {
		t.Errorf("the 429's body: %v\n%s", err, data)
	}
	var e map[string]any
	if json.Unmarshal(data, &e) != nil || e["dspace:code"] != "429" {
		t.Errorf("dspace:code %v, want 429", e["dspace:code"])
	}
	// Any path counts against the same bucket.
	if resp, err := http.Get(url + "/catalog/datasets/x"); err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("GET a dataset past the limit: %v %v", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	if code, data := postDSP(t, url, catalogRequest); code != http.StatusOK {
		t.Errorf("after 10 s at 6 a minute: %d %s", code, data)
	}
	m := nodetest.Scrape(t, a)
	for _, want := range []string{`eduspace_dsp_requests_total{outcome="catalog"} 3`, `eduspace_dsp_requests_total{outcome="rate_limited"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
