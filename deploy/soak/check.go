package soak

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
)

// Names the check relies on; keep in step with ipam-server (internal/server) and deploy/local.
const (
	// statefulSetAnnotation on a FloatingIP names the StatefulSet that owned its pod.
	statefulSetAnnotation = "braid.dev/statefulset"
	// clusterBridge is the cluster network's bridge (deploy/local/cluster-up.sh): one veth per pod sandbox.
	clusterBridge = "braidclu0"
	// defaultCooldown is an IPPool's reuseCooldown when it sets none.
	defaultCooldown = 60 * time.Second
	// expiryGrace is how late past its cool-down a released FloatingIP may be deleted before it is overdue.
	expiryGrace = 15 * time.Second
)

// Snapshot is everything the consistency check looks at: the API server's objects and what the node holds.
type Snapshot struct {
	// Now is when the snapshot was read (for cool-downs).
	Now time.Time
	// Pods are the live pods of every namespace.
	Pods []Pod
	// StatefulSets maps namespace/name to the ordinals the StatefulSet wants, [start, start+replicas).
	StatefulSets map[string][2]int
	FloatingIPs  []braidv1.FloatingIP
	Pools        []braidv1.IPPool
	// Inside are the running pods with extra networks, read from inside their network namespace.
	Inside []demo.Pod
	// Sandboxes are the container runtime's ready pod sandboxes.
	Sandboxes []Sandbox
	// CacheFiles are the per-container files of braid's cniDir, libcni's cache, the device-info dir and the
	// cluster network's host-local IPAM.
	CacheFiles []CacheFile
	// Links are the interfaces of the host's network namespace.
	Links []Link
	// VFs are the node's SR-IOV VFs (PCI address and the netdev that stands for each).
	VFs []VF
	// ParentNICs are the node's NICs that carry macvlan networks (mgmt0, ctl0).
	ParentNICs []string
	// Reservations are admin reservations (FloatingIP names) that must stay, for nobody.
	Reservations []string
}

