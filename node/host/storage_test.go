package host

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

func mustOpen(t *testing.T, dir string) *store {
	t.Helper()
	s, err := openStore(dir)
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s *store, key string) (string, bool) {
	t.Helper()
	v, ok, err := s.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(v), ok
}

func keys(t *testing.T, s *store) []string {
	t.Helper()
	k, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A second store opened on the same directory sees what a restarted
// process would: only what was synced.
func TestStorageUnsyncedWritesAreLost(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := mustOpen(t, dir)
	must(t, s.Put("kept", []byte("1")))
	must(t, s.Put("gone", []byte("1")))
	must(t, s.Sync())
	must(t, s.Put("kept", []byte("2")))
	must(t, s.Put("new", []byte("2")))
	must(t, s.Delete("gone"))

	// Reads see pending writes.
	if v, ok := get(t, s, "kept"); !ok || v != "2" {
		t.Errorf("Get(kept) before Sync = %q, %v; want the pending 2", v, ok)
	}
	if _, ok := get(t, s, "gone"); ok {
		t.Error("a pending Delete is still visible")
	}
	if diff := cmp.Diff([]string{"kept", "new"}, keys(t, s)); diff != "" {
		t.Errorf("Keys with pending writes (-want +got):\n%s", diff)
	}

	crashed := mustOpen(t, dir)
	if v, ok := get(t, crashed, "kept"); !ok || v != "1" {
		t.Errorf("after a crash Get(kept) = %q, %v; want the synced 1", v, ok)
	}
	if _, ok := get(t, crashed, "new"); ok {
		t.Error("an unsynced Put survived the crash")
	}
	if _, ok := get(t, crashed, "gone"); !ok {
		t.Error("an unsynced Delete survived the crash")
	}

	must(t, s.Sync())
	synced := mustOpen(t, dir)
	if diff := cmp.Diff([]string{"kept", "new"}, keys(t, synced)); diff != "" {
		t.Errorf("Keys after Sync and reopen (-want +got):\n%s", diff)
	}
	if v, _ := get(t, synced, "kept"); v != "2" {
		t.Errorf("Get(kept) after Sync = %q, want 2", v)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName("gone"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file of a deleted key is still there: %v", err)
	}
}

func TestStorageKeysSortedAndOddNamesRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := mustOpen(t, dir)
	odd := []string{
		"a/b", "..", ".", "", "ключ", "\x00\xff", "../../etc/passwd", "with space", "UPPER", "upper",
		strings.Repeat("long", 100), // too long for a file name: hashed
		strings.Repeat("x", maxPlainKey), strings.Repeat("x", maxPlainKey+1),
	}
	for i, k := range odd {
		must(t, s.Put(k, []byte{byte(i)}))
	}
	must(t, s.Put("empty value", nil))
	must(t, s.Sync())
	want := append(append([]string{}, odd...), "empty value")
	sorted := append([]string{}, want...)
	slices.Sort(sorted)

	r := mustOpen(t, dir)
	if diff := cmp.Diff(sorted, keys(t, r)); diff != "" {
		t.Errorf("Keys after reopen (-want +got):\n%s", diff)
	}
	for i, k := range odd {
		v, ok, err := r.Get(k)
		if err != nil || !ok || !bytes.Equal(v, []byte{byte(i)}) {
			t.Errorf("Get(%q) = %v, %v, %v; want [%d]", k, v, ok, err, i)
		}
	}
	if v, ok, _ := r.Get("empty value"); !ok || v == nil || len(v) != 0 {
		t.Errorf("an empty value came back as %v, %v", v, ok)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Errorf("%d files for %d keys", len(ents), len(want))
	}
	for _, e := range ents {
		if len(e.Name()) > 255 || strings.ContainsAny(e.Name(), "/\x00") {
			t.Errorf("unsafe file name %q", e.Name())
		}
	}
}

func TestStorageKeepsItsOwnCopies(t *testing.T) {
	s := mustOpen(t, t.TempDir())
	buf := []byte("value")
	must(t, s.Put("k", buf))
	buf[0] = 'X'
	v, _, _ := s.Get("k")
	v[1] = 'Y'
	if got, _ := get(t, s, "k"); got != "value" {
		t.Errorf("stored value changed through the caller's slices: %q", got)
	}
}

// TestStorageJournalReplay: a crash after a multi-key Sync wrote its
// journal but before it updated every key file must not leave a mix.
func TestStorageJournalReplay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := mustOpen(t, dir)
	must(t, s.Put("term", []byte("1")))
	must(t, s.Put("vote", []byte("n1")))
	must(t, s.Put("old", []byte("x")))
	must(t, s.Sync())
	// Simulate the crash: the journal is durable, only "term" was applied,
	// and a temporary file was left half written.
	batch := map[string][]byte{"term": []byte("2"), "vote": []byte("n3"), "old": nil}
	must(t, writeFileDurable(dir, journalFile, encodeJournal(batch)))
	must(t, writeFileDurable(dir, fileName("term"), encodeRecord("term", []byte("2"))))
	must(t, os.WriteFile(filepath.Join(dir, tmpPrefix+fileName("vote")), []byte("torn"), 0o600))

	r := mustOpen(t, dir)
	got := map[string]string{}
	for _, k := range keys(t, r) {
		got[k], _ = get(t, r, k)
	}
	if diff := cmp.Diff(map[string]string{"term": "2", "vote": "n3"}, got); diff != "" {
		t.Errorf("after replay (-want +got):\n%s", diff)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() == journalFile || strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("%s left after recovery", e.Name())
		}
	}
	// And a Sync of several keys leaves no journal behind.
	must(t, r.Put("a", nil))
	must(t, r.Put("b", nil))
	must(t, r.Sync())
	if _, err := os.Stat(filepath.Join(dir, journalFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal after a completed Sync: %v", err)
	}
}

func TestStorageRefusesCorruptFiles(t *testing.T) {
	for _, damage := range []struct {
		name string
		do   func(dir string) error
	}{
		{"flipped byte", func(dir string) error {
			p := filepath.Join(dir, fileName("k"))
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/2] ^= 1
			return os.WriteFile(p, b, 0o600)
		}},
		{"key in the wrong file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, fileName("other")), encodeRecord("k", []byte("v")), 0o600)
		}},
		{"stray file", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "README"), nil, 0o600)
		}},
		{"corrupt journal", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, journalFile), []byte("CIJN\x01garbage"), 0o600)
		}},
	} {
		t.Run(damage.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s := mustOpen(t, dir)
			must(t, s.Put("k", []byte("value")))
			must(t, s.Sync())
			must(t, damage.do(dir))
			if _, err := openStore(dir); err == nil || !strings.HasPrefix(err.Error(), "host: ") {
				t.Errorf("openStore on a damaged store: %v", err)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord("key", []byte("value")))
	f.Add(encodeRecord("", nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, v, err := decodeRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeRecord(k, v), b) {
			t.Fatalf("re-encoding %x differs", b)
		}
	})
}

func FuzzDecodeJournal(f *testing.F) {
	f.Add(encodeJournal(map[string][]byte{"a": []byte("1"), "b": nil}))
	f.Add(encodeJournal(map[string][]byte{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		batch, err := decodeJournal(b)
		if err != nil {
			return
		}
		// A journal may name a key twice; only distinct-key ones
		// re-encode to the same bytes.
		again, err := decodeJournal(encodeJournal(batch))
		if err != nil || !cmp.Equal(batch, again) {
			t.Fatalf("journal %x does not survive re-encoding: %v", b, err)
		}
	})
}
