package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse holds Parse to its contract on any input: it never panics or
// hangs; a failure is an ErrorList of positioned messages inside the text,
// sorted; a success validates, and Format writes it back in a form that
// parses to the same scenario and formats to the same bytes. The seeds are
// the valid examples in testdata/valid plus the corpus in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "valid", "*.yaml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed scenarios: %v", err)
	}
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := parseWithin(t, src, 5*time.Second)
		if err != nil {
			checkErrorList(t, src, err)
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate rejects:\n%s\n%v", src, err)
		}
		out := s.Format()
		back, err := Parse("fuzz.yaml", out)
		if err != nil {
			t.Fatalf("Format wrote what Parse rejects:\n%s\n%v", out, err)
		}
		if diff := cmp.Diff(s, back, ignorePositions); diff != "" {
			t.Fatalf("Format round trip of\n%s\n(-parsed +reparsed):\n%s", src, diff)
		}
		if again := back.Format(); string(again) != string(out) {
			t.Fatalf("Format is not canonical:\n%s\nthen\n%s", out, again)
		}
	})
}

// checkErrorList checks a Parse error against the contract.
func checkErrorList(t *testing.T, src []byte, err error) {
	t.Helper()
	if errors.Is(err, ErrInternal) {
		t.Fatalf("internal error on\n%q\n%v", src, err)
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is %T, want a non-empty ErrorList: %v", err, err)
	}
	// Positions are counted in the text the user sees, which has no BOM,
	// and where CR LF and a lone CR break lines, as YAML says.
	text := strings.TrimPrefix(string(src), "\uFEFF")
	text = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(text)
	lines := strings.Split(text, "\n")
	for i, e := range list {
		if e.File != "fuzz.yaml" || e.Msg == "" || strings.Contains(e.Msg, "\n") {
			t.Fatalf("malformed error %#v", e)
		}
		if i > 0 && e.Pos().before(list[i-1].Pos()) {
			t.Fatalf("errors out of order:\n%v", err)
		}
		if !utf8.ValidString(text) {
			continue // the one error points at the first bad byte
		}
		if e.Line < 1 || e.Line > len(lines) || e.Col < 1 || e.Col > utf8.RuneCountInString(lines[e.Line-1])+1 {
			t.Fatalf("error %v points outside the text (%d lines):\n%q", e, len(lines), src)
		}
	}
}

// parseWithin parses src, failing the test if that takes longer than
// limit: the fuzzer itself has no notion of a hang.
func parseWithin(t *testing.T, src []byte, limit time.Duration) (*Scenario, error) {
	t.Helper()
	type result struct {
		s   *Scenario
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := Parse("fuzz.yaml", src)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-time.After(limit):
		t.Fatalf("Parse took more than %s on %d bytes:\n%q", limit, len(src), src)
		return nil, nil
	}
}
