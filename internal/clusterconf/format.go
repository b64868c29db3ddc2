package clusterconf

import (
	"bytes"
	"fmt"
)

// Format writes c as a canonical cluster.conf: the keys in the order of
// the OpenSSI instructions (IFCONFIG, CLUSTER_MASTER, CLUSTER_NODENUM,
// then the routes in order), unquoted, the device as ethN, one line each.
// Parse reads the result back to a Config equal to c apart from Source
// and Route.Line. It ignores Source; a Config that Parse would reject (a
// zero address, no masters) gives a file that Parse rejects too, so
// writing a broken Config and reading it back finds the mistake.
func (c *Config) Format() []byte {
	var b bytes.Buffer
	i := c.Ifconfig
	fmt.Fprintf(&b, "%s=%s:%s:%s\n", KeyIfconfig, i.Device, i.Addr, i.Netmask)
	b.WriteString(KeyMaster + "=")
	for j, m := range c.Masters {
		if j > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%s", m.Node, m.Addr)
	}
	b.WriteByte('\n')
	fmt.Fprintf(&b, "%s=%d\n", KeyNodeNum, c.NodeNum)
	for _, r := range c.Routes {
		fmt.Fprintf(&b, "%s=%s:%s:%d\n", KeyRoute, r.dest(), r.Gateway, r.Metric)
	}
	return b.Bytes()
}
