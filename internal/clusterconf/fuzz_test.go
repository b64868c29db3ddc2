package clusterconf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse holds the parser's two promises on any input: it never
// panics, and whatever it accepts survives Format and Parse unchanged.
// It also holds the error contract: every error names a line of the file
// and is one line of text.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("testdata", "cluster.conf"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(base()))
	f.Add([]byte(strings.ReplaceAll(base("ICS_ROUTE=1.2.3.4:10.0.0.254:7"), "\n", "\r\n")))
	f.Add([]byte(conf(`IFCONFIG="3:192.168.0.9:255.255.255.252"`, `CLUSTER_MASTER="7:192.168.0.10,9:192.168.0.9"`, `CLUSTER_NODENUM="9"`)))
	f.Add([]byte(conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.x,", "CLUSTER_NODENUM=05 # x", "FOO=1", "ICS_ROUTE=default:1.1.1.1:-1")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.conf", data)
		if err != nil {
			checkErrors(t, data, err)
			return
		}
		checkConfig(t, cfg)
		out := cfg.Format()
		back, err := Parse("f.conf", out)
		if err != nil {
			t.Fatalf("Parse(Format()) failed:\n%v\ninput %q\nformatted %q", err, data, out)
		}
		if !sameConfig(cfg, back) {
			t.Fatalf("Parse(Format()) differs (-parsed +reparsed):\n%s\ninput %q", cmp.Diff(cfg, back, ignorePos), data)
		}
		if again := back.Format(); !bytes.Equal(out, again) {
			t.Fatalf("Format is not canonical:\n%q\n%q", out, again)
		}
	})
}

// sameConfig is cmp.Equal(a, b, ignorePos) written out: go-cmp's
// reflection would be most of the cost of an execution, and Go's fuzzing
// minimizer runs the target a great many times per input it keeps.
func sameConfig(a, b *Config) bool {
	if a.NodeNum != b.NodeNum || a.Ifconfig != b.Ifconfig ||
		!slices.Equal(a.Masters, b.Masters) || len(a.Routes) != len(b.Routes) {
		return false
	}
	for i, r := range a.Routes {
		r.Line = b.Routes[i].Line
		if r != b.Routes[i] {
			return false
		}
	}
	return true
}

// checkErrors holds the error contract of Parse.
func checkErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 || len(es) > MaxErrors+1 {
		t.Fatalf("Parse error %T with %d entries: %v", err, len(es), err)
	}
	lines := max(1, bytes.Count(data, []byte("\n"))+1)
	prev := 0
	for _, e := range es {
		if e.File != "f.conf" || e.Line < 1 || e.Line > lines || e.Line < prev {
			t.Fatalf("error %q: bad position (file has %d lines, previous error on %d)", e, lines, prev)
		}
		if e.Msg == "" || strings.ContainsAny(e.Msg, "\n\r") || len(e.Msg) > 400 {
			t.Fatalf("error message not one short line: %q", e.Msg)
		}
		prev = e.Line
	}
}

// checkConfig holds the invariants of a Config that Parse returned.
func checkConfig(t *testing.T, c *Config) {
	t.Helper()
	if c.NodeNum < 1 || c.NodeNum > MaxNodeNum || len(c.Masters) == 0 || len(c.Routes) > MaxRoutes {
		t.Fatalf("bad Config: %+v", c)
	}
	nodes := make(map[int]bool)
	for _, m := range c.Masters {
		if m.Node < 1 || m.Node > MaxNodeNum || nodes[m.Node] || !m.Addr.Is4() {
			t.Fatalf("bad master %+v in %+v", m, c)
		}
		nodes[m.Node] = true
	}
	if !strings.HasPrefix(c.Ifconfig.Device, "eth") {
		t.Fatalf("device %q not in ethN form", c.Ifconfig.Device)
	}
	if n, err := c.Ifconfig.PrefixLen(); err != nil || n < 1 {
		t.Fatalf("netmask %s: %d, %v", c.Ifconfig.Netmask, n, err)
	}
	for _, r := range c.Routes {
		if r.Default == r.Host.IsValid() || !r.Gateway.Is4() || r.Metric < 0 || r.Metric > MaxMetric {
			t.Fatalf("bad route %+v", r)
		}
	}
}
