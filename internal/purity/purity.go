package purity

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Violation is one forbidden use found in a core.
type Violation struct {
	Pos  token.Position
	What string
}

func (v Violation) String() string { return fmt.Sprintf("%s: %s", v.Pos, v.What) }

// bannedPackages may not be imported at all by a core.
var bannedPackages = map[string]string{
	"net":         "the network (use node.Env's Network)",
	"net/http":    "the network",
	"net/netip":   "", // pure value types: allowed
	"os":          "files and processes (use node.Env's Storage)",
	"os/exec":     "processes",
	"os/signal":   "signals",
	"syscall":     "system calls",
	"io/ioutil":   "files",
	"crypto/rand": "global randomness (use node.Env's Rand)",
	"math/rand":   "global randomness (use node.Env's Rand)",
	"unsafe":      "unsafe memory",
	"plugin":      "plugins",
	"runtime/cgo": "cgo",
}

// bannedSelectors are functions of allowed packages that a core may not
// call: they read the clock or global randomness, or wait on real time.
var bannedSelectors = map[string]map[string]string{
	"time": {
		"Now": "the clock", "Since": "the clock", "Until": "the clock",
		"Sleep": "real time", "After": "real time", "AfterFunc": "real timers",
		"NewTimer": "real timers", "NewTicker": "real timers", "Tick": "real timers",
	},
	"math/rand/v2": {
		// Only the types (and constructors from an explicit seed) are
		// allowed: every top-level draw uses the global source.
		"Int": "global randomness", "IntN": "global randomness", "Int32": "global randomness",
		"Int32N": "global randomness", "Int64": "global randomness", "Int64N": "global randomness",
		"Uint32": "global randomness", "Uint32N": "global randomness", "Uint64": "global randomness",
		"Uint64N": "global randomness", "UintN": "global randomness", "Uint": "global randomness",
		"N": "global randomness", "Float32": "global randomness", "Float64": "global randomness",
		"Perm": "global randomness", "Shuffle": "global randomness", "NormFloat64": "global randomness",
		"ExpFloat64": "global randomness",
	},
}

// Check reports the violations in the non-test Go files of dir and of
// every directory below it (testdata excepted).
func Check(dir string) ([]Violation, error) {
	var out []Violation
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" && path != dir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		out = append(out, checkFile(fset, f)...)
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Pos, out[j].Pos
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Offset < b.Offset
	})
	return out, err
}

func checkFile(fset *token.FileSet, f *ast.File) []Violation {
	var out []Violation
	add := func(p token.Pos, format string, args ...any) {
		out = append(out, Violation{Pos: fset.Position(p), What: fmt.Sprintf(format, args...)})
	}
	names := map[string]string{} // local name -> import path
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if why := bannedPackages[path]; why != "" {
			add(imp.Pos(), "imports %q: %s", path, why)
		}
		if path == "C" {
			add(imp.Pos(), "uses cgo")
		}
		name := path[strings.LastIndex(path, "/")+1:]
		if path == "math/rand/v2" {
			name = "rand"
		}
		if imp.Name != nil {
			name = imp.Name.Name
		}
		names[name] = path
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			add(n.Pos(), "starts a goroutine: cores are driven by their Env, one event at a time")
		case *ast.SelectorExpr:
			id, ok := n.X.(*ast.Ident)
			if !ok {
				return true
			}
			path, ok := names[id.Name]
			if !ok {
				return true
			}
			if why, ok := bannedSelectors[path][n.Sel.Name]; ok {
				add(n.Pos(), "calls %s.%s: %s (use node.Env)", path, n.Sel.Name, why)
			}
		}
		return true
	})
	return out
}
