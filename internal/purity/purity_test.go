package purity_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterinfra/ci/internal/purity"
)

// TestCoresArePure is the gate: it fails the build when a core reaches
// the world except through node.Env.
func TestCoresArePure(t *testing.T) {
	for _, dir := range []string{"../../clms", "../../ics"} {
		v, err := purity.Check(dir)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, x := range v {
			t.Errorf("%s", x)
		}
	}
}

// TestCheckerCatchesEachViolation shows that the gate can fail.
func TestCheckerCatchesEachViolation(t *testing.T) {
	v, err := purity.Check("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range v {
		got = append(got, x.Pos.String()[strings.LastIndex(x.Pos.String(), "/")+1:]+" "+strings.SplitN(x.What, ":", 2)[0])
	}
	want := []string{
		`bad.go:5:2 imports "net"`,
		`bad.go:10:6 calls time.Now`,
		`bad.go:11:2 starts a goroutine`,
		`bad.go:12:6 calls math/rand/v2.IntN`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("violations (-want +got):\n%s", diff)
	}
}
