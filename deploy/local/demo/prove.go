package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Ping is one ping from a pod, through one of its interfaces, to the peer host of that interface's network.
type Ping struct {
	Pod, Interface, Network string
	Target                  netip.Addr
	Err                     error
}

// Pings plans one ping per address family of every extra attachment: to the peer host of the network the
// attachment's address is on. An attachment with no address, or with an address on no demo network, is an
// error in the returned list.
func Pings(pods []Pod, nets []Network) []Ping {
	var out []Ping
	for _, p := range pods {
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			if len(a.Addrs) == 0 {
				out = append(out, Ping{Pod: p.Key(), Interface: a.Interface, Network: a.Network,
					Err: errors.New("the interface has no address inside the pod")})
				continue
			}
			for _, addr := range a.Addrs {
				n, ok := NetworkOf(nets, addr.Addr())
				if !ok {
					out = append(out, Ping{Pod: p.Key(), Interface: a.Interface, Network: a.Network,
						Err: fmt.Errorf("%s is on none of the demo's networks", addr)})
					continue
				}
				for _, peer := range n.PeerAddrs {
					if peer.Contains(addr.Addr()) {
						out = append(out, Ping{Pod: p.Key(), Interface: a.Interface, Network: n.Name, Target: peer.Addr()})
					}
				}
			}
		}
	}
	return out
}

// Do runs the planned pings (those without an error yet) from inside each pod's network namespace, with the
// node's ping, bound to the attachment's interface so that no other route can carry it.
func Do(ctx context.Context, run Runner, pods []Pod, pings []Ping) []Ping {
	pid := map[string]int{}
	for _, p := range pods {
		pid[p.Key()] = p.SandboxPID
	}
	out := slices.Clone(pings)
	for i := range out {
		if out[i].Err != nil {
			continue
		}
		// Two replies within 5s: the first may wait for ARP/ND, an IPv6 address may still be tentative.
		_, err := run(ctx, "nsenter", "-t", strconv.Itoa(pid[out[i].Pod]), "-n",
			"ping", "-c", "2", "-i", "0.2", "-w", "5", "-I", out[i].Interface, out[i].Target.String())
		out[i].Err = err
	}
	return out
}

// PingErrors joins the failed pings' errors.
func PingErrors(pings []Ping) error {
	var errs []error
	for _, p := range pings {
		if p.Err != nil {
			errs = append(errs, fmt.Errorf("%s %s -> %s (%s): %w", p.Pod, p.Interface, p.Target, p.Network, p.Err))
		}
	}
	return errors.Join(errs...)
}

// CheckSeparation proves the networks apart: every switch forwarded frames of its own network and not one of
// another network's.
func CheckSeparation(c Counts, nets []Network) error {
	var errs []error
	for _, sw := range nets {
		for _, origin := range nets {
			n := c[sw.Name][origin.Name]
			switch {
			case sw.Name == origin.Name && n == 0:
				errs = append(errs, fmt.Errorf("switch %s forwarded no %s traffic at all", sw.Switch, origin.Name))
			case sw.Name != origin.Name && n > 0:
				errs = append(errs, fmt.Errorf("%d packets of the %s network crossed the %s switch (%s)", n, origin.Name, sw.Name, sw.Switch))
			}
		}
	}
	return errors.Join(errs...)
}

// CheckAddresses proves that each extra interface holds, inside the pod, exactly the addresses network-status
// reports for it.
func CheckAddresses(pods []Pod) error {
	var errs []error
	for _, p := range pods {
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			var inside []netip.Addr
			for _, pr := range a.Addrs {
				inside = append(inside, pr.Addr())
			}
			slices.SortFunc(inside, netip.Addr.Compare)
			status := slices.Clone(a.Status)
			slices.SortFunc(status, netip.Addr.Compare)
			if len(inside) == 0 || !slices.Equal(inside, status) {
				errs = append(errs, fmt.Errorf("%s %s (%s): addresses inside the pod %v, network-status %v",
					p.Key(), a.Interface, a.Network, inside, status))
			}
		}
	}
	return errors.Join(errs...)
}

// WritePods prints each pod's interfaces and their addresses as read inside the pod.
func WritePods(w io.Writer, pods []Pod) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "POD\tNETWORK\tINTERFACE\tADDRESSES (read inside the pod)")
	for _, p := range pods {
		name := p.Name
		for _, a := range p.Attachments {
			addrs := make([]string, 0, len(a.Addrs))
			for _, pr := range a.Addrs {
				addrs = append(addrs, pr.String())
			}
			text := strings.Join(addrs, " ")
			if a.PCIAddress != "" {
				text += "  (VF " + a.PCIAddress + ")"
			}
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, a.Network, a.Interface, text)
			name = ""
		}
	}
	return tw.Flush()
}

// WritePings prints one line per ping.
func WritePings(w io.Writer, pings []Ping) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "FROM POD\tINTERFACE\tTO PEER\tNETWORK\tRESULT")
	for _, p := range pings {
		result := "ok"
		if p.Err != nil {
			result = "FAILED: " + firstLine(p.Err.Error())
		}
		target := "-"
		if p.Target.IsValid() {
			target = p.Target.String()
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Pod, p.Interface, target, p.Network, result)
	}
	return tw.Flush()
}

// WriteCounts prints the switches' counters as a table: one row per switch, one column per network of origin.
func WriteCounts(w io.Writer, c Counts, nets []Network) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"SWITCH"}
	for _, n := range nets {
		subnets := make([]string, 0, len(n.PeerAddrs))
		for _, s := range n.Subnets() {
			subnets = append(subnets, s.String())
		}
		header = append(header, fmt.Sprintf("%s (%s)", n.Name, strings.Join(subnets, ", ")))
	}
	_, _ = fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, sw := range nets {
		row := []string{sw.Switch}
		for _, origin := range nets {
			row = append(row, strconv.FormatUint(c[sw.Name][origin.Name], 10))
		}
		_, _ = fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
