// Package clusterconf reads /etc/cluster.conf, the node configuration file
// of clusterd, in the format OpenSSI's Cluster Infrastructure used:
//
//	# /etc/cluster.conf on node 2
//	IFCONFIG=eth0:10.0.0.2:255.255.255.0
//	CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2
//	CLUSTER_NODENUM=2
//	ICS_ROUTE="default:10.0.0.254:0"
//	ICS_ROUTE=192.168.7.9:10.0.0.253:1
//
// One KEY=VALUE per line. Blank lines and lines whose first non-blank
// character is '#' are ignored. A value may be wrapped in double quotes.
// The keys are:
//
//   - CLUSTER_NODENUM=<node>: this node's number, 1..1024 (required).
//   - CLUSTER_MASTER=<node>:<ip>[,<node>:<ip>...]: the candidate masters,
//     in order (required).
//   - IFCONFIG=<device>:<ip>:<netmask>: the ICS interface (required). The
//     device is ethN or a bare number N, which means ethN.
//   - ICS_ROUTE=<default|host ip>:<gateway ip>:<metric>: a static route over
//     the ICS interface (optional, at most 32 lines).
//
// The cluster key is deliberately not in this file; clusterd takes the
// path of its key file as a flag, and its flags override the file.
//
// # Why it is strict
//
// The original file was sourced by shell scripts, so a typo there either
// broke the boot script or, worse, was silently read as something else: a
// stray space ends an assignment, "010" is octal in shell arithmetic, a
// misspelled key is just an unused variable. A node that boots with the
// wrong node number or the wrong master list can split or confuse a
// cluster, which is far more expensive than refusing to start. So this
// parser accepts exactly the format above and rejects everything else:
// unknown or misspelled keys (keys are case-sensitive), repeated keys,
// missing required keys, stray spaces around '=', spaces inside values
// (and so trailing comments), unbalanced quotes, leading zeros, node
// numbers out of range, duplicate masters, empty list entries,
// non-contiguous netmasks, NUL bytes, invalid UTF-8, control characters
// and absurdly long lines. Lines may end in CRLF, and blanks and tabs may
// surround a whole line, because neither changes what the line means.
// Addresses are IPv4 only: the fields are separated by colons, and the
// original ICS interconnect was IPv4.
//
// # Errors
//
// Parse does not stop at the first problem: it reports every one (up to
// MaxErrors), as an Errors value that prints one "FILE:LINE: message" per
// line, the form compilers use and editors jump to. Every message names
// the key and quotes the bad part:
//
//	cluster.conf:3: CLUSTER_MASTER: "2:10.0.0.x": bad IP address "10.0.0.x"
//
// A missing required key is not on any line, yet it is reported with a
// line number too, so that every problem has the same shape: the last
// line of the file (line 1 for an empty file), which is where the key
// would be appended and where a compiler reports an unexpected end of
// file:
//
//	cluster.conf:5: missing required key CLUSTER_NODENUM
//
// # Usage
//
// clusterd reads the file, then applies its flags:
//
//	cfg, err := clusterconf.ParseFile("/etc/cluster.conf")
//	if err != nil {
//		fmt.Fprintln(os.Stderr, err) // one FILE:LINE: message per line
//		os.Exit(2)
//	}
//
// This is all "clusterd -check FILE" needs: the package reads only the
// file it is given, never the key file or the host's interfaces. Checks
// that need the host (does eth0 exist, does it carry this address?) come
// later and can still name the line through Config.Source.
//
// Format writes a Config back in canonical form; Parse reads it back to an
// equal Config. The fuzz test holds both properties.
package clusterconf
