package vm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterinfra/ci/node/libcluster"
	"github.com/clusterinfra/ci/vm"
)

var imgOnce struct {
	sync.Once
	img *vm.Image
	err error
}

// image builds (or takes from the cache) the guest image, or skips the
// test when this machine cannot run VMs.
func image(t *testing.T) *vm.Image {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("vm: needs root (namespaces, taps); run `make vm` or go test as root")
	}
	if _, err := exec.LookPath(vm.QEMU); err != nil {
		t.Skip("vm: " + vm.QEMU + " is not installed (`make vm` installs it: apt-get install qemu-system-x86)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("vm: mkfs.ext4 is not installed (e2fsprogs)")
	}
	imgOnce.Do(func() {
		root, err := vm.ModuleRoot(".")
		if err != nil {
			imgOnce.err = err
			return
		}
		out, err := os.MkdirTemp("", "vm-test-bin-")
		if err != nil {
			imgOnce.err = err
			return
		}
		cd, in, err := vm.BuildBinaries(root, out)
		if err != nil {
			imgOnce.err = err
			return
		}
		imgOnce.img, imgOnce.err = vm.BuildImage(vm.DefaultCacheDir(), cd, in, os.Stderr)
	})
	if imgOnce.err != nil {
		t.Fatal(imgOnce.err)
	}
	return imgOnce.img
}

// noLeftovers fails the test if anything of this process's labs remains.
func noLeftovers(t *testing.T) {
	t.Helper()
	ls, err := vm.Leftovers(true)
	if err != nil {
		t.Fatal(err)
	}
	pfx := vm.NamePrefix + itoa(os.Getpid()) + "-"
	for _, l := range ls {
		if len(l.Name) >= len(pfx) && l.Name[:len(pfx)] == pfx {
			t.Errorf("left behind: %s", l)
		}
	}
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestOneVM boots one node and reads its membership through the API.
func TestOneVM(t *testing.T) {
	img := image(t)
	dir := t.TempDir()
	c, err := vm.NewCluster(vm.Options{Name: vm.NewName(), Nodes: []int{1}, Masters: []int{1}, Image: img, Dir: dir,
		Args: []string{"-join-timeout", "24h", "-heartbeat", "200ms", "-nodedown-after", "2s", "-election-timeout", "2s"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		noLeftovers(t)
		if t.Failed() {
			b, _ := os.ReadFile(c.Console(1))
			t.Logf("console of n1:\n%s", b)
		}
	})
	start := time.Now()
	if err := c.Boot(1); err != nil {
		t.Fatal(err)
	}
	p, err := c.NewProber()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cl := libcluster.New(c.APISocket(1))
	defer cl.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cl.Status(ctx)
		cancel()
		if err == nil && len(st.Members) == 1 && st.Quorate {
			t.Logf("n1 is a quorate member after %v: %+v", time.Since(start), st.Members)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no quorate member after 90s: %v %+v", err, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ck, err := p.Probe(1, 4, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("clock of n1: offset %v, rtt %v", ck.Offset, ck.RTT)
	if err := c.Crash(1); err != nil {
		t.Fatal(err)
	}
}

// TestMain doubles as the helper process of the cleanup tests: with
// VM_TEST_HELPER set it boots one VM and waits to be killed or
// interrupted.
func TestMain(m *testing.M) {
	if mode := os.Getenv("VM_TEST_HELPER"); mode != "" {
		helper(mode)
		return
	}
	os.Exit(m.Run())
}

func helper(mode string) {
	var img vm.Image
	if err := json.Unmarshal([]byte(os.Getenv("VM_TEST_IMAGE")), &img); err != nil {
		fmt.Println("bad image:", err)
		os.Exit(2)
	}
	c, err := vm.NewCluster(vm.Options{Name: vm.NewName(), Nodes: []int{1, 2}, Masters: []int{1}, Image: &img, Dir: os.Getenv("VM_TEST_DIR")})
	if err != nil {
		fmt.Println(err)
		os.Exit(2)
	}
	if mode == "int" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt)
		go func() {
			<-sigs
			vm.CloseAll()
			os.Exit(130)
		}()
	}
	for _, id := range []int{1, 2} {
		if err := c.Boot(id); err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
	}
	fmt.Println("ready", c.Network().Name())
	time.Sleep(2 * time.Minute)
	os.Exit(3)
}

// startHelper runs this test binary as a helper that boots two VMs, and
// returns it once they run, with the name of its network.
func startHelper(t *testing.T, mode string) (*exec.Cmd, string) {
	img := image(t)
	b, _ := json.Marshal(img)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VM_TEST_HELPER="+mode, "VM_TEST_IMAGE="+string(b), "VM_TEST_DIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _, _ = vm.Sweep() })
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		name, ok := strings.CutPrefix(l, "ready ")
		if !ok {
			t.Fatalf("helper: %s", l)
		}
		return cmd, name
	case <-time.After(60 * time.Second):
		t.Fatal("helper did not start its VMs within 60s")
	}
	return nil, ""
}

// leftoversOf lists what remains of the lab whose network is name.
func leftoversOf(t *testing.T, name string) []vm.Leftover {
	t.Helper()
	ls, err := vm.Leftovers(true)
	if err != nil {
		t.Fatal(err)
	}
	var out []vm.Leftover
	for _, l := range ls {
		if strings.HasPrefix(l.Name, name) {
			out = append(out, l)
		}
	}
	return out
}

// waitGone waits up to 10s until nothing of the lab name remains.
func waitGone(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls := leftoversOf(t, name)
		if len(ls) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %v", ls)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCleanupOnInterrupt: Ctrl-C (SIGINT, handled with CloseAll as
// clusterlab does) leaves no QEMU process, namespace, bridge or tap.
func TestCleanupOnInterrupt(t *testing.T) {
	cmd, name := startHelper(t, "int")
	if len(leftoversOf(t, name)) < 3 {
		t.Fatalf("the helper's lab is not all there: %v", leftoversOf(t, name))
	}
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	waitGone(t, name)
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		t.Fatalf("namespace %s remains", name)
	}
}

// TestCleanupAfterKill: a lab killed outright loses its QEMU processes
// at once (they die with it), and Sweep removes its namespace.
func TestCleanupAfterKill(t *testing.T) {
	cmd, name := startHelper(t, "kill")
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := 0
		for _, l := range leftoversOf(t, name) {
			if l.Kind == "qemu" {
				q++
			}
		}
		if q == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU outlived its lab: %v", leftoversOf(t, name))
		}
		time.Sleep(100 * time.Millisecond)
	}
	swept, err := vm.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swept %v", swept)
	waitGone(t, name)
}
