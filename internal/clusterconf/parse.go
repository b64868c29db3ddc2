package clusterconf

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// required lists the keys a file must set, in the order missing ones are
// reported.
var required = []string{KeyNodeNum, KeyMaster, KeyIfconfig}

// known reports whether key is one of the four keys.
func known(key string) bool {
	return key == KeyRoute || slices.Contains(required, key)
}

// ParseFile reads and parses the file at path. It reads at most
// MaxFileBytes+1 bytes, so that a wrong path (/dev/zero, a huge log)
// fails fast. A file that cannot be read gives an error that is not an
// Errors.
func ParseFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clusterconf: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("clusterconf: read %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse parses data, the content of the file called name (used only in
// errors and Config.Source). It returns a Config only if the file is
// valid; otherwise it returns an Errors listing every problem found, in
// line order, at most MaxErrors of them plus a last one saying that it
// stopped.
func Parse(name string, data []byte) (*Config, error) {
	if len(data) > MaxFileBytes {
		line := 1 + bytes.Count(data[:MaxFileBytes], []byte("\n"))
		return nil, Errors{{File: name, Line: line,
			Msg: fmt.Sprintf("file is longer than %d bytes; a cluster.conf is a few lines", MaxFileBytes)}}
	}
	p := &parser{seen: make(map[string]int)}
	p.cfg.Source.File = name
	// Editors on Windows may add a byte order mark, which the original
	// shell scripts would have choked on. Say so plainly, then read on so
	// that the other problems are reported too.
	if rest, ok := bytes.CutPrefix(data, []byte("\uFEFF")); ok {
		p.errorf(1, "file starts with a byte order mark (U+FEFF); save it as plain UTF-8 or ASCII")
		data = rest
	}
	n := 0
	for len(data) > 0 && !p.full {
		n++
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		p.line(n, line)
	}
	if p.full {
		return nil, p.errs
	}
	// A missing key has no line of its own: report it on the last line,
	// where it would be added (see the package doc).
	last := max(n, 1)
	for _, k := range required {
		if _, ok := p.seen[k]; !ok {
			p.errorf(last, "missing required key %s", k)
		}
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	cfg := p.cfg
	return &cfg, nil
}

// parser holds the state of one Parse.
type parser struct {
	cfg    Config
	errs   Errors
	full   bool           // MaxErrors reached: stop
	seen   map[string]int // key -> line of its first setting
	routes int            // ICS_ROUTE lines seen, valid or not
}

// errorf records a problem on line. Lines are visited in order and each
// line's problems are found in order, so errs stays sorted by line.
func (p *parser) errorf(line int, format string, args ...any) {
	if p.full {
		return
	}
	if len(p.errs) == MaxErrors {
		p.errs = append(p.errs, &Error{File: p.cfg.Source.File, Line: line,
			Msg: fmt.Sprintf("too many errors (more than %d); stopping", MaxErrors)})
		p.full = true
		return
	}
	p.errs = append(p.errs, &Error{File: p.cfg.Source.File, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// line parses line n (1-based), without its '\n'.
func (p *parser) line(n int, b []byte) {
	b = bytes.TrimSuffix(b, []byte("\r"))
	if msg := badBytes(b); msg != "" {
		p.errorf(n, "%s", msg)
		// Still count the key, if it can be told, so that one bad line
		// does not also cause a "missing" or a wrong "repeated" report.
		s := strings.TrimLeft(string(b), " \t")
		if k, _, ok := strings.Cut(s, "="); ok && known(k) {
			p.account(n, k)
		}
		return
	}
	s := strings.Trim(string(b), " \t")
	if s == "" || s[0] == '#' {
		return
	}
	key, raw, ok := strings.Cut(s, "=")
	if !ok {
		p.errorf(n, "no '=' in %s: want KEY=VALUE", quote(s))
		return
	}
	k := strings.TrimRight(key, " \t")
	switch {
	case k == "":
		p.errorf(n, "no key before '=' in %s", quote(s))
		return
	case !validKey(k):
		p.errorf(n, "bad key %s: a key is letters, digits and '_', with no spaces", quote(k))
		return
	case !known(k):
		p.unknown(n, k)
		return
	}
	first := p.account(n, k)
	// In the shell the original file was written for, "KEY = value" is
	// not an assignment at all, and "KEY= value" sets KEY to "".
	if k != key {
		p.errorf(n, "%s: space before '='", k)
		return
	}
	if v := strings.TrimLeft(raw, " \t"); v != raw {
		p.errorf(n, "%s: space after '='", k)
		return
	}
	v, msg := unquote(raw)
	if msg != "" {
		p.errorf(n, "%s: %s: %s", k, quote(raw), msg)
		return
	}
	switch k {
	case KeyNodeNum:
		p.nodeNum(n, v, first)
	case KeyMaster:
		p.masters(n, v, first)
	case KeyIfconfig:
		p.ifconfig(n, v, first)
	case KeyRoute:
		p.route(n, v, first)
	}
}

// unknown reports an unknown key, with a hint when only its case is
// wrong.
func (p *parser) unknown(n int, k string) {
	for _, want := range append(slices.Clone(required), KeyRoute) {
		if strings.EqualFold(k, want) {
			p.errorf(n, "unknown key %s (keys are case-sensitive: %s)", quote(k), want)
			return
		}
	}
	p.errorf(n, "unknown key %s: want %s, %s, %s or %s", quote(k), KeyNodeNum, KeyMaster, KeyIfconfig, KeyRoute)
}

// account notes that line n sets key. It reports a repeated key and the
// ICS_ROUTE line past MaxRoutes, and returns whether the value should be
// kept (it is still parsed either way, so that its own problems are
// reported too).
func (p *parser) account(n int, key string) bool {
	if key == KeyRoute {
		p.routes++
		if p.routes == MaxRoutes+1 {
			p.errorf(n, "%s: more than %d routes", KeyRoute, MaxRoutes)
		}
		p.seen[key] = n
		return p.routes <= MaxRoutes
	}
	if first, ok := p.seen[key]; ok {
		p.errorf(n, "%s: repeated key (first set on line %d)", key, first)
		return false
	}
	p.seen[key] = n
	return true
}

// badBytes checks the bytes of a line, returning a message if the line
// is too long or holds something no valid line holds. It runs before
// anything else looks at the line, so that nothing after it has to care.
func badBytes(b []byte) string {
	if len(b) > MaxLineBytes {
		return fmt.Sprintf("line is %d bytes long; the limit is %d", len(b), MaxLineBytes)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "line contains a NUL byte"
	}
	if !utf8.Valid(b) {
		return "line is not valid UTF-8"
	}
	for _, r := range string(b) {
		// A tab is blank space; any other control character (a lone
		// '\r' from an old Mac editor, an escape sequence) is invisible
		// and changes what the line means.
		if r != '\t' && unicode.IsControl(r) {
			return fmt.Sprintf("line contains control character %q", r)
		}
	}
	return ""
}

// validKey reports whether k is a shell variable name.
func validKey(k string) bool {
	for i, c := range []byte(k) {
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return k != ""
}

// unquote returns the value a raw value stands for, or a message saying
// why it is malformed. Only the whole value may be quoted: the shell would
// join "a"b into ab, which is never what was meant here.
func unquote(raw string) (string, string) {
	if i := strings.IndexAny(raw, " \t"); i >= 0 {
		if strings.HasPrefix(strings.TrimLeft(raw[i:], " \t"), "#") {
			return "", "space in value (a comment must be on a line of its own)"
		}
		return "", "space in value"
	}
	v := raw
	if strings.HasPrefix(v, `"`) {
		if len(v) < 2 || !strings.HasSuffix(v, `"`) {
			return "", `unbalanced quotes: a value that starts with '"' must end with '"'`
		}
		v = v[1 : len(v)-1]
		if strings.Contains(v, `"`) {
			return "", `unbalanced quotes: a quoted value may not contain '"'`
		}
	} else if strings.Contains(v, `"`) {
		return "", "unbalanced quotes: quote the whole value or nothing"
	}
	if strings.Contains(v, "'") {
		return "", "single quotes are not supported; use double quotes"
	}
	if v == "" {
		return "", "empty value"
	}
	return v, ""
}

// nodeNum parses CLUSTER_NODENUM.
func (p *parser) nodeNum(n int, v string, keep bool) {
	node, msg := parseNode(v)
	if msg != "" {
		p.errorf(n, "%s: %s", KeyNodeNum, msg)
		return
	}
	if keep {
		p.cfg.NodeNum = node
		p.cfg.Source.NodeNum = n
	}
}

// masters parses CLUSTER_MASTER, reporting each bad entry.
func (p *parser) masters(n int, v string, keep bool) {
	var ms []Master
	ok := true
	byNode := make(map[int]netip.Addr)
	byAddr := make(map[netip.Addr]int)
	for i, e := range strings.Split(v, ",") {
		if e == "" {
			p.errorf(n, "%s: empty entry %d (stray comma?)", KeyMaster, i+1)
			ok = false
			continue
		}
		bad := func(format string, args ...any) {
			p.errorf(n, "%s: %s: %s", KeyMaster, quote(e), fmt.Sprintf(format, args...))
			ok = false
		}
		ns, as, found := strings.Cut(e, ":")
		if !found || strings.Contains(as, ":") {
			bad("want <node>:<ip>")
			continue
		}
		node, msg := parseNode(ns)
		if msg != "" {
			bad("%s", msg)
		}
		addr, msg := parseAddr(as)
		if msg != "" {
			bad("%s", msg)
		}
		if node == 0 || !addr.IsValid() {
			continue
		}
		if _, dup := byNode[node]; dup {
			bad("node %d is listed twice", node)
			continue
		}
		if other, dup := byAddr[addr]; dup {
			bad("address %s is also node %d's", addr, other)
			continue
		}
		byNode[node], byAddr[addr] = addr, node
		ms = append(ms, Master{Node: node, Addr: addr})
	}
	if ok && keep {
		p.cfg.Masters = ms
		p.cfg.Source.Masters = n
	}
}

// ifconfig parses IFCONFIG, reporting each bad field.
func (p *parser) ifconfig(n int, v string, keep bool) {
	bad := func(format string, args ...any) {
		p.errorf(n, "%s: %s: %s", KeyIfconfig, quote(v), fmt.Sprintf(format, args...))
	}
	f := strings.Split(v, ":")
	if len(f) != 3 {
		bad("want <device>:<ip>:<netmask>")
		return
	}
	dev, msg := parseDevice(f[0])
	if msg != "" {
		bad("%s", msg)
	}
	addr, amsg := parseAddr(f[1])
	if amsg != "" {
		bad("%s", amsg)
	}
	mask, bits, mmsg := parseNetmask(f[2])
	if mmsg != "" {
		bad("%s", mmsg)
	}
	if msg != "" || amsg != "" || mmsg != "" {
		return
	}
	// An interface given its subnet's network or broadcast address is a
	// typo that the kernel would accept and the cluster would not survive.
	if bits <= 30 {
		pfx := netip.PrefixFrom(addr, bits).Masked()
		switch addr {
		case pfx.Addr():
			bad("address %s is the network address of %s", addr, pfx)
			return
		case lastAddr(pfx):
			bad("address %s is the broadcast address of %s", addr, pfx)
			return
		}
	}
	if keep {
		p.cfg.Ifconfig = Iface{Device: dev, Addr: addr, Netmask: mask}
		p.cfg.Source.Ifconfig = n
	}
}

// route parses one ICS_ROUTE, reporting each bad field.
func (p *parser) route(n int, v string, keep bool) {
	bad := func(format string, args ...any) {
		p.errorf(n, "%s: %s: %s", KeyRoute, quote(v), fmt.Sprintf(format, args...))
	}
	f := strings.Split(v, ":")
	if len(f) != 3 {
		bad("want <default|host ip>:<gateway ip>:<metric>")
		return
	}
	r := Route{Line: n}
	ok := true
	if f[0] == "default" {
		r.Default = true
	} else {
		var msg string
		if r.Host, msg = parseAddr(f[0]); msg != "" {
			bad("destination: %s (want default or a host IP address)", msg)
			ok = false
		}
	}
	var msg string
	if r.Gateway, msg = parseAddr(f[1]); msg != "" {
		bad("gateway: %s", msg)
		ok = false
	}
	if r.Metric, msg = parseUint(f[2], 0, MaxMetric); msg != "" {
		bad("bad metric %s: %s", quote(f[2]), msg)
		ok = false
	}
	if !ok {
		return
	}
	// The kernel refuses a second route to the same place with the same
	// metric, so this would fail at boot; fail now instead.
	for _, o := range p.cfg.Routes {
		if o.Default == r.Default && o.Host == r.Host && o.Metric == r.Metric {
			bad("route to %s with metric %d already set on line %d", r.dest(), r.Metric, o.Line)
			return
		}
	}
	if keep {
		p.cfg.Routes = append(p.cfg.Routes, r)
	}
}

// parseNode parses a node number, 1..MaxNodeNum.
func parseNode(s string) (int, string) {
	v, msg := parseUint(s, 1, MaxNodeNum)
	if msg != "" {
		return 0, fmt.Sprintf("bad node number %s: %s", quote(s), msg)
	}
	return v, ""
}

// parseUint parses a decimal number in lo..hi (0 <= lo <= hi < 1<<31).
func parseUint(s string, lo, hi int) (int, string) {
	if s == "" {
		return 0, "empty"
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, "not a decimal number"
		}
	}
	// The original file was read by shell scripts, whose arithmetic
	// takes 010 for octal 8.
	if len(s) > 1 && s[0] == '0' {
		return 0, "leading zero"
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < int64(lo) || v > int64(hi) {
		return 0, fmt.Sprintf("out of range %d..%d", lo, hi)
	}
	return int(v), ""
}

// parseAddr parses a unicast IPv4 address: not in 0.0.0.0/8 ("this
// network", which no packet may be sent to), not multicast and not the
// limited broadcast address. Loopback is allowed, for clusters of
// daemons on one host.
func parseAddr(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Sprintf("bad IP address %s", quote(s))
	}
	if a.As4()[0] == 0 || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Sprintf("bad IP address %s: not a unicast address", quote(s))
	}
	return a, ""
}

// parseNetmask parses a contiguous IPv4 netmask that leaves at least one
// network bit, returning it and its prefix length.
func parseNetmask(s string) (netip.Addr, int, string) {
	m, err := netip.ParseAddr(s)
	if err != nil || !m.Is4() {
		return netip.Addr{}, 0, fmt.Sprintf("bad netmask %s: not an IPv4 address", quote(s))
	}
	bits, err := Iface{Netmask: m}.PrefixLen()
	if err != nil {
		return netip.Addr{}, 0, fmt.Sprintf("bad netmask %s: not contiguous", quote(s))
	}
	if bits == 0 {
		return netip.Addr{}, 0, fmt.Sprintf("bad netmask %s: no network bits", quote(s))
	}
	return m, bits, ""
}

// maxDevice is the largest device number: "eth" and ten digits fit in
// Linux's 15-byte interface names.
const maxDevice = 1<<31 - 1

// parseDevice parses "ethN" or "N", returning "ethN".
func parseDevice(s string) (string, string) {
	num := strings.TrimPrefix(s, "eth")
	if _, msg := parseUint(num, 0, maxDevice); msg != "" {
		return "", fmt.Sprintf("bad device %s: want ethN or a number N (%s)", quote(s), msg)
	}
	return "eth" + num, ""
}

// lastAddr returns the highest address of p, its broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range 4 {
		a[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(a)
}

// quote quotes s for a message, cut short if it is long, so that one
// absurd value does not make an absurd message.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
