package clusterconf_test

import (
	"fmt"

	"github.com/clusterinfra/ci/internal/clusterconf"
)

func ExampleParse() {
	cfg, err := clusterconf.Parse("cluster.conf", []byte(`# node 2
IFCONFIG=eth0:10.0.0.2:255.255.255.0
CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2
CLUSTER_NODENUM=2
ICS_ROUTE="default:10.0.0.254:0"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	pfx, _ := cfg.Ifconfig.Prefix()
	fmt.Println("node", cfg.NodeNum, "on", cfg.Ifconfig.Device, pfx, "masters", cfg.Masters)
	fmt.Printf("%s", cfg.Format())
	// Output:
	// node 2 on eth0 10.0.0.2/24 masters [{1 10.0.0.1} {2 10.0.0.2}]
	// IFCONFIG=eth0:10.0.0.2:255.255.255.0
	// CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.2
	// CLUSTER_NODENUM=2
	// ICS_ROUTE=default:10.0.0.254:0
}

// Parse reports every problem, each with its line.
func ExampleParse_errors() {
	_, err := clusterconf.Parse("cluster.conf", []byte(`IFCONFIG=eth0:10.0.0.2:255.0.255.0
CLUSTER_MASTER=1:10.0.0.1,2:10.0.0.x
CLUSTER_MASTER=1:10.0.0.1
`))
	fmt.Println(err)
	// Output:
	// cluster.conf:1: IFCONFIG: "eth0:10.0.0.2:255.0.255.0": bad netmask "255.0.255.0": not contiguous
	// cluster.conf:2: CLUSTER_MASTER: "2:10.0.0.x": bad IP address "10.0.0.x"
	// cluster.conf:3: CLUSTER_MASTER: repeated key (first set on line 2)
	// cluster.conf:3: missing required key CLUSTER_NODENUM
}
