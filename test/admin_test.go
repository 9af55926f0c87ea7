package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eduspace/eduspace/node"
)

// adminCall calls the admin API of n, whose data directory is dir, with
// the node's token; it decodes a 2xx answer into out (when not nil) and
// returns the response, its body read.
func adminCall(t *testing.T, n *node.Node, dir, method, path, body string, out any) *http.Response {
	t.Helper()
	resp, data := adminRaw(t, n, dir, method, path, body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	return resp
}

// adminRaw calls the admin API of node n (data directory dir, for its
// token) and returns the response, its body read whole and its trailer
// with it.
func adminRaw(t *testing.T, n *node.Node, dir, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, "http://"+n.AdminAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}
