package clusterconf

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The keys of cluster.conf. They are case-sensitive, as shell variables
// are.
const (
	KeyNodeNum  = "CLUSTER_NODENUM"
	KeyMaster   = "CLUSTER_MASTER"
	KeyIfconfig = "IFCONFIG"
	KeyRoute    = "ICS_ROUTE"
)

// Limits. Each bounds something a hostile or corrupt file could make
// unbounded, so that reading any file takes bounded time and memory.
const (
	// MaxNodeNum is the largest node number (node.MaxID; a test keeps the
	// two equal). The package does not import node so that it stays a leaf.
	MaxNodeNum = 1024
	// MaxRoutes is the number of ICS_ROUTE lines allowed, as in OpenSSI.
	MaxRoutes = 32
	// MaxMetric is the largest route metric: the kernel keeps it in 32
	// bits, and int32 is safe everywhere.
	MaxMetric = 1<<31 - 1
	// MaxLineBytes bounds a line (without its line ending). A real line is
	// under 100 bytes; 4096 leaves room for any master list of sane size.
	MaxLineBytes = 4096
	// MaxFileBytes bounds the file, so that ParseFile on /dev/zero or a
	// log file fails fast instead of filling memory.
	MaxFileBytes = 1 << 20
	// MaxErrors bounds the errors Parse reports; past it the file is not
	// a cluster.conf and more messages would only bury the first ones.
	MaxErrors = 100
)

// ErrNetmask is wrapped by the error Iface.PrefixLen returns for a mask
// that is not a run of ones followed by zeros.
var ErrNetmask = errors.New("clusterconf: bad netmask")

// Config is the content of a valid cluster.conf.
type Config struct {
	// NodeNum is this node's number (CLUSTER_NODENUM), 1..MaxNodeNum.
	NodeNum int
	// Masters are the candidate masters (CLUSTER_MASTER) in file order,
	// which CLMS uses as their order of preference. Node numbers and
	// addresses are unique.
	Masters []Master
	// Ifconfig is the ICS interface (IFCONFIG).
	Ifconfig Iface
	// Routes are the static routes over the ICS interface (ICS_ROUTE), in
	// file order, at most MaxRoutes.
	Routes []Route
	// Source says where each setting was read, so that checks made later
	// (against flags or the host) can name the line too. It is not part
	// of the configuration: Format ignores it.
	Source Source
}

// Source records where the settings of a Config came from. A zero line
// means the setting was not read from the file (a flag set it, say).
type Source struct {
	File     string // the name given to Parse
	NodeNum  int    // line of CLUSTER_NODENUM
	Masters  int    // line of CLUSTER_MASTER
	Ifconfig int    // line of IFCONFIG
}

// Errorf makes an error about line of the file, in the same form Parse
// uses, for checks that happen after parsing:
//
//	cfg.Source.Errorf(cfg.Source.Ifconfig, "IFCONFIG: no device %s on this host", dev)
func (s Source) Errorf(line int, format string, args ...any) *Error {
	return &Error{File: s.File, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Master is one candidate master: a node number and the IPv4 address of
// its ICS interface.
type Master struct {
	Node int
	Addr netip.Addr
}

// Iface is the ICS network interface.
type Iface struct {
	// Device is always in "ethN" form; the file may say just "N".
	Device string
	// Addr is this node's ICS address.
	Addr netip.Addr
	// Netmask is a contiguous mask in Addr's family, such as 255.255.255.0.
	Netmask netip.Addr
}

// PrefixLen returns the number of leading one bits of the netmask (24 for
// 255.255.255.0). It fails, wrapping ErrNetmask, if the mask is not in
// the address's family or not contiguous; Parse never returns such a mask,
// but an Iface built by hand or from a flag may hold one.
func (i Iface) PrefixLen() (int, error) {
	m := i.Netmask
	if !m.IsValid() || m.Zone() != "" {
		return 0, fmt.Errorf("%w %q", ErrNetmask, m.String())
	}
	if i.Addr.IsValid() && i.Addr.BitLen() != m.BitLen() {
		return 0, fmt.Errorf("%w %s: not in the family of address %s", ErrNetmask, m, i.Addr)
	}
	ones, zero := 0, false
	for _, b := range m.AsSlice() {
		for bit := 7; bit >= 0; bit-- {
			switch set := b>>bit&1 == 1; {
			case set && zero:
				return 0, fmt.Errorf("%w %s: not contiguous", ErrNetmask, m)
			case set:
				ones++
			default:
				zero = true
			}
		}
	}
	return ones, nil
}

// Prefix returns the interface address with its prefix length, as
// "ip addr" shows it (10.0.0.2/24), for configuring the interface.
func (i Iface) Prefix() (netip.Prefix, error) {
	n, err := i.PrefixLen()
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(i.Addr, n), nil
}

// Route is one static route over the ICS interface.
type Route struct {
	// Default is set for the default route; Host is then the zero Addr.
	Default bool
	// Host is the destination of a host route.
	Host netip.Addr
	// Gateway is the next hop.
	Gateway netip.Addr
	// Metric is the route's metric, 0..MaxMetric.
	Metric int
	// Line is where the route was read (0 if not from a file). Like
	// Config.Source it is not part of the configuration.
	Line int
}

// dest writes the route's destination as the file does.
func (r Route) dest() string {
	if r.Default {
		return "default"
	}
	return r.Host.String()
}

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int // 1-based; see the package doc for missing keys
	Msg  string
}

// Error returns "FILE:LINE: message". An Error with no line (Line 0,
// which Parse never makes) prints as "FILE: message".
func (e *Error) Error() string {
	if e.Line <= 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Errors is every problem Parse found in a file, in line order.
type Errors []*Error

// Error returns one "FILE:LINE: message" per line, without a final
// newline.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
