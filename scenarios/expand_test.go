package scenarios

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExpand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("name: x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	lib := filepath.Join(dir, "lib")
	for _, name := range []string{
		"lib/b-partition.yaml", "lib/a-crash.yaml", "lib/10-late.yaml", "lib/2-early.yaml",
		"lib/notes.txt", "lib/old.yml", "lib/.hidden.yaml", "lib/vm/nested.yaml",
	} {
		write(name)
	}
	if err := os.Mkdir(filepath.Join(lib, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	single := write("other/one.scenario")

	got, err := Expand([]string{single, lib})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		single, // a file is taken whatever its name
		// Name order (byte-wise, as ls does in the C locale); not
		// recursive; no dot files, no other extensions, no directories.
		filepath.Join(lib, "10-late.yaml"),
		filepath.Join(lib, "2-early.yaml"),
		filepath.Join(lib, "a-crash.yaml"),
		filepath.Join(lib, "b-partition.yaml"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Expand (-want +got):\n%s", diff)
	}

	// Every problem is reported, and what was found is still returned.
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err = Expand([]string{filepath.Join(dir, "missing.yaml"), empty, single})
	if err == nil {
		t.Fatal("Expand of a missing file and an empty directory succeeded")
	}
	msg := err.Error()
	for _, part := range []string{"scenarios: stat " + filepath.Join(dir, "missing.yaml"), "scenarios: " + empty + ": no *.yaml scenario files"} {
		if !strings.Contains(msg, part) {
			t.Errorf("error %q does not mention %q", msg, part)
		}
	}
	if diff := cmp.Diff([]string{single}, got); diff != "" {
		t.Errorf("files found despite errors (-want +got):\n%s", diff)
	}
}
