package vm

import (
	"os"
	"path/filepath"
	"testing"
)

// A remembered KVM probe is used only for the same key, and a damaged
// file is a miss (the probe runs again), never a wrong answer.
func TestKVMProbeIsRememberedPerKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), kvmProbeFile)
	if _, _, hit := readKVMProbe(path, "k1"); hit {
		t.Fatal("a missing file was a hit")
	}
	writeKVMProbe(path, "k1", false, "a KVM guest did not reach init within 6s")
	ok, why, hit := readKVMProbe(path, "k1")
	if !hit || ok || why != "a KVM guest did not reach init within 6s" {
		t.Fatalf("read back (ok %v, why %q, hit %v), want the TCG answer", ok, why, hit)
	}
	if _, _, hit := readKVMProbe(path, "k2"); hit {
		t.Fatal("another key (a rebooted host, a new QEMU) was a hit")
	}
	writeKVMProbe(path, "k2", true, "booted in 0.4s")
	if ok, _, hit := readKVMProbe(path, "k2"); !hit || !ok {
		t.Fatalf("the KVM answer read back as (ok %v, hit %v)", ok, hit)
	}
	for _, bad := range []string{"", "k2\n", "k2\nmaybe\nwhy\n", "k2 kvm why"} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, hit := readKVMProbe(path, "k2"); hit {
			t.Errorf("the damaged file %q was a hit", bad)
		}
	}
	if m, _ := filepath.Glob(path + ".*"); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}
