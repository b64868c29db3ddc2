// Package vm is the host side of the VM lab: it builds the guest image (a
// stock Debian cloud kernel and an initramfs written in Go), creates a
// bridge and taps inside a network namespace of its own, and runs one QEMU
// guest per node over QMP, so that scenario files run on full virtual
// machines as well as in the simulator.
package vm
