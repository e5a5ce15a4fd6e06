// Package demo is the simulated underlay of `make demo` and what the demo and deploy/e2e check on it.
//
// The node of the local cluster gets the NICs a bare-metal node would have: mgmt0 (management), ctl0 (control)
// and the netdevs of three SR-IOV VFs of its data NIC (vf0..vf2, named in the fake PCI tree that
// braid-sriov-fixture writes). Each is one end of a veth pair whose other end is a port of a "switch": a
// network namespace with a bridge, one per network. On each switch a peer host (its own network namespace)
// holds the network's .254 / ::fe address. Every switch counts, with ebtables, the frames it forwards by the
// network their source address belongs to, so that the demo can show where each network's traffic went.
//
// The package reads pods' interfaces from inside their network namespaces (crictl gives the sandbox's PID),
// pings each network's peer from the pod through that network's interface, and reads the counters.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// Network is one simulated underlay network.
type Network struct {
	// Name is the network's short name, as in deploy/examples (mgmt, control, data).
	Name string
	// Switch and Peer are the network namespaces of the switch and of the peer host.
	Switch, Peer string
	// PeerAddrs are the peer host's addresses with their subnets; the subnets are the network's.
	PeerAddrs []netip.Prefix
	// NodeNICs are the node's interfaces on this network: veth ends in the host's namespace.
	NodeNICs []string
	// NodeNICsUp says whether the node's ends are brought up. Macvlan parents are; VFs wait for a pod (an
	// idle VF is down on its host, and braid-sriov-dp counts it healthy).
	NodeNICsUp bool
}

// Subnets returns the network's subnets.
func (n Network) Subnets() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(n.PeerAddrs))
	for _, p := range n.PeerAddrs {
		out = append(out, p.Masked())
	}
	return out
}