// Pod is a live pod as the API server has it.
type Pod struct {
	Namespace, Name, UID string
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Sandbox is one ready pod sandbox of the runtime.
type Sandbox struct {
	ID, PodKey, PodUID string
	// Eth0Peer is the host-side ifindex of the veth behind the sandbox's eth0 (0: none, e.g. host network).
	Eth0Peer int
}

// CacheFile is a file kept per container; ContainerID is the container it names.
type CacheFile struct {
	Path, ContainerID string
}

// Link is one interface of the host's network namespace.
type Link struct {
	Name  string
	Index int
	// Kind is the link type (veth, macvlan, bridge, ...); Master and Parent are names, empty when none.
	Kind, Master, Parent string
}

// VF is one SR-IOV VF of the node.
type VF struct {
	PCIAddress, Netdev string
}

// Findings are what the check found wrong, each with its details.
type Findings struct {
	// Duplicates are addresses held, or in use, twice (or in use without the API server holding them).
	Duplicates []string
	// Leaks are things left behind or miscounted: FloatingIPs without a holder, wrong pool status, stale
	// cache files, sandboxes, links or VFs.
	Leaks []string
}

// Empty reports whether nothing was found.
func (f Findings) Empty() bool { return len(f.Duplicates) == 0 && len(f.Leaks) == 0 }

// Check runs every consistency check on the snapshot.
func Check(s Snapshot) Findings {
	var f Findings
	f.Duplicates = slices.Concat(duplicateFloatingIPs(s), duplicateInPods(s), unrecorded(s), lostReservations(s))
	f.Leaks = slices.Concat(ownerless(s), unused(s), poolStatus(s), staleSandboxes(s), staleCache(s), leftLinks(s), lostVFs(s))
	return f
}

// parseIP reads a FloatingIP's address; the schema guarantees it is one.
func parseIP(f *braidv1.FloatingIP) netip.Addr {
	a, _ := netip.ParseAddr(f.Spec.IP)
	return a.Unmap()
}

// duplicateFloatingIPs: no two FloatingIPs hold the same address (their names differ only by pool).
func duplicateFloatingIPs(s Snapshot) []string {
	by := map[netip.Addr][]string{}
	for i := range s.FloatingIPs {
		f := &s.FloatingIPs[i]
		by[parseIP(f)] = append(by[parseIP(f)], fmt.Sprintf("%s (pod %q)", f.Name, f.Spec.Pod))
	}
	var out []string
	for addr, names := range by {
		if len(names) > 1 {
			out = append(out, fmt.Sprintf("%s is held by %d FloatingIPs: %s", addr, len(names), strings.Join(names, ", ")))
		}
	}
	slices.Sort(out)
	return out
}

// podAddrs is every address an extra attachment of the pod has, inside the pod or in network-status.
func podAddrs(a demo.Attachment) []netip.Addr {
	var out []netip.Addr
	for _, p := range a.Addrs {
		out = append(out, p.Addr().Unmap())
	}
	for _, s := range a.Status {
		out = append(out, s.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// duplicateInPods: no address is configured in (or reported by) two interfaces of running pods.
func duplicateInPods(s Snapshot) []string {
	by := map[netip.Addr][]string{}
	for _, p := range s.Inside {
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			for _, addr := range podAddrs(a) {
				by[addr] = append(by[addr], p.Key()+" "+a.Interface)
			}
		}
	}
	var out []string
	for addr, users := range by {
		if len(users) > 1 {
			out = append(out, fmt.Sprintf("%s is in use by %s", addr, strings.Join(users, " and ")))
		}
	}
	slices.Sort(out)
	return out
}

// holds reports whether the FloatingIP holds its address for the running pod (by name, and by UID if it
// records one) and is not released.
func holds(f *braidv1.FloatingIP, p demo.Pod) bool {
	return f.Spec.Pod == p.Key() && (f.Spec.PodUID == "" || f.Spec.PodUID == p.UID) &&
		f.Status.Phase != braidv1.FloatingIPReleased
}

// unrecorded: every address a running pod uses is held for that pod by a FloatingIP; otherwise the server may
// hand it to another pod.
func unrecorded(s Snapshot) []string {
	by := map[netip.Addr][]*braidv1.FloatingIP{}
	for i := range s.FloatingIPs {
		a := parseIP(&s.FloatingIPs[i])
		by[a] = append(by[a], &s.FloatingIPs[i])
	}
	var out []string
	for _, p := range s.Inside {
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			for _, addr := range podAddrs(a) {
				fs := by[addr]
				if len(fs) == 0 {
					out = append(out, fmt.Sprintf("%s %s (%s) uses %s, which no FloatingIP holds", p.Key(), a.Interface, a.Network, addr))
					continue
				}
				if slices.ContainsFunc(fs, func(f *braidv1.FloatingIP) bool { return holds(f, p) }) {
					continue
				}
				for _, f := range fs {
					out = append(out, fmt.Sprintf("%s %s (%s) uses %s, but FloatingIP %s holds it for pod %q uid %q (phase %q)",
						p.Key(), a.Interface, a.Network, addr, f.Name, f.Spec.Pod, f.Spec.PodUID, f.Status.Phase))
				}
			}
		}
	}
	return out
}

// lostReservations: an admin reservation stays, held for nobody; gone, its address could be handed out while
// the host it was reserved for uses it.
func lostReservations(s Snapshot) []string {
	var out []string
	for _, name := range s.Reservations {
		i := slices.IndexFunc(s.FloatingIPs, func(f braidv1.FloatingIP) bool { return f.Name == name })
		switch {
		case i < 0:
			out = append(out, fmt.Sprintf("admin reservation %s is gone", name))
		case s.FloatingIPs[i].Spec.Pod != "" || s.FloatingIPs[i].Status.Phase == braidv1.FloatingIPReleased:
			out = append(out, fmt.Sprintf("admin reservation %s was handed out: pod %q, phase %q", name,
				s.FloatingIPs[i].Spec.Pod, s.FloatingIPs[i].Status.Phase))
		}
	}
	return out
}

func (s Snapshot) pool(name string) *braidv1.IPPool {
	for i := range s.Pools {
		if s.Pools[i].Name == name {
			return &s.Pools[i]
		}
	}
	return nil
}

// ownerless: every FloatingIP belongs to a live pod (name and UID), is an admin reservation or is kept by its
// policy (Never; KeepForStatefulSet while the StatefulSet wants the ordinal). One still cooling down counts
// too: the soak repeats the check until the cool-downs are over.
func ownerless(s Snapshot) []string {
	live := map[string]string{}
	for _, p := range s.Pods {
		live[p.Key()] = p.UID
	}
	var out []string
	for i := range s.FloatingIPs {
		f := &s.FloatingIPs[i]
		if why := unjustified(s, f, live); why != "" {
			out = append(out, fmt.Sprintf("FloatingIP %s (%s): %s", f.Name, f.Spec.IP, why))
		}
	}
	return out
}

// policy is the FloatingIP's effective release policy, as braid-ipam-server applies it: a FloatingIP made by
// hand without one is an admin reservation (Never).
func policy(f *braidv1.FloatingIP) braidv1.ReleasePolicy {
	if f.Spec.ReleasePolicy == "" {
		return braidv1.ReleaseNever
	}
	return f.Spec.ReleasePolicy
}

// unjustified says why the FloatingIP should not exist any more, or "" when something holds it.
func unjustified(s Snapshot, f *braidv1.FloatingIP, live map[string]string) string {
	if f.Status.Phase == braidv1.FloatingIPReleased {
		// Released addresses go once their pool's cool-down has passed: on a settled cluster none is left.
		cooldown := defaultCooldown
		if p := s.pool(f.Spec.Pool); p != nil && p.Spec.ReuseCooldown != nil {
			cooldown = p.Spec.ReuseCooldown.Duration
		}
		if f.Status.ReleasedAt == nil {
			return "released without releasedAt, so it never expires"
		}
		age := s.Now.Sub(f.Status.ReleasedAt.Time)
		if age > cooldown+expiryGrace {
			return fmt.Sprintf("released %s ago, its pool's cool-down is %s: it should be gone", age.Round(time.Second), cooldown)
		}
		return fmt.Sprintf("released %s ago, still cooling down (%s) for pod %q", age.Round(time.Second), cooldown, f.Spec.Pod)
	}
	if f.Spec.Pod == "" {
		return "" // an admin reservation
	}
	if uid, ok := live[f.Spec.Pod]; ok && (f.Spec.PodUID == "" || f.Spec.PodUID == uid) {
		return "" // bound to a live pod, or reserved for its name
	}
	switch policy(f) {
	case braidv1.ReleaseNever:
		return ""
	case braidv1.ReleaseKeepForStatefulSet:
		if wantedOrdinal(s, f) {
			return ""
		}
	}
	return fmt.Sprintf("names pod %q uid %q, which is gone, and nothing keeps it (policy %s, phase %q)",
		f.Spec.Pod, f.Spec.PodUID, policy(f), f.Status.Phase)
}

// wantedOrdinal reports whether the FloatingIP's pod is an ordinal its StatefulSet still wants.
func wantedOrdinal(s Snapshot, f *braidv1.FloatingIP) bool {
	ns, name, _ := strings.Cut(f.Spec.Pod, "/")
	set := f.Annotations[statefulSetAnnotation]
	ordinal, cut := strings.CutPrefix(name, set+"-")
	n, err := strconv.Atoi(ordinal)
	want, ok := s.StatefulSets[ns+"/"+set]
	return set != "" && cut && err == nil && ok && n >= want[0] && n < want[1]
}

// unused: a FloatingIP held for a running pod is an address that pod uses (a second address for the same
// interface would be lost to the pool).
func unused(s Snapshot) []string {
	inside := map[string]demo.Pod{}
	for _, p := range s.Inside {
		inside[p.Key()] = p
	}
	var out []string
	for i := range s.FloatingIPs {
		f := &s.FloatingIPs[i]
		p, ok := inside[f.Spec.Pod]
		if !ok || !holds(f, p) {
			continue
		}
		used := false
		for _, a := range p.Attachments {
			used = used || (!a.Default && slices.Contains(podAddrs(a), parseIP(f)))
		}
		if !used {
			out = append(out, fmt.Sprintf("FloatingIP %s holds %s for %s %s, which the pod does not use", f.Name, f.Spec.IP, p.Key(), f.Spec.Interface))
		}
	}
	return out
}

// poolStatus: each pool's status counts its FloatingIPs (used) and free = total - used.
func poolStatus(s Snapshot) []string {
	count := map[string]int64{}
	for i := range s.FloatingIPs {
		count[s.FloatingIPs[i].Spec.Pool]++
	}
	var out []string
	for _, p := range s.Pools {
		st := p.Status
		if st.Used != count[p.Name] {
			out = append(out, fmt.Sprintf("IPPool %s: status.used %d, but %d FloatingIPs name it", p.Name, st.Used, count[p.Name]))
		}
		total, ok1 := new(big.Int).SetString(st.Total, 10)
		free, ok2 := new(big.Int).SetString(st.Free, 10)
		if !ok1 || !ok2 {
			out = append(out, fmt.Sprintf("IPPool %s: status.total %q / status.free %q are not numbers", p.Name, st.Total, st.Free))
			continue
		}
		if want := new(big.Int).Sub(total, big.NewInt(count[p.Name])); want.Cmp(free) != 0 {
			out = append(out, fmt.Sprintf("IPPool %s: status.free %s, want total %s - %d FloatingIPs = %s", p.Name, free, total, count[p.Name], want))
		}
	}
	return out
}

// staleSandboxes: every ready sandbox belongs to a live pod (same UID).
func staleSandboxes(s Snapshot) []string {
	live := map[string]bool{}
	for _, p := range s.Pods {
		live[p.UID] = true
	}
	var out []string
	for _, sb := range s.Sandboxes {
		if !live[sb.PodUID] {
			out = append(out, fmt.Sprintf("sandbox %.12s of pod %s (uid %s) is still ready, the pod is gone", sb.ID, sb.PodKey, sb.PodUID))
		}
	}
	return out
}

// staleCache: every per-container cache file names a ready sandbox.
func staleCache(s Snapshot) []string {
	ready := map[string]bool{}
	for _, sb := range s.Sandboxes {
		ready[sb.ID] = true
	}
	var out []string
	for _, c := range s.CacheFiles {
		if !ready[c.ContainerID] {
			out = append(out, fmt.Sprintf("stale cache file %s: container %.12s has no ready sandbox", c.Path, c.ContainerID))
		}
	}
	return out
}

// leftLinks: every veth on the cluster bridge is a live sandbox's eth0 peer, and no macvlan is left in the
// host's namespace on a NIC of the underlay (the plugin creates it there and moves it into the pod).
func leftLinks(s Snapshot) []string {
	peers := map[int]bool{}
	for _, sb := range s.Sandboxes {
		if sb.Eth0Peer > 0 {
			peers[sb.Eth0Peer] = true
		}
	}
	var out []string
	for _, l := range s.Links {
		switch {
		case l.Kind == "veth" && l.Master == clusterBridge && !peers[l.Index]:
			out = append(out, fmt.Sprintf("veth %s (ifindex %d) on %s belongs to no ready sandbox", l.Name, l.Index, clusterBridge))
		case (l.Kind == "macvlan" || l.Kind == "ipvlan") && slices.Contains(s.ParentNICs, l.Parent):
			out = append(out, fmt.Sprintf("%s %s on %s left in the host's namespace", l.Kind, l.Name, l.Parent))
		}
	}
	return out
}

// lostVFs: every VF is back on the node or held by a running pod.
func lostVFs(s Snapshot) []string {
	var out []string
	for _, vf := range s.VFs {
		onNode := slices.ContainsFunc(s.Links, func(l Link) bool { return l.Name == vf.Netdev })
		holder := ""
		for _, p := range s.Inside {
			for _, a := range p.Attachments {
				if a.PCIAddress == vf.PCIAddress {
					holder = p.Key()
				}
			}
		}
		if !onNode && holder == "" {
			out = append(out, fmt.Sprintf("VF %s (netdev %s) is neither on the node nor in a running pod", vf.PCIAddress, vf.Netdev))
		}
	}
	return out
}
