package crypto

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package to the standard library, circl, jwt and,
// for the GM/T suite, gmsm (DESIGN.md §10), and checks that it has a doc
// comment.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	doc := false
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		doc = doc || f.Doc != nil && strings.HasPrefix(f.Doc.Text(), "Package crypto ")
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if strings.Contains(first, ".") &&
				!strings.HasPrefix(path, "github.com/cloudflare/circl/") &&
				!strings.HasPrefix(path, "github.com/emmansun/gmsm/") &&
				path != "github.com/golang-jwt/jwt/v5" {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
	if !doc {
		t.Error("no package doc comment")
	}
}
