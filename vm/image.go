package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// KernelMeta is the Debian metapackage whose dependency names the current
// cloud kernel.
const KernelMeta = "linux-image-cloud-amd64"

// guestModules are the modules the guest needs, by module name; their
// dependencies are added and everything is sorted dependencies first.
var guestModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_rng"}

// DefaultCacheDir is where kernels and images are kept between runs:
// $XDG_CACHE_HOME/clusterinfra-vm if set, else /var/cache/clusterinfra-vm.
func DefaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "clusterinfra-vm")
	}
	return "/var/cache/clusterinfra-vm"
}

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Package string // e.g. linux-image-6.1.0-56-cloud-amd64
	Version string // the module directory's name, e.g. 6.1.0-56-cloud-amd64
	Vmlinuz string
	Modules string // lib/modules/<Version>
}

var fetchMu sync.Mutex

// FetchKernel returns the current Debian cloud kernel, unpacked under
// cacheDir. On first use it resolves the versioned package from
// KernelMeta, downloads it with apt-get download (running apt-get update
// once if the package lists lack it) and unpacks it with dpkg-deb -x:
// nothing is installed on the host. log, if not nil, hears what it does.
func FetchKernel(cacheDir string, log io.Writer) (*Kernel, error) {
	fetchMu.Lock()
	defer fetchMu.Unlock()
	if log == nil {
		log = io.Discard
	}
	pkg, err := resolveKernel()
	if err != nil {
		fmt.Fprintf(log, "vm: apt-get update (the package lists do not name the kernel: %v)\n", err)
		if out, err := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("vm: apt-get update: %v: %s", err, out)
		}
		if pkg, err = resolveKernel(); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(cacheDir, "kernel", pkg)
	if k, err := loadKernel(pkg, dir); err == nil {
		return k, nil
	}
	fmt.Fprintf(log, "vm: fetching %s into %s (unpacked, not installed)\n", pkg, dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".fetch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// apt-get download writes into the working directory; _apt cannot
	// write a root-owned temporary directory, so it warns and downloads
	// as root, which is fine here.
	_ = os.Chmod(tmp, 0o755)
	dl := exec.Command("apt-get", "download", "-qq", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: apt-get download %s: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("vm: apt-get download %s left %d .deb files", pkg, len(debs))
	}
	x := filepath.Join(tmp, "x")
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], x).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vm: dpkg-deb -x: %v: %s", err, out)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(x, dir); err != nil {
		return nil, err
	}
	return loadKernel(pkg, dir)
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-\S+)`)

func resolveKernel() (string, error) {
	out, err := exec.Command("apt-cache", "depends", KernelMeta).Output()
	if err != nil {
		return "", fmt.Errorf("vm: apt-cache depends %s: %w", KernelMeta, err)
	}
	m := dependsRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("vm: apt-cache depends %s names no kernel", KernelMeta)
	}
	return string(m[1]), nil
}

func loadKernel(pkg, dir string) (*Kernel, error) {
	vms, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(vms) != 1 || len(mods) != 1 {
		return nil, fmt.Errorf("vm: %s is not an unpacked kernel", dir)
	}
	return &Kernel{Package: pkg, Version: filepath.Base(mods[0]), Vmlinuz: vms[0], Modules: mods[0]}, nil
}

// ModuleOrder returns the .ko files that the named modules need, their
// dependencies first, read from each module's "depends=" modinfo string.
func (k *Kernel) ModuleOrder(names []string) ([]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(k.Modules, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			files[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, depth int) error
	visit = func(n string, depth int) error {
		switch {
		case state[n] == 2:
			return nil
		case state[n] == 1 || depth > 32:
			return fmt.Errorf("vm: module dependency cycle at %s", n)
		}
		p, ok := files[n]
		if !ok {
			return fmt.Errorf("vm: kernel %s has no module %s (built in?)", k.Version, n)
		}
		state[n] = 1
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, d := range modDepends(b) {
			if err := visit(d, depth+1); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modDepends reads the "depends=" string of a module's .modinfo.
func modDepends(ko []byte) []string {
	i := bytes.Index(ko, []byte("\x00depends="))
	if i < 0 {
		return nil
	}
	rest := ko[i+len("\x00depends="):]
	if j := bytes.IndexByte(rest, 0); j >= 0 {
		rest = rest[:j]
	}
	var out []string
	for _, d := range strings.Split(string(rest), ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, strings.ReplaceAll(d, "-", "_"))
		}
	}
	return out
}

// Image is what a guest boots: the kernel and an initramfs.
type Image struct {
	Kernel *Kernel
	// Initrd holds vminit, clusterd and the modules.
	Initrd string
	// Baseline holds only vminit: booted in its poweroff mode, it is the
	// bare VM the lab compares its boot times with.
	Baseline string
	// Rebuilt says the initramfs was written in this call, not found in
	// the cache.
	Rebuilt bool
}

// BuildImage returns the image for these binaries (static, as built by
// BuildBinaries), from the cache when the kernel and both binaries are
// unchanged, else written anew: a changed daemon means a new image.
func BuildImage(cacheDir, clusterd, init string, log io.Writer) (*Image, error) {
	k, err := FetchKernel(cacheDir, log)
	if err != nil {
		return nil, err
	}
	mods, err := k.ModuleOrder(guestModules)
	if err != nil {
		return nil, err
	}
	cd, err := os.ReadFile(clusterd)
	if err != nil {
		return nil, err
	}
	in, err := os.ReadFile(init)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "v2 %s %d %d\n", k.Package, len(cd), len(in))
	h.Write(cd)
	h.Write(in)
	for _, m := range mods {
		fmt.Fprintln(h, filepath.Base(m))
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	img := &Image{Kernel: k,
		Initrd:   filepath.Join(cacheDir, "initrd-"+sum+".cpio"),
		Baseline: filepath.Join(cacheDir, "initrd-base-"+sum+".cpio"),
	}
	if fileExists(img.Initrd) && fileExists(img.Baseline) {
		return img, nil
	}
	img.Rebuilt = true
	if log != nil {
		fmt.Fprintf(log, "vm: writing the guest initramfs %s\n", img.Initrd)
	}
	full := []cpioEntry{
		{name: "bin/clusterd", mode: 0o100755, data: cd},
	}
	var order []string
	for _, m := range mods {
		b, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		full = append(full, cpioEntry{name: "lib/modules/" + filepath.Base(m), mode: 0o100644, data: b})
		order = append(order, filepath.Base(m))
	}
	full = append(full, cpioEntry{name: "modules.order", mode: 0o100644, data: []byte(strings.Join(order, "\n") + "\n")})
	base := skeleton(in)
	if err := writeInitrd(img.Baseline, base); err != nil {
		return nil, err
	}
	if err := writeInitrd(img.Initrd, append(skeleton(in), full...)); err != nil {
		return nil, err
	}
	pruneCache(cacheDir, sum)
	return img, nil
}

// skeleton is the part of every initramfs: directories, the console
// device (the kernel opens it for init's stdio before init can mount
// devtmpfs) and /init.
func skeleton(init []byte) []cpioEntry {
	var es []cpioEntry
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "run", "sys", "tmp", "var", "var/lib"} {
		es = append(es, cpioEntry{name: d, mode: 0o40755})
	}
	es = append(es,
		cpioEntry{name: "dev/console", mode: 0o20600, rdevMajor: 5, rdevMinor: 1},
		cpioEntry{name: "init", mode: 0o100755, data: init},
	)
	return es
}

func writeInitrd(path string, es []cpioEntry) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	// Uncompressed: QEMU loads it straight into guest memory, while an
	// emulated kernel would spend a second or more inflating it.
	err = writeCpio(f, es)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// pruneCache removes initramfs images other than the current one.
func pruneCache(dir, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, "initrd-*"))
	for _, p := range old {
		if !strings.Contains(filepath.Base(p), keep) {
			_ = os.Remove(p)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cpioEntry is one file of a newc archive.
type cpioEntry struct {
	name                 string
	mode                 uint32 // with the file type bits
	data                 []byte
	rdevMajor, rdevMinor uint32
}

// writeCpio writes es as a "newc" cpio archive, the format the kernel
// unpacks into its initramfs.
func writeCpio(w io.Writer, es []cpioEntry) error {
	es = append(slices.Clone(es), cpioEntry{name: "TRAILER!!!"})
	var off int64
	pad := func() error {
		if n := (4 - off%4) % 4; n > 0 {
			k, err := w.Write(make([]byte, n))
			off += int64(k)
			return err
		}
		return nil
	}
	for i, e := range es {
		nlink := 1
		if e.mode&0o170000 == 0o40000 {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
		k, err := io.WriteString(w, hdr+e.name+"\x00")
		off += int64(k)
		if err != nil {
			return err
		}
		if err := pad(); err != nil {
			return err
		}
		k, err = w.Write(e.data)
		off += int64(k)
		if err != nil {
			return err
		}
		if err := pad(); err != nil {
			return err
		}
	}
	return nil
}

// BuildBinaries builds clusterd and vminit as static binaries (the guest
// has no C library) from the module in srcDir into outDir, and returns
// their paths. Go's build cache makes this quick when nothing changed.
func BuildBinaries(srcDir, outDir string) (clusterd, init string, err error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", "", err
	}
	clusterd, init = filepath.Join(outDir, "clusterd"), filepath.Join(outDir, "vminit")
	for _, b := range []struct{ out, pkg string }{{clusterd, "./cmd/clusterd"}, {init, "./cmd/vminit"}} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", b.out, b.pkg)
		cmd.Dir = srcDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("vm: go build %s: %v: %s", b.pkg, err, out)
		}
	}
	return clusterd, init, nil
}

// ModuleRoot finds the directory of the go.mod above dir.
func ModuleRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", errors.New("vm: not inside a Go module (run from the source tree, or pass the binaries)")
		}
		d = p
	}
}
