// Package guest is what the VM lab's host side and its guest init
// (cmd/vminit) agree on: the configuration passed on the kernel command
// line, the paths inside the guest and the clock-probe port.
//
//	arg, _ := guest.Config{Node: 2, Addr: "10.214.0.2/16", Args: args}.Param()
//	// ... "console=ttyS0 " + arg on the kernel command line; in the guest:
//	cfg, err := guest.ParseCmdline(string(cmdline))
package guest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Paths and ports inside the guest.
const (
	// StateDir is where the VM's own disk is mounted: clusterd's state.
	StateDir = "/var/lib/clusterd"
	// ConfPath and KeyPath are the files vminit writes for clusterd.
	ConfPath = "/etc/cluster.conf"
	KeyPath  = "/etc/cluster.key"
	// TimePort is the UDP port of vminit's clock probe.
	TimePort = 7399
	// APIPort is the TCP port of clusterd's -lab-api.
	APIPort = 7480
	// param is the kernel parameter holding the configuration.
	param = "ci.cfg="
)

// Modes of the guest init.
const (
	// ModeCluster runs clusterd (the default).
	ModeCluster = ""
	// ModePoweroff powers off as soon as init runs: the boot baseline.
	ModePoweroff = "poweroff"
)

// Config is one VM's configuration.
type Config struct {
	Mode string   `json:"mode,omitempty"`
	Node int      `json:"node"`
	Addr string   `json:"addr"`           // eth0's address, CIDR
	Conf string   `json:"conf,omitempty"` // cluster.conf text
	Key  string   `json:"key,omitempty"`  // the cluster key
	Args []string `json:"args,omitempty"` // clusterd's arguments
}

// Param encodes c as one kernel parameter.
func (c Config) Param() (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return param + base64.RawURLEncoding.EncodeToString(b), nil
}

// ErrNoConfig says the kernel command line has no ci.cfg parameter.
var ErrNoConfig = errors.New("guest: no ci.cfg= on the kernel command line")

// ParseCmdline finds and decodes the configuration in a kernel command
// line.
func ParseCmdline(cmdline string) (*Config, error) {
	for _, f := range strings.Fields(cmdline) {
		v, ok := strings.CutPrefix(f, param)
		if !ok {
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("guest: ci.cfg: %w", err)
		}
		var c Config
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("guest: ci.cfg: %w", err)
		}
		return &c, nil
	}
	return nil, ErrNoConfig
}
