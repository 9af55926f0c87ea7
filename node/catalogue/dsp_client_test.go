package catalogue_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/eduspace/eduspace/node/nodetest"
)

// The small independent client below reads a DSP 2024/1 catalogue the way
// a connector would: an HTTP POST of a CatalogRequestMessage, the answer
// parsed as plain JSON. It shares no code or type with the server (only
// this file's net/http and encoding/json), so that it checks the wire
// format, not the server's own idea of it.

type dspClient struct{ base string }

func (c dspClient) catalog() (map[string]any, error) {
	msg := map[string]any{
		"@context":      "https://w3id.org/dspace/2024/1/context.json",
		"@type":         "dspace:CatalogRequestMessage",
		"dspace:filter": []any{},
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, c.base+"/catalog/request", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	// What a connector sends; the endpoint is public and does not read it.
	req.Header.Set("Authorization", "Bearer connector-token")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	var cat map[string]any
	return cat, json.Unmarshal(data, &cat)
}

// list is v as a JSON array, or nil.
func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// TestDSPIndependentClient: a plain client reads uni-a's catalogue over
// HTTP and finds each dataset with its offer (the purposes allowed, as an
// odrl:purpose constraint), its distribution through uni-a's data
// service, and a row count that is the noised figure uni-a drew and
// stored for the day, with the noise's parameters.
func TestDSPIndependentClient(t *testing.T) {
	s, a, _ := space(t)
	const datasets = 8
	for i := range datasets {
		offer(t, a, fmt.Sprintf("grades-%d", i))
	}
	cat, err := dspClient{a.DSPURL()}.catalog()
	if err != nil {
		t.Fatal(err)
	}
	if cat["@type"] != "dcat:Catalog" || cat["@context"] != "https://w3id.org/dspace/2024/1/context.json" || cat["dspace:participantId"] != "urn:eduspace:testspace:uni-a" {
		t.Errorf("catalogue header: @type %v, @context %v, participant %v", cat["@type"], cat["@context"], cat["dspace:participantId"])
	}
	services := list(cat["dcat:service"])
	if len(services) != 1 || obj(services[0])["dcat:endpointURL"] != a.DSPURL() {
		t.Fatalf("dcat:service %v, want one with endpoint %s", services, a.DSPURL())
	}
	serviceID := obj(services[0])["@id"]
	got := list(cat["dcat:dataset"])
	if len(got) != datasets {
		t.Fatalf("%d datasets, want %d", len(got), datasets)
	}
	for _, v := range got {
		d := obj(v)
		id, _ := d["dct:identifier"].(string)
		if d["@type"] != "dcat:Dataset" || d["dct:title"] != "Course grades 2025-2026" {
			t.Errorf("%s: @type %v, title %v", id, d["@type"], d["dct:title"])
		}
		policies := list(d["odrl:hasPolicy"])
		if len(policies) != 1 {
			t.Fatalf("%s: %d policies", id, len(policies))
		}
		p := obj(policies[0])
		if p["@type"] != "odrl:Offer" || p["odrl:assigner"] != "urn:eduspace:testspace:uni-a" || p["odrl:target"] != nil {
			t.Errorf("%s: policy %v", id, p)
		}
		var purposes []string
		for _, perm := range list(p["odrl:permission"]) {
			for _, c := range list(obj(perm)["odrl:constraint"]) {
				if obj(c)["odrl:leftOperand"] == "odrl:purpose" {
					for _, r := range list(obj(c)["odrl:rightOperand"]) {
						purposes = append(purposes, r.(string))
					}
				}
			}
		}
		slices.Sort(purposes)
		if !slices.Equal(purposes, []string{"learning_analytics", "model_evaluation"}) {
			t.Errorf("%s: purposes %v", id, purposes)
		}
		dist := list(d["dcat:distribution"])
		if len(dist) != 1 || len(list(obj(dist[0])["dcat:accessService"])) != 1 ||
			obj(list(obj(dist[0])["dcat:accessService"])[0])["@id"] != serviceID {
			t.Errorf("%s: distribution %v, want one through %v", id, dist, serviceID)
		}
		rows := obj(d["eduspace:rows"])
		n, ok := rows["eduspace:noisedCount"].(float64)
		if !ok || rows["eduspace:mechanism"] != "discrete_gaussian" || rows["eduspace:sigma2"] != 500.0 || rows["eduspace:rho"] != 0.001 {
			t.Errorf("%s: rows %v", id, rows)
		}
		// One draw a day for the record types, whichever dataset shows it.
		stored := nodetest.Count(t, s.Configs["uni-a"], `SELECT noised FROM catalogue_rows WHERE dataset = 'types:course_grade'`)
		if int64(n) != stored {
			t.Errorf("%s: the catalogue says %v rows, uni-a stored %d for the day", id, n, stored)
		}
		var levels []string
		for _, f := range list(d["eduspace:fields"]) {
			levels = append(levels, fmt.Sprint(obj(f)["eduspace:name"], "=", obj(f)["eduspace:level"]))
		}
		if !slices.Equal(levels, []string{"student_id=L2", "course_code=L1", "term=L1", "score=L3"}) {
			t.Errorf("%s: fields %v", id, levels)
		}
	}
	if k := nodetest.Count(t, s.Configs["uni-a"], `SELECT count(*) FROM evidence WHERE entry LIKE '%rows_noised%'`); k != 1 {
		t.Errorf("%d rows_noised evidence entries for %d datasets over the same records, want 1 draw", k, datasets)
	}
	// Asked again, the same figures: the day's noise is not drawn again.
	again, err := dspClient{a.DSPURL()}.catalog()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range list(again["dcat:dataset"]) {
		if a, b := obj(obj(v)["eduspace:rows"])["eduspace:noisedCount"], obj(obj(got[i])["eduspace:rows"])["eduspace:noisedCount"]; a != b {
			t.Errorf("dataset %d: %v rows, then %v", i, b, a)
		}
	}
}
