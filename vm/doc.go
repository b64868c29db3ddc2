// Package vm is the host side of the VM lab: it builds the guest image (a
// stock Debian cloud kernel and an initramfs written in Go), creates a
// bridge and taps inside a network namespace of its own, and runs one QEMU
// guest per node over QMP, so that scenario files run on full virtual
// machines as well as in the simulator (scenarios/lab.RunVM drives it).
//
// # The image
//
// FetchKernel resolves linux-image-cloud-amd64 to its versioned package,
// downloads it with `apt-get download` and unpacks it with `dpkg-deb -x`
// into the cache (DefaultCacheDir); nothing is installed on the host.
// BuildImage writes a newc cpio initramfs itself: /init is cmd/vminit (a
// static Go binary), /bin/clusterd, and the virtio modules the guest needs
// (virtio_pci, virtio_net, virtio_blk, virtio_rng and what their modinfo
// "depends=" names, in dependency order). The image is cached under a hash
// of the kernel and both binaries: a changed daemon means a new image. A
// second, bare initramfs (vminit alone) is the boot-time baseline.
//
// # One VM
//
// Each node has a fixed address (Addr: 10.214.0.N/16), MAC (MAC) and tap
// (TapName). QEMU boots the kernel directly (-kernel, -initrd) with the
// node's whole configuration in one kernel parameter (package vm/guest),
// a raw disk of its own formatted ext4 on first boot and kept until the
// cluster closes (clusterd's state: a candidate must not forget its votes),
// its serial console appended to a log file, and a QMP socket. Crash is
// QMP quit, pause and resume QMP stop and cont (go-qemu's qmp package).
// KVM is used when ProbeKVM's trial boot works; otherwise TCG.
//
// # The network
//
//	          namespace civm-<pid>-<seq>
//	+-------------------------------------------+
//	|  br0 10.214.255.254 (the lab's own side)  |
//	|    tap1        tap2        tap3    ...    |
//	+-----|-----------|-----------|-------------+
//	   QEMU n1     QEMU n2     QEMU n3
//
// The taps are opened inside the namespace and handed to QEMU as file
// descriptors, so QEMU itself needs no namespace and a tap vanishes with
// its QEMU. Cuts, partitions and loss are nftables rules in a bridge-family
// table matching the input and output taps (Network.SetFilters); the lab's
// own traffic (the daemons' API, clock probes) goes to the bridge's
// address and never crosses them. The lab reaches the guests from inside
// the namespace (Network.DialContext), and Cluster.APISocket offers each
// guest's clusterd API as a Unix socket on the host for libcluster.
//
// # Cleanup
//
// Cluster.Close kills every QEMU and removes the namespace, which takes
// the bridge, the rules and the taps with it. QEMU dies with the lab
// process (Pdeathsig); CloseAll is for a Ctrl-C handler; Sweep removes the
// namespaces and QEMU processes of labs whose process is gone.
//
// # Example
//
//	cd, in, _ := vm.BuildBinaries(root, binDir)
//	img, _ := vm.BuildImage(vm.DefaultCacheDir(), cd, in, os.Stderr)
//	c, _ := vm.NewCluster(vm.Options{Name: vm.NewName(), Nodes: []int{1, 2, 3},
//		Masters: []int{1, 2, 3}, Image: img, Dir: runDir})
//	defer c.Close()
//	for _, n := range []int{1, 2, 3} {
//		_ = c.Boot(n)
//	}
//	st, _ := libcluster.New(c.APISocket(1)).Status(ctx)
package vm
