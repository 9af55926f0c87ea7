package test

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot is the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// TestPackagesHaveDocComments: every package says what it owns.
func TestPackagesHaveDocComments(t *testing.T) {
	root := moduleRoot(t)
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		pkgs, err := parser.ParseDir(token.NewFileSet(), path, func(fi os.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		for name, p := range pkgs {
			documented := false
			for _, f := range p.Files {
				if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
					documented = true
				}
			}
			rel, _ := filepath.Rel(root, path)
			if !documented {
				t.Errorf("package %s (%s) has no doc comment", name, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestImportDirection: schema, policy and crypto never import node, and
// schema imports nothing outside the standard library (DESIGN.md §10).
func TestImportDirection(t *testing.T) {
	root := moduleRoot(t)
	const mod = "github.com/eduspace/eduspace"
	for _, tc := range []struct {
		pkg     string
		allowed []string // import path prefixes allowed outside the standard library
	}{
		// golang.org/x/text: GB18030 and GBK input (schema.Decode).
		{"schema", []string{mod + "/schema", "golang.org/x/text/"}},
		{"policy", []string{mod + "/policy", mod + "/schema", "golang.org/x/text/", "github.com/cedar-policy/"}},
		{"crypto", []string{mod + "/crypto", "github.com/cloudflare/circl", "github.com/golang-jwt/jwt/v5", "golang.org/x/crypto", "golang.org/x/sys", "github.com/bwesterb/go-ristretto",
			"github.com/emmansun/gmsm/"}}, // gmsm: the GM/T suite (SM2, SM3, SM4)
	} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+tc.pkg+"/...")
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list %s: %v", tc.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			ok := false
			for _, p := range tc.allowed {
				ok = ok || strings.HasPrefix(dep, p)
			}
			if !ok {
				t.Errorf("%s depends on %s; allowed: %v", tc.pkg, dep, tc.allowed)
			}
		}
	}
}

// nodeLayers are the packages of a node, one step of a record's way each,
// from the bottom up: a package imports only packages of the layers below
// its own, so that data and calls flow one way (node/doc.go). A package
// that must reach up takes a function from the wiring instead.
var nodeLayers = [][]string{
	{"node/store", "node/bus"},
	{"node/keys", "node/registry", "node/evidence", "node/metrics"},
	{"node/envelope", "node/authority"},
	{"node/outbox", "node/checkpoint"},
	{"node/agreement"},
	{"node/consent", "node/receive"},
	{"node/share", "node/recovery"},
	{"node/aggregate", "node/linkage"},
	{"node/admin"},
	{"node"},
	{"node/demo", "node/bench", "node/nodetest"},
}

// TestNodeLayers: every package under node/ has a layer, and no package
// imports one of its own layer or above (its tests may: they run whole
// nodes).
func TestNodeLayers(t *testing.T) {
	const mod = "github.com/eduspace/eduspace/"
	layer := map[string]int{}
	for i, l := range nodeLayers {
		for _, p := range l {
			layer[mod+p] = i
		}
	}
	for pkg, imports := range directImports(t, "./node/...") {
		l, ok := layer[pkg]
		if !ok {
			t.Errorf("%s has no layer in nodeLayers: place it", pkg)
			continue
		}
		for _, imp := range imports {
			il, ok := layer[imp]
			if !ok {
				continue // outside node/
			}
			if il >= l {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports go down only", pkg, l, imp, il)
			}
		}
	}
}

// TestHelpersOnlyInTests: the tests' own packages, test/wait (waiting on a
// condition), node/nodetest (whole spaces of nodes) and
// crypto/timestamp/tsatest (a local time-stamping authority), are imported by
// tests only, never by a package's own (non-test) files.
func TestHelpersOnlyInTests(t *testing.T) {
	helpers := map[string]bool{
		"github.com/eduspace/eduspace/test/wait":                true,
		"github.com/eduspace/eduspace/node/nodetest":            true,
		"github.com/eduspace/eduspace/crypto/timestamp/tsatest": true,
	}
	for pkg, imports := range directImports(t, "./...") {
		for _, imp := range imports {
			if helpers[imp] {
				t.Errorf("%s imports %s outside its tests", pkg, imp)
			}
		}
	}
}

// directImports lists what the packages matching pattern import in their
// own (non-test) files, by package.
func directImports(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, pattern)
	cmd.Dir = moduleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs[f[0]] = f[1:]
	}
	return pkgs
}