// Contains reports whether addr is on one of the network's subnets.
func (n Network) Contains(addr netip.Addr) bool {
	for _, p := range n.PeerAddrs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// VFs are the fake PCI tree's X710 VFs on iavf (braid-sriov-fixture's standard tree) and the host interfaces
// that stand for their netdevs.
var VFs = []struct{ PCIAddress, Netdev string }{
	{"0000:3b:02.0", "vf0"}, {"0000:3b:02.1", "vf1"}, {"0000:3b:02.2", "vf2"},
}

// Networks are the demo's three underlay networks, matching deploy/examples (NIC names in networks.yaml, pools
// in pools.yaml).
var Networks = []Network{
	{Name: "mgmt", Switch: "braid-sw-mgmt", Peer: "braid-peer-mgmt", NodeNICs: []string{"mgmt0"}, NodeNICsUp: true,
		PeerAddrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.254/24")}},
	{Name: "control", Switch: "braid-sw-control", Peer: "braid-peer-control", NodeNICs: []string{"ctl0"}, NodeNICsUp: true,
		PeerAddrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.254/24"), netip.MustParsePrefix("2001:db8:1::fe/64")}},
	{Name: "data", Switch: "braid-sw-data", Peer: "braid-peer-data", NodeNICs: []string{"vf0", "vf1", "vf2"},
		PeerAddrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.254/24")}},
}

// NetworkOf returns the network whose subnet holds addr.
func NetworkOf(nets []Network, addr netip.Addr) (Network, bool) {
	for _, n := range nets {
		if n.Contains(addr) {
			return n, true
		}
	}
	return Network{}, false
}

// Runner runs a command and returns its standard output; the error carries the standard error.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Exec is the Runner that runs commands on this machine.
func Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Underlay creates and removes the simulated networks.
type Underlay struct {
	Nets []Network
	Run  Runner
}

func (u Underlay) netnsExists(ctx context.Context, name string) (bool, error) {
	out, err := u.Run(ctx, "ip", "netns", "list")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true, nil
		}
	}
	return false, nil
}

func (u Underlay) linkExists(ctx context.Context, name string) bool {
	_, err := u.Run(ctx, "ip", "link", "show", "dev", name)
	return err == nil
}

// Up creates every network that does not exist yet. A network whose switch exists is taken as made by an
// earlier Up and left alone, so that pods attached to it keep working; a node NIC name that exists without
// its switch belongs to someone else, and Up refuses to touch it.
func (u Underlay) Up(ctx context.Context) error {
	for _, n := range u.Nets {
		exists, err := u.netnsExists(ctx, n.Switch)
		if err != nil {
			return err
		}
		if exists {
			continue
		}
		for _, nic := range n.NodeNICs {
			if u.linkExists(ctx, nic) {
				return fmt.Errorf("network %s: the host already has an interface %s that the demo did not make; remove or rename it", n.Name, nic)
			}
		}
		if err := u.create(ctx, n); err != nil {
			return errors.Join(fmt.Errorf("network %s: %w", n.Name, err), u.remove(ctx, n))
		}
	}
	return nil
}

func (u Underlay) create(ctx context.Context, n Network) error {
	sw := []string{"ip", "-n", n.Switch}
	peer := []string{"ip", "-n", n.Peer}
	cmds := [][]string{
		{"ip", "netns", "add", n.Switch},
		{"ip", "netns", "add", n.Peer},
		// `name` everywhere: iproute2 reads a bare short word such as "br" as an abbreviated keyword.
		append(sw, "link", "add", "name", "br0", "type", "bridge"),
		append(sw, "link", "set", "dev", "br0", "up"),
		append(sw, "link", "add", "name", "p-peer", "type", "veth", "peer", "name", "eth0", "netns", n.Peer),
		append(sw, "link", "set", "dev", "p-peer", "master", "br0", "up"),
		append(peer, "link", "set", "dev", "lo", "up"),
	}
	for _, a := range n.PeerAddrs {
		cmd := slices.Concat(peer, []string{"addr", "add", a.String(), "dev", "eth0"})
		if a.Addr().Is6() {
			cmd = append(cmd, "nodad")
		}
		cmds = append(cmds, cmd)
	}
	cmds = append(cmds, append(peer, "link", "set", "dev", "eth0", "up"))
	for _, nic := range n.NodeNICs {
		port := "p-" + nic
		cmds = append(cmds,
			[]string{"ip", "link", "add", "name", nic, "type", "veth", "peer", "name", port, "netns", n.Switch},
			append(sw, "link", "set", "dev", port, "master", "br0", "up"))
		if n.NodeNICsUp {
			cmds = append(cmds, []string{"ip", "link", "set", "dev", nic, "up"})
		}
	}
	// One counting rule per (origin network, subnet, protocol); CONTINUE leaves forwarding as it is.
	for _, origin := range u.Nets {
		for _, s := range origin.Subnets() {
			for _, match := range counterMatches(s) {
				cmds = append(cmds, append([]string{"ip", "netns", "exec", n.Switch, "ebtables-nft", "-A", "FORWARD"},
					append(match, "-j", "CONTINUE")...))
			}
		}
	}
	for _, c := range cmds {
		if _, err := u.Run(ctx, c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// counterMatches are the ebtables matches for frames whose source address is on s: IP packets and, for IPv4,
// ARP (a network wrongly bridged to another floods its ARP requests there first).
func counterMatches(s netip.Prefix) [][]string {
	if s.Addr().Is4() {
		return [][]string{{"-p", "IPv4", "--ip-src", s.String()}, {"-p", "ARP", "--arp-ip-src", s.String()}}
	}
	return [][]string{{"-p", "IPv6", "--ip6-src", s.String()}}
}

// Down removes every network (the switch and peer namespaces, and with them both ends of each veth pair).
// Removing what does not exist is not an error.
func (u Underlay) Down(ctx context.Context) error {
	var errs []error
	for _, n := range u.Nets {
		errs = append(errs, u.remove(ctx, n))
	}
	return errors.Join(errs...)
}

func (u Underlay) remove(ctx context.Context, n Network) error {
	var errs []error
	if ours, err := u.netnsExists(ctx, n.Switch); err != nil {
		errs = append(errs, err)
	} else if ours {
		// The kernel frees a deleted namespace, and the veth pairs with an end in it, asynchronously: delete
		// the node's ends first, so that an Up right after a Down finds their names free. A VF inside a pod
		// is not in this namespace and goes with its pair when the switch goes.
		for _, nic := range n.NodeNICs {
			if u.linkExists(ctx, nic) {
				_, _ = u.Run(ctx, "ip", "link", "del", "dev", nic)
			}
		}
	}
	for _, ns := range []string{n.Switch, n.Peer} {
		exists, err := u.netnsExists(ctx, ns)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if exists {
			if _, err := u.Run(ctx, "ip", "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Counts are packet counts by switch (network name) and by the network the packets came from.
type Counts map[string]map[string]uint64

// Counters reads every switch's counters.
func (u Underlay) Counters(ctx context.Context) (Counts, error) {
	out := Counts{}
	for _, n := range u.Nets {
		listing, err := u.Run(ctx, "ip", "netns", "exec", n.Switch, "ebtables-nft", "-L", "FORWARD", "--Lc")
		if err != nil {
			return nil, fmt.Errorf("switch %s: %w", n.Name, err)
		}
		bySubnet, err := ParseEbtablesCounters(listing)
		if err != nil {
			return nil, fmt.Errorf("switch %s: %w", n.Name, err)
		}
		row := map[string]uint64{}
		for _, origin := range u.Nets {
			row[origin.Name] = 0
			for _, s := range origin.Subnets() {
				row[origin.Name] += bySubnet[s]
			}
		}
		out[n.Name] = row
	}
	return out, nil
}

// ParseEbtablesCounters sums the packet counters of `ebtables -L --Lc` by the source subnet each rule matches,
// e.g. "-p IPv4 --ip-src 192.0.2.0/24 -j CONTINUE , pcnt = 6 -- bcnt = 504".
func ParseEbtablesCounters(listing []byte) (map[netip.Prefix]uint64, error) {
	out := map[netip.Prefix]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(listing))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		i := slices.IndexFunc(f, func(s string) bool { return s == "--ip-src" || s == "--arp-ip-src" || s == "--ip6-src" })
		if i < 0 || i+1 >= len(f) {
			continue
		}
		s, err := netip.ParsePrefix(f[i+1])
		if err != nil {
			return nil, fmt.Errorf("ebtables rule %q: %w", sc.Text(), err)
		}
		j := slices.Index(f, "pcnt")
		if j < 0 || j+2 >= len(f) || f[j+1] != "=" {
			return nil, fmt.Errorf("ebtables rule %q: no packet counter", sc.Text())
		}
		n, err := strconv.ParseUint(f[j+2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("ebtables rule %q: %w", sc.Text(), err)
		}
		out[s.Masked()] += n
	}
	return out, sc.Err()
}

// FixtureArgs are braid-sriov-fixture's --host-netdev flags that make the VFs' netdevs the node's vf* ends.
func FixtureArgs() []string {
	var out []string
	for _, vf := range VFs {
		out = append(out, "--host-netdev", vf.PCIAddress+"="+vf.Netdev)
	}
	return out
}
