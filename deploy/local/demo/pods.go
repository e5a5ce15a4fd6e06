package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
)

// Attachment is one interface of a pod: what network-status says, and what the pod's namespace holds.
type Attachment struct {
	// Network is the network-status name: the cluster network's for eth0, namespace/name of a NAD otherwise.
	Network   string
	Interface string
	Default   bool
	// Status are the addresses network-status reports; Addrs those the interface has inside the pod (global
	// scope, with their prefix lengths).
	Status []netip.Addr
	Addrs  []netip.Prefix
	// PCIAddress is the device's PCI address for an SR-IOV attachment.
	PCIAddress string
}

// Pod is what a pod's networking looks like from inside it.
type Pod struct {
	Namespace, Name, UID, Node string
	// SandboxPID is a process in the pod's network namespace (the sandbox's).
	SandboxPID  int
	Attachments []Attachment
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Attachment returns the pod's attachment to the NAD named network (namespace/name).
func (p Pod) Attachment(network string) (Attachment, bool) {
	i := slices.IndexFunc(p.Attachments, func(a Attachment) bool { return a.Network == network })
	if i < 0 {
		return Attachment{}, false
	}
	return p.Attachments[i], true
}

// Inspector reads pods' interfaces on the node through crictl and nsenter.
type Inspector struct {
	Run Runner
	// Crictl and CrictlConfig say how to reach the node's container runtime.
	Crictl, CrictlConfig string
}

// Inspect reads one running pod: its network-status annotation, then the addresses of each interface inside
// its network namespace.
func (in Inspector) Inspect(ctx context.Context, pod *corev1.Pod) (Pod, error) {
	p := Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID), Node: pod.Spec.NodeName}
	statuses, err := NetworkStatus(pod)
	if err != nil {
		return p, err
	}
	if p.SandboxPID, err = in.sandboxPID(ctx, pod); err != nil {
		return p, fmt.Errorf("pod %s: %w", p.Key(), err)
	}
	out, err := in.Run(ctx, "nsenter", "-t", strconv.Itoa(p.SandboxPID), "-n", "ip", "-j", "addr", "show")
	if err != nil {
		return p, fmt.Errorf("pod %s: %w", p.Key(), err)
	}
	inside, err := ParseIPAddr(out)
	if err != nil {
		return p, fmt.Errorf("pod %s: %w", p.Key(), err)
	}
	for _, s := range statuses {
		a := Attachment{Network: s.Name, Interface: s.Interface, Default: s.Default, Addrs: inside[s.Interface]}
		for _, ip := range s.IPs {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return p, fmt.Errorf("pod %s: network-status: %q is not an IP address", p.Key(), ip)
			}
			a.Status = append(a.Status, addr)
		}
		if s.DeviceInfo != nil && s.DeviceInfo.Pci != nil {
			a.PCIAddress = s.DeviceInfo.Pci.PciAddress
		}
		p.Attachments = append(p.Attachments, a)
	}
	return p, nil
}

// NetworkStatus decodes the pod's k8s.v1.cni.cncf.io/network-status annotation.
func NetworkStatus(pod *corev1.Pod) ([]nadv1.NetworkStatus, error) {
	raw, ok := pod.Annotations[nadv1.NetworkStatusAnnot]
	if !ok {
		return nil, fmt.Errorf("pod %s/%s has no %s annotation", pod.Namespace, pod.Name, nadv1.NetworkStatusAnnot)
	}
	var out []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %s: %w", pod.Namespace, pod.Name, nadv1.NetworkStatusAnnot, err)
	}
	return out, nil
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sandboxPID asks the runtime for the pod's ready sandbox and its PID.
func (in Inspector) sandboxPID(ctx context.Context, pod *corev1.Pod) (int, error) {
	out, err := in.Run(ctx, in.Crictl, "--config", in.CrictlConfig, "pods", "--state", "ready", "-q",
		"--label", "io.kubernetes.pod.uid="+string(pod.UID))
	if err != nil {
		return 0, err
	}
	ids := strings.Fields(string(out))
	if len(ids) != 1 {
		return 0, fmt.Errorf("want one ready sandbox for pod UID %s, the runtime has %d", pod.UID, len(ids))
	}
	out, err = in.Run(ctx, in.Crictl, "--config", in.CrictlConfig, "inspectp", "-o", "go-template",
		"--template", "{{.info.pid}}", ids[0])
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("sandbox %s: no PID in %q", ids[0], out)
	}
	return pid, nil
}

// ParseIPAddr reads `ip -j addr show` into the global-scope addresses of each interface.
func ParseIPAddr(out []byte) (map[string][]netip.Prefix, error) {
	var links []struct {
		Ifname   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("ip -j addr: %w", err)
	}
	res := map[string][]netip.Prefix{}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Scope != "global" {
				continue
			}
			addr, err := netip.ParseAddr(a.Local)
			if err != nil {
				return nil, fmt.Errorf("ip -j addr: %s: %w", l.Ifname, err)
			}
			res[l.Ifname] = append(res[l.Ifname], netip.PrefixFrom(addr, a.PrefixLen))
		}
	}
	return res, nil
}
