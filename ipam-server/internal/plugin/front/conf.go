// Package front is what braid-ipam, the node-side CNI IPAM plugin, does on every call without an API client:
// it reads the network config and CNI_ARGS, asks braid's node daemon for the pod's assignment and turns it into
// a CNI result. It links nothing of the API client (net/http, TLS, YAML) nor of apimachinery: braid-ipam starts
// for every ADD, and every package it links costs start-up time. Package plugin adds the API server's reads.
package front

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/ipam-server/internal/ipamkeys"
)

// DefaultKubeconfig is where braid's installer writes the node's kubeconfig (shared with the meta-plugin).
const DefaultKubeconfig = "/etc/cni/net.d/braid.d/braid.kubeconfig"

// DefaultTimeout bounds how long ADD waits for the server to record an assignment.
const DefaultTimeout = 10 * time.Second

// Conf is a network config whose ipam section is braid-ipam's.
type Conf struct {
	types.NetConf
	IPAM IPAMConf `json:"ipam"`
}

// IPAMConf is braid-ipam's section.
type IPAMConf struct {
	Type       string   `json:"type"`
	Pools      []string `json:"pools"`
	Kubeconfig string   `json:"kubeconfig,omitempty"`
	// DaemonSocket is braid's node daemon, asked first for the assignment when it runs (default
	// /run/braid/braid.sock, where deploy/ puts it); without it braid-ipam reads the API server.
	DaemonSocket string `json:"daemonSocket,omitempty"`
	Timeout      string `json:"timeout,omitempty"`

	// Wait is Timeout read, or DefaultTimeout: how long ADD waits for the assignment.
	Wait time.Duration `json:"-"`
}

// Parse reads the call's network config and CNI_ARGS.
func Parse(args *skel.CmdArgs) (*Conf, PodArgs, error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return nil, PodArgs{}, err
	}
	pod, err := ParseArgs(args.Args)
	if err != nil {
		return nil, PodArgs{}, err
	}
	return conf, pod, nil
}

// ParseConf reads stdin's config; errors name the field (CNI code 7).
func ParseConf(stdin []byte) (*Conf, error) {
	c := &Conf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field := strings.TrimPrefix(te.Field, "NetConf.") // encoding/json names the embedded struct too
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("braid-ipam: %s: must be of type %s, not %s", field, te.Type, te.Value), err.Error())
		}
		return nil, types.NewError(types.ErrDecodingFailure, "braid-ipam: network config: not a JSON object", err.Error())
	}
	bad := func(field, msg string) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("braid-ipam: %s: %s", field, msg), "")
	}
	if c.IPAM.Type != "braid-ipam" {
		return nil, bad("ipam.type", fmt.Sprintf("is %q, want \"braid-ipam\"", c.IPAM.Type))
	}
	var raw struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	_ = json.Unmarshal(stdin, &raw) // decoded above already
	if key, fix := ipamkeys.UnknownIPAMKey(raw.IPAM); key != "" {
		return nil, bad("ipam"+ipamkeys.KeyPath(key), fix)
	}
	if len(c.IPAM.Pools) == 0 {
		return nil, bad("ipam.pools", `must name at least one IPPool, e.g. "pools": ["mgmt-rack1"]`)
	}
	for i, name := range c.IPAM.Pools {
		if msgs := isDNS1123Subdomain(name); len(msgs) > 0 {
			return nil, bad(fmt.Sprintf("ipam.pools[%d]", i), fmt.Sprintf("%q is not an IPPool name: %s", name, strings.Join(msgs, "; ")))
		}
	}
	if c.IPAM.Kubeconfig == "" {
		c.IPAM.Kubeconfig = DefaultKubeconfig
	} else if !filepath.IsAbs(c.IPAM.Kubeconfig) {
		return nil, bad("ipam.kubeconfig", fmt.Sprintf("must be an absolute path, not %q", c.IPAM.Kubeconfig))
	}
	if c.IPAM.DaemonSocket == "" {
		c.IPAM.DaemonSocket = shim.DefaultSocket
	} else if !filepath.IsAbs(c.IPAM.DaemonSocket) {
		return nil, bad("ipam.daemonSocket", fmt.Sprintf("must be an absolute path, not %q", c.IPAM.DaemonSocket))
	}
	c.IPAM.Wait = DefaultTimeout
	if c.IPAM.Timeout != "" {
		d, err := time.ParseDuration(c.IPAM.Timeout)
		if err != nil || d <= 0 {
			return nil, bad("ipam.timeout", fmt.Sprintf("%q is not a positive duration such as \"10s\"", c.IPAM.Timeout))
		}
		c.IPAM.Wait = d
	}
	return c, nil
}

// PodArgs are the Kubernetes keys of CNI_ARGS.
type PodArgs struct {
	Namespace, Name, UID string
}

// ParseArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from CNI_ARGS, ignoring other keys.
func ParseArgs(args string) (PodArgs, error) {
	var p PodArgs
	for _, kv := range strings.Split(args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			p.Namespace = v
		case "K8S_POD_NAME":
			p.Name = v
		case "K8S_POD_UID":
			p.UID = v
		}
	}
	if p.Namespace == "" || p.Name == "" {
		return p, types.NewError(types.ErrInvalidNetworkConfig,
			"braid-ipam: CNI_ARGS: K8S_POD_NAMESPACE and K8S_POD_NAME are required (braid-ipam serves Kubernetes pods)", args)
	}
	return p, nil
}
