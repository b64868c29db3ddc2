package clusterconf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/clusterinfra/ci/node"
)

// cmpAddr compares netip.Addr values, which go-cmp cannot look inside.
var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// ignorePos leaves out where settings were read: two files that mean the
// same configuration give equal Configs under it.
var ignorePos = cmp.Options{
	cmpAddr,
	cmpopts.IgnoreFields(Config{}, "Source"),
	cmpopts.IgnoreFields(Route{}, "Line"),
	cmpopts.EquateEmpty(),
}

// conf joins lines into a file, each ending in '\n'.
func conf(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// The three required lines of a valid file, then whatever the case adds
// as line 4 on.
const (
	lineIfconfig = "IFCONFIG=eth0:10.0.0.2:255.255.255.0"
	lineMaster   = "CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2"
	lineNodeNum  = "CLUSTER_NODENUM=2"
)

func base(more ...string) string {
	return conf(append([]string{lineIfconfig, lineMaster, lineNodeNum}, more...)...)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// baseConfig is what base() parses to.
func baseConfig() *Config {
	return &Config{
		NodeNum: 2,
		Masters: []Master{{1, addr("10.0.0.1")}, {2, addr("10.0.0.2")}},
		Ifconfig: Iface{
			Device:  "eth0",
			Addr:    addr("10.0.0.2"),
			Netmask: addr("255.255.255.0"),
		},
		Source: Source{File: "cluster.conf", Ifconfig: 1, Masters: 2, NodeNum: 3},
	}
}

func TestExampleFile(t *testing.T) {
	path := filepath.Join("testdata", "cluster.conf")
	cfg, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := baseConfig()
	want.Source = Source{File: path, Ifconfig: 5, Masters: 6, NodeNum: 7}
	want.Routes = []Route{
		{Default: true, Gateway: addr("10.0.0.254"), Metric: 0, Line: 8},
		{Host: addr("192.168.7.9"), Gateway: addr("10.0.0.253"), Metric: 1, Line: 9},
	}
	if d := cmp.Diff(want, cfg, cmpAddr); d != "" {
		t.Errorf("ParseFile(%s) (-want +got):\n%s", path, d)
	}
	pfx, err := cfg.Ifconfig.Prefix()
	if err != nil || pfx != netip.MustParsePrefix("10.0.0.2/24") {
		t.Errorf("Prefix() = %v, %v; want 10.0.0.2/24", pfx, err)
	}

	got := string(cfg.Format())
	wantText := conf(
		"IFCONFIG=eth0:10.0.0.2:255.255.255.0",
		"CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2",
		"CLUSTER_NODENUM=2",
		"ICS_ROUTE=default:10.0.0.254:0",
		"ICS_ROUTE=192.168.7.9:10.0.0.253:1",
	)
	if d := cmp.Diff(wantText, got); d != "" {
		t.Errorf("Format (-want +got):\n%s", d)
	}
	back, err := Parse("formatted", []byte(got))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(cfg, back, ignorePos); d != "" {
		t.Errorf("Parse(Format(cfg)) (-want +got):\n%s", d)
	}
}

// TestValid covers the variations the format allows; each must mean the
// same as base(), plus the routes given.
func TestValid(t *testing.T) {
	route := func(def bool, host, gw string, metric int) Route {
		r := Route{Default: def, Gateway: addr(gw), Metric: metric}
		if host != "" {
			r.Host = addr(host)
		}
		return r
	}
	var routes32 []string
	var want32 []Route
	for i := range MaxRoutes {
		h := fmt.Sprintf("192.168.1.%d", i+1)
		routes32 = append(routes32, "ICS_ROUTE="+h+":10.0.0.254:0")
		want32 = append(want32, route(false, h, "10.0.0.254", 0))
	}
	tests := []struct {
		name   string
		in     string
		routes []Route
		edit   func(*Config)
	}{
		{name: "plain", in: base()},
		{name: "no final newline", in: strings.TrimSuffix(base(), "\n")},
		{name: "CRLF", in: strings.ReplaceAll(base("ICS_ROUTE=default:10.0.0.254:3"), "\n", "\r\n"),
			routes: []Route{route(true, "", "10.0.0.254", 3)}},
		{name: "any order", in: conf(lineNodeNum, lineMaster, lineIfconfig)},
		{name: "quoted values", in: conf(
			`IFCONFIG="eth0:10.0.0.2:255.255.255.0"`,
			`CLUSTER_MASTER="1:10.0.0.1,2:10.0.0.2"`,
			`CLUSTER_NODENUM="2"`,
			`ICS_ROUTE="default:10.0.0.254:0"`),
			routes: []Route{route(true, "", "10.0.0.254", 0)}},
		{name: "bare device number", in: conf("IFCONFIG=0:10.0.0.2:255.255.255.0", lineMaster, lineNodeNum)},
		{name: "device eth12", in: conf("IFCONFIG=12:10.0.0.2:255.255.255.0", lineMaster, lineNodeNum),
			edit: func(c *Config) { c.Ifconfig.Device = "eth12" }},
		{name: "comments and blank lines", in: conf(
			"# a comment", "", "   # an indented comment", "\t", lineIfconfig,
			"#CLUSTER_NODENUM=9", lineMaster, "", lineNodeNum, "# the end")},
		{name: "blanks around the line", in: conf("  "+lineIfconfig+"\t", "\t"+lineMaster, lineNodeNum+"   ")},
		{name: "comment with UTF-8", in: base("# nœud numéro deux")},
		{name: "32 routes", in: base(routes32...), routes: want32},
		{name: "metric limits", in: base("ICS_ROUTE=default:10.0.0.254:0", "ICS_ROUTE=default:10.0.0.253:2147483647"),
			routes: []Route{route(true, "", "10.0.0.254", 0), route(true, "", "10.0.0.253", MaxMetric)}},
		{name: "same destination, other metric", in: base("ICS_ROUTE=10.1.1.1:10.0.0.254:1", "ICS_ROUTE=10.1.1.1:10.0.0.253:2"),
			routes: []Route{route(false, "10.1.1.1", "10.0.0.254", 1), route(false, "10.1.1.1", "10.0.0.253", 2)}},
		{name: "node 1024, one master", in: conf(lineIfconfig, "CLUSTER_MASTER=1024:10.0.0.9", "CLUSTER_NODENUM=1024"),
			edit: func(c *Config) { c.NodeNum = 1024; c.Masters = []Master{{1024, addr("10.0.0.9")}} }},
		{name: "masters keep their order", in: conf(lineIfconfig, "CLUSTER_MASTER=3:10.0.0.3,1:10.0.0.1", lineNodeNum),
			edit: func(c *Config) { c.Masters = []Master{{3, addr("10.0.0.3")}, {1, addr("10.0.0.1")}} }},
		{name: "/32 mask", in: conf("IFCONFIG=eth0:10.0.0.2:255.255.255.255", lineMaster, lineNodeNum),
			edit: func(c *Config) { c.Ifconfig.Netmask = addr("255.255.255.255") }},
		{name: "/31 allows both ends", in: conf("IFCONFIG=eth0:10.0.0.2:255.255.255.254", lineMaster, lineNodeNum),
			edit: func(c *Config) { c.Ifconfig.Netmask = addr("255.255.255.254") }},
		{name: "loopback", in: conf("IFCONFIG=eth0:127.0.0.2:255.0.0.0", "CLUSTER_MASTER=1:127.0.0.1,2:127.0.0.2", lineNodeNum),
			edit: func(c *Config) {
				c.Ifconfig = Iface{Device: "eth0", Addr: addr("127.0.0.2"), Netmask: addr("255.0.0.0")}
				c.Masters = []Master{{1, addr("127.0.0.1")}, {2, addr("127.0.0.2")}}
			}},
		{name: "/8 mask", in: conf("IFCONFIG=eth0:10.0.0.2:255.0.0.0", lineMaster, lineNodeNum),
			edit: func(c *Config) { c.Ifconfig.Netmask = addr("255.0.0.0") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("cluster.conf", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			want := baseConfig()
			want.Routes = tt.routes
			if tt.edit != nil {
				tt.edit(want)
			}
			if d := cmp.Diff(want, got, ignorePos); d != "" {
				t.Errorf("Parse (-want +got):\n%s", d)
			}
			back, err := Parse("formatted", got.Format())
			if err != nil {
				t.Fatalf("Parse(Format()):\n%v", err)
			}
			if d := cmp.Diff(got, back, ignorePos); d != "" || !sameConfig(got, back) {
				t.Errorf("Parse(Format()) (-want +got):\n%s", d)
			}
		})
	}
}

// TestErrors checks the exact text of the errors for each rule. The file
// is called cluster.conf throughout.
func TestErrors(t *testing.T) {
	long := "ICS_ROUTE=" + strings.Repeat("1", MaxLineBytes)
	var routes33 []string
	for i := range MaxRoutes + 2 {
		routes33 = append(routes33, fmt.Sprintf("ICS_ROUTE=192.168.1.%d:10.0.0.254:0", i+1))
	}
	tests := []struct {
		name string
		in   string
		want []string // the lines of the error, without "cluster.conf:"
	}{
		// The spec's own example.
		{"bad master address", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.x", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "2:10.0.0.x": bad IP address "10.0.0.x"`}},

		// Lines and keys.
		{"unknown key", base("CLUSTER_NAME=x"),
			[]string{`4: unknown key "CLUSTER_NAME": want CLUSTER_NODENUM, CLUSTER_MASTER, IFCONFIG or ICS_ROUTE`}},
		{"keys are case-sensitive", conf(lineIfconfig, lineMaster, "Cluster_NodeNum=2"),
			[]string{`3: unknown key "Cluster_NodeNum" (keys are case-sensitive: CLUSTER_NODENUM)`,
				`3: missing required key CLUSTER_NODENUM`}},
		{"repeated key", base("CLUSTER_NODENUM=3"),
			[]string{`4: CLUSTER_NODENUM: repeated key (first set on line 3)`}},
		{"repeated key, same value", conf(lineIfconfig, lineMaster, lineNodeNum, lineMaster),
			[]string{`4: CLUSTER_MASTER: repeated key (first set on line 2)`}},
		{"no =", base("CLUSTER_NODENUM 2"),
			[]string{`4: no '=' in "CLUSTER_NODENUM 2": want KEY=VALUE`}},
		{"no key", base("=2"),
			[]string{`4: no key before '=' in "=2"`}},
		{"space in key", base("MY KEY=2"),
			[]string{`4: bad key "MY KEY": a key is letters, digits and '_', with no spaces`}},
		{"export", base("export ICS_ROUTE=default:10.0.0.254:0"),
			[]string{`4: bad key "export ICS_ROUTE": a key is letters, digits and '_', with no spaces`}},
		{"space before =", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM =2"),
			[]string{`3: CLUSTER_NODENUM: space before '='`}},
		{"space after =", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM= 2"),
			[]string{`3: CLUSTER_NODENUM: space after '='`}},
		{"trailing comment", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=2 # me"),
			[]string{`3: CLUSTER_NODENUM: "2 # me": space in value (a comment must be on a line of its own)`}},
		{"space in value", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1, 2:10.0.0.2", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:10.0.0.1, 2:10.0.0.2": space in value`}},

		// Missing keys are reported on the last line.
		{"missing key", conf(lineIfconfig, lineNodeNum, "# no masters"),
			[]string{`3: missing required key CLUSTER_MASTER`}},
		{"empty file", "",
			[]string{`1: missing required key CLUSTER_NODENUM`,
				`1: missing required key CLUSTER_MASTER`,
				`1: missing required key IFCONFIG`}},
		{"no final newline", "# just\n# comments",
			[]string{`2: missing required key CLUSTER_NODENUM`,
				`2: missing required key CLUSTER_MASTER`,
				`2: missing required key IFCONFIG`}},

		// Quotes.
		{"open quote", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM="2`),
			[]string{`3: CLUSTER_NODENUM: "\"2": unbalanced quotes: a value that starts with '"' must end with '"'`}},
		{"lone quote", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM="`),
			[]string{`3: CLUSTER_NODENUM: "\"": unbalanced quotes: a value that starts with '"' must end with '"'`}},
		{"close quote", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM=2"`),
			[]string{`3: CLUSTER_NODENUM: "2\"": unbalanced quotes: quote the whole value or nothing`}},
		{"quote inside", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM="2"2"`),
			[]string{`3: CLUSTER_NODENUM: "\"2\"2\"": unbalanced quotes: a quoted value may not contain '"'`}},
		{"quoted part", base(`ICS_ROUTE="default":10.0.0.254:0`),
			[]string{`4: ICS_ROUTE: "\"default\":10.0.0.254:0": unbalanced quotes: a value that starts with '"' must end with '"'`}},
		{"single quotes", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM='2'`),
			[]string{`3: CLUSTER_NODENUM: "'2'": single quotes are not supported; use double quotes`}},
		{"empty value", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM=`),
			[]string{`3: CLUSTER_NODENUM: "": empty value`}},
		{"empty quoted value", conf(lineIfconfig, lineMaster, `CLUSTER_NODENUM=""`),
			[]string{`3: CLUSTER_NODENUM: "\"\"": empty value`}},

		// CLUSTER_NODENUM.
		{"node 0", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=0"),
			[]string{`3: CLUSTER_NODENUM: bad node number "0": out of range 1..1024`}},
		{"node 1025", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=1025"),
			[]string{`3: CLUSTER_NODENUM: bad node number "1025": out of range 1..1024`}},
		{"huge node", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=99999999999999999999999"),
			[]string{`3: CLUSTER_NODENUM: bad node number "99999999999999999999999": out of range 1..1024`}},
		{"octal-looking node", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=02"),
			[]string{`3: CLUSTER_NODENUM: bad node number "02": leading zero`}},
		{"signed node", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=+2"),
			[]string{`3: CLUSTER_NODENUM: bad node number "+2": not a decimal number`}},
		{"negative node", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM=-2"),
			[]string{`3: CLUSTER_NODENUM: bad node number "-2": not a decimal number`}},

		// CLUSTER_MASTER.
		{"trailing comma", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: empty entry 2 (stray comma?)`}},
		{"double comma", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,,2:10.0.0.2", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: empty entry 2 (stray comma?)`}},
		{"master without address", conf(lineIfconfig, "CLUSTER_MASTER=1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1": want <node>:<ip>`}},
		{"master with port", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1:7000", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:10.0.0.1:7000": want <node>:<ip>`}},
		{"master node 0", conf(lineIfconfig, "CLUSTER_MASTER=0:10.0.0.1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "0:10.0.0.1": bad node number "0": out of range 1..1024`}},
		{"master node 2000", conf(lineIfconfig, "CLUSTER_MASTER=2000:10.0.0.1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "2000:10.0.0.1": bad node number "2000": out of range 1..1024`}},
		{"duplicate master node", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,1:10.0.0.3", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:10.0.0.3": node 1 is listed twice`}},
		{"duplicate master address", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "2:10.0.0.1": address 10.0.0.1 is also node 1's`}},
		{"IPv6 master", conf(lineIfconfig, "CLUSTER_MASTER=1:::1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:::1": want <node>:<ip>`}},
		{"leading zero in address", conf(lineIfconfig, "CLUSTER_MASTER=1:10.0.0.01", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:10.0.0.01": bad IP address "10.0.0.01"`}},
		{"multicast master", conf(lineIfconfig, "CLUSTER_MASTER=1:224.0.0.1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:224.0.0.1": bad IP address "224.0.0.1": not a unicast address`}},
		{"this-network master", conf(lineIfconfig, "CLUSTER_MASTER=1:0.0.0.1", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "1:0.0.0.1": bad IP address "0.0.0.1": not a unicast address`}},
		{"broadcast gateway", base("ICS_ROUTE=default:255.255.255.255:0"),
			[]string{`4: ICS_ROUTE: "default:255.255.255.255:0": gateway: bad IP address "255.255.255.255": not a unicast address`}},
		{"every bad entry", conf(lineIfconfig, "CLUSTER_MASTER=x:10.0.0.1,2:10.0.0.x,,3:0.0.0.0", lineNodeNum),
			[]string{`2: CLUSTER_MASTER: "x:10.0.0.1": bad node number "x": not a decimal number`,
				`2: CLUSTER_MASTER: "2:10.0.0.x": bad IP address "10.0.0.x"`,
				`2: CLUSTER_MASTER: empty entry 3 (stray comma?)`,
				`2: CLUSTER_MASTER: "3:0.0.0.0": bad IP address "0.0.0.0": not a unicast address`}},

		// IFCONFIG.
		{"two fields", conf("IFCONFIG=eth0:10.0.0.2", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.2": want <device>:<ip>:<netmask>`}},
		{"four fields", conf("IFCONFIG=eth0:10.0.0.2:255.255.255.0:1500", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.2:255.255.255.0:1500": want <device>:<ip>:<netmask>`}},
		{"other device", conf("IFCONFIG=wlan0:10.0.0.2:255.255.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "wlan0:10.0.0.2:255.255.255.0": bad device "wlan0": want ethN or a number N (not a decimal number)`}},
		{"eth without number", conf("IFCONFIG=eth:10.0.0.2:255.255.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth:10.0.0.2:255.255.255.0": bad device "eth": want ethN or a number N (empty)`}},
		{"device leading zero", conf("IFCONFIG=eth01:10.0.0.2:255.255.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth01:10.0.0.2:255.255.255.0": bad device "eth01": want ethN or a number N (leading zero)`}},
		{"bad interface address", conf("IFCONFIG=eth0:10.0.2:255.255.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.2:255.255.255.0": bad IP address "10.0.2"`}},
		{"non-contiguous mask", conf("IFCONFIG=eth0:10.0.0.2:255.0.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.2:255.0.255.0": bad netmask "255.0.255.0": not contiguous`}},
		{"zero mask", conf("IFCONFIG=eth0:10.0.0.2:0.0.0.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.2:0.0.0.0": bad netmask "0.0.0.0": no network bits`}},
		{"prefix length as mask", conf("IFCONFIG=eth0:10.0.0.2:24", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.2:24": bad netmask "24": not an IPv4 address`}},
		{"network address", conf("IFCONFIG=eth0:10.0.0.0:255.255.255.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.0.0:255.255.255.0": address 10.0.0.0 is the network address of 10.0.0.0/24`}},
		{"broadcast address", conf("IFCONFIG=eth0:10.0.1.255:255.255.254.0", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "eth0:10.0.1.255:255.255.254.0": address 10.0.1.255 is the broadcast address of 10.0.0.0/23`}},
		{"every bad field", conf("IFCONFIG=ETH0:10.0.0.256:255.255.0.255", lineMaster, lineNodeNum),
			[]string{`1: IFCONFIG: "ETH0:10.0.0.256:255.255.0.255": bad device "ETH0": want ethN or a number N (not a decimal number)`,
				`1: IFCONFIG: "ETH0:10.0.0.256:255.255.0.255": bad IP address "10.0.0.256"`,
				`1: IFCONFIG: "ETH0:10.0.0.256:255.255.0.255": bad netmask "255.255.0.255": not contiguous`}},

		// ICS_ROUTE.
		{"route fields", base("ICS_ROUTE=default:10.0.0.254"),
			[]string{`4: ICS_ROUTE: "default:10.0.0.254": want <default|host ip>:<gateway ip>:<metric>`}},
		{"DEFAULT", base("ICS_ROUTE=DEFAULT:10.0.0.254:0"),
			[]string{`4: ICS_ROUTE: "DEFAULT:10.0.0.254:0": destination: bad IP address "DEFAULT" (want default or a host IP address)`}},
		{"bad gateway", base("ICS_ROUTE=default:10.0.0:0"),
			[]string{`4: ICS_ROUTE: "default:10.0.0:0": gateway: bad IP address "10.0.0"`}},
		{"negative metric", base("ICS_ROUTE=default:10.0.0.254:-1"),
			[]string{`4: ICS_ROUTE: "default:10.0.0.254:-1": bad metric "-1": not a decimal number`}},
		{"metric past int32", base("ICS_ROUTE=default:10.0.0.254:2147483648"),
			[]string{`4: ICS_ROUTE: "default:10.0.0.254:2147483648": bad metric "2147483648": out of range 0..2147483647`}},
		{"empty metric", base("ICS_ROUTE=default:10.0.0.254:"),
			[]string{`4: ICS_ROUTE: "default:10.0.0.254:": bad metric "": empty`}},
		{"duplicate route", base("ICS_ROUTE=default:10.0.0.254:0", "ICS_ROUTE=default:10.0.0.253:0"),
			[]string{`5: ICS_ROUTE: "default:10.0.0.253:0": route to default with metric 0 already set on line 4`}},
		{"33 routes", base(routes33...),
			[]string{`36: ICS_ROUTE: more than 32 routes`}},

		// Bytes.
		{"NUL", base("# a\x00b"),
			[]string{`4: line contains a NUL byte`}},
		{"invalid UTF-8", base("# caf\xe9"),
			[]string{`4: line is not valid UTF-8`}},
		{"escape", base("ICS_ROUTE=default:10.0.0.254:0\x1b[0m"),
			[]string{`4: line contains control character '\x1b'`}},
		{"lone CR", conf(lineIfconfig, lineMaster+"\r"+lineNodeNum),
			[]string{`2: line contains control character '\r'`,
				`2: missing required key CLUSTER_NODENUM`}},
		{"byte order mark", "\uFEFF" + base(),
			[]string{`1: file starts with a byte order mark (U+FEFF); save it as plain UTF-8 or ASCII`}},
		{"long line", base(long),
			[]string{fmt.Sprintf(`4: line is %d bytes long; the limit is 4096`, len(long))}},
		{"long bad line still counts its key", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM="+strings.Repeat("9", 5000), lineNodeNum),
			[]string{`3: line is 5016 bytes long; the limit is 4096`,
				`4: CLUSTER_NODENUM: repeated key (first set on line 3)`}},
		{"long value in a message is cut", conf(lineIfconfig, lineMaster, "CLUSTER_NODENUM="+strings.Repeat("9", 100)),
			[]string{`3: CLUSTER_NODENUM: bad node number "` + strings.Repeat("9", 64) + `"...: out of range 1..1024`}},

		// Several problems in one file, in line order.
		{"several", conf(
			"# node 5",
			"IFCONFIG=eth0:10.0.0.5:255.255.255.0",
			"CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2,",
			"CLUSTER_NODENUM=5 ",
			"CLUSTER_NODENUM=05",
			"ICS_ROUTE=default:10.0.0.254",
			"ics_route=default:10.0.0.254:0",
		), []string{
			`3: CLUSTER_MASTER: empty entry 3 (stray comma?)`,
			`5: CLUSTER_NODENUM: repeated key (first set on line 4)`,
			`5: CLUSTER_NODENUM: bad node number "05": leading zero`,
			`6: ICS_ROUTE: "default:10.0.0.254": want <default|host ip>:<gateway ip>:<metric>`,
			`7: unknown key "ics_route" (keys are case-sensitive: ICS_ROUTE)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("cluster.conf", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			want := "cluster.conf:" + strings.Join(tt.want, "\ncluster.conf:")
			if d := cmp.Diff(want, err.Error()); d != "" {
				t.Errorf("error (-want +got):\n%s", d)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) != len(tt.want) {
				t.Errorf("error is %T with %d entries; want Errors with %d", err, len(es), len(tt.want))
			}
		})
	}
}

func TestTooManyErrors(t *testing.T) {
	in := strings.Repeat("junk\n", 2*MaxErrors)
	_, err := Parse("cluster.conf", []byte(in))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T, want Errors", err)
	}
	if len(es) != MaxErrors+1 {
		t.Fatalf("%d errors, want %d", len(es), MaxErrors+1)
	}
	last := es[len(es)-1].Error()
	if want := fmt.Sprintf("cluster.conf:%d: too many errors (more than %d); stopping", MaxErrors+1, MaxErrors); last != want {
		t.Errorf("last error %q, want %q", last, want)
	}
}

func TestFileTooLong(t *testing.T) {
	// Half a megabyte of valid lines, then enough comment to pass the
	// limit: the error names the line where the limit falls.
	line := "# " + strings.Repeat("x", 98) + "\n" // 101 bytes
	n := MaxFileBytes/len(line) + 10
	path := filepath.Join(t.TempDir(), "big.conf")
	if err := os.WriteFile(path, []byte(strings.Repeat(line, n)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	want := fmt.Sprintf("%s:%d: file is longer than %d bytes; a cluster.conf is a few lines", path, MaxFileBytes/len(line)+1, MaxFileBytes)
	if err == nil || err.Error() != want {
		t.Errorf("ParseFile = %v\nwant %s", err, want)
	}
}

func TestParseFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.conf")
	_, err := ParseFile(path)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ParseFile(missing) = %v, want a not-exist error", err)
	}
	var es Errors
	if errors.As(err, &es) {
		t.Errorf("a read error must not be an Errors: %v", err)
	}
	if want := "clusterconf: open " + path + ": no such file or directory"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Parse("c.conf", []byte(base("X=1")))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(*Error) failed on %v", err)
	}
	if want := (&Error{File: "c.conf", Line: 4, Msg: `unknown key "X": want CLUSTER_NODENUM, CLUSTER_MASTER, IFCONFIG or ICS_ROUTE`}); *e != *want {
		t.Errorf("got %+v, want %+v", e, want)
	}
	if got := (&Error{File: "c.conf", Msg: "no line"}).Error(); got != "c.conf: no line" {
		t.Errorf("Error without a line = %q", got)
	}
}

func TestSourceErrorf(t *testing.T) {
	cfg, err := Parse("cluster.conf", []byte(base()))
	if err != nil {
		t.Fatal(err)
	}
	e := cfg.Source.Errorf(cfg.Source.Ifconfig, "IFCONFIG: no device %s on this host", cfg.Ifconfig.Device)
	if want := "cluster.conf:1: IFCONFIG: no device eth0 on this host"; e.Error() != want {
		t.Errorf("Errorf = %q, want %q", e, want)
	}
}

func TestPrefixLen(t *testing.T) {
	tests := []struct {
		addr, mask string
		want       int
		err        string
	}{
		{"10.0.0.1", "255.255.255.0", 24, ""},
		{"10.0.0.1", "255.255.255.255", 32, ""},
		{"10.0.0.1", "0.0.0.0", 0, ""},
		{"10.0.0.1", "255.255.128.0", 17, ""},
		{"10.0.0.1", "255.0.255.0", 0, "clusterconf: bad netmask 255.0.255.0: not contiguous"},
		{"10.0.0.1", "0.255.255.255", 0, "clusterconf: bad netmask 0.255.255.255: not contiguous"},
		{"fd00::1", "ffff:ffff:ffff:ffff::", 64, ""},
		{"fd00::1", "ffff::ffff", 0, "clusterconf: bad netmask ffff::ffff: not contiguous"},
		{"10.0.0.1", "ffff::", 0, "clusterconf: bad netmask ffff::: not in the family of address 10.0.0.1"},
		{"10.0.0.1", "", 0, `clusterconf: bad netmask "invalid IP"`},
	}
	for _, tt := range tests {
		i := Iface{Device: "eth0", Addr: addr(tt.addr)}
		if tt.mask != "" {
			i.Netmask = addr(tt.mask)
		}
		got, err := i.PrefixLen()
		errText := ""
		if err != nil {
			errText = err.Error()
			if !errors.Is(err, ErrNetmask) {
				t.Errorf("PrefixLen(%s) error does not wrap ErrNetmask", tt.mask)
			}
		}
		if got != tt.want || errText != tt.err {
			t.Errorf("PrefixLen(%s, %s) = %d, %q; want %d, %q", tt.addr, tt.mask, got, errText, tt.want, tt.err)
		}
	}
}

// TestFormatRejectsBroken: a Config that Parse could not have returned
// does not survive Format and Parse.
func TestFormatRejectsBroken(t *testing.T) {
	for name, edit := range map[string]func(*Config){
		"no masters":  func(c *Config) { c.Masters = nil },
		"zero addr":   func(c *Config) { c.Ifconfig.Addr = netip.Addr{} },
		"node 0":      func(c *Config) { c.NodeNum = 0 },
		"bad netmask": func(c *Config) { c.Ifconfig.Netmask = addr("255.0.255.0") },
	} {
		c := baseConfig()
		edit(c)
		if _, err := Parse("x", c.Format()); err == nil {
			t.Errorf("%s: Parse(Format()) succeeded", name)
		}
	}
}

// The package keeps its own copy of the node number limit so that it
// need not import node; the two must agree.
func TestMaxNodeNum(t *testing.T) {
	if MaxNodeNum != int(node.MaxID) {
		t.Errorf("MaxNodeNum = %d, node.MaxID = %d", MaxNodeNum, node.MaxID)
	}
}
