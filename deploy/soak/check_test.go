package soak

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	sb0 = "0000000000000000000000000000000000000000000000000000000000000a00"
	sb1 = "0000000000000000000000000000000000000000000000000000000000000a01"
)

func fip(ip, pod, uid string, pol braidv1.ReleasePolicy, phase braidv1.FloatingIPPhase) braidv1.FloatingIP {
	return braidv1.FloatingIP{
		ObjectMeta: metav1.ObjectMeta{Name: "mgmt-" + strings.ReplaceAll(ip, ".", "-")},
		Spec:       braidv1.FloatingIPSpec{IP: ip, Pool: "mgmt", Pod: pod, PodUID: uid, Interface: "net1", ReleasePolicy: pol},
		Status:     braidv1.FloatingIPStatus{Phase: phase},
	}
}

func attach(ifname, network string, addrs ...string) demo.Attachment {
	a := demo.Attachment{Network: network, Interface: ifname}
	for _, s := range addrs {
		p := netip.MustParsePrefix(s)
		a.Addrs = append(a.Addrs, p)
		a.Status = append(a.Status, p.Addr())
	}
	return a
}

// consistent is a settled node: StatefulSet pod db-0 (mgmt and a VF), Deployment pod web-a (mgmt), an admin
// reservation, pool status that counts them, the two pods' sandboxes with their cache files and veths.
func consistent() Snapshot {
	db := fip("192.0.2.10", "braid-demo/db-0", "u0", braidv1.ReleaseKeepForStatefulSet, "")
	db.Annotations = map[string]string{statefulSetAnnotation: "db"}
	return Snapshot{
		Now:          now,
		Pods:         []Pod{{"braid-demo", "db-0", "u0"}, {"braid-demo", "web-a", "u1"}, {"braid-system", "braid-x", "u2"}},
		StatefulSets: map[string][2]int{"braid-demo/db": {0, 2}},
		FloatingIPs: []braidv1.FloatingIP{db,
			fip("192.0.2.11", "braid-demo/web-a", "u1", braidv1.ReleaseKeepForStatefulSet, ""),
			fip("192.0.2.150", "", "", "", "")},
		Pools: []braidv1.IPPool{{
			ObjectMeta: metav1.ObjectMeta{Name: "mgmt"},
			Spec:       braidv1.IPPoolSpec{ReuseCooldown: &metav1.Duration{Duration: 10 * time.Second}},
			Status:     braidv1.IPPoolStatus{Total: "190", Used: 3, Free: "187"},
		}},
		Inside: []demo.Pod{
			{Namespace: "braid-demo", Name: "db-0", UID: "u0", Attachments: []demo.Attachment{
				{Network: "braid-cluster", Interface: "eth0", Default: true, Status: []netip.Addr{netip.MustParseAddr("2001:db8:ff::5")}},
				attach("net1", "braid-demo/mgmt", "192.0.2.10/24"),
				{Network: "braid-demo/data", Interface: "net3", PCIAddress: "0000:3b:02.0"},
			}},
			{Namespace: "braid-demo", Name: "web-a", UID: "u1", Attachments: []demo.Attachment{attach("net1", "braid-demo/mgmt", "192.0.2.11/24")}},
		},
		Sandboxes: []Sandbox{{ID: sb0, PodKey: "braid-demo/db-0", PodUID: "u0", Eth0Peer: 10}, {ID: sb1, PodKey: "braid-demo/web-a", PodUID: "u1", Eth0Peer: 11}},
		CacheFiles: []CacheFile{
			{Path: "/c/braid/attachments/" + sb0 + ".json", ContainerID: sb0},
			{Path: "/var/lib/cni/results/braid-cluster-" + sb1 + "-eth0", ContainerID: sb1},
		},
		Links: []Link{{Name: "braidclu0", Index: 3, Kind: "bridge"}, {Name: "veth10", Index: 10, Kind: "veth", Master: "braidclu0"},
			{Name: "veth11", Index: 11, Kind: "veth", Master: "braidclu0"}, {Name: "mgmt0", Index: 4, Kind: "veth"},
			{Name: "vf1", Index: 6, Kind: "veth"}, {Name: "vf2", Index: 7, Kind: "veth"}, {Name: "eth0", Index: 2, Kind: "device"}},
		VFs:          []VF{{"0000:3b:02.0", "vf0"}, {"0000:3b:02.1", "vf1"}, {"0000:3b:02.2", "vf2"}},
		ParentNICs:   []string{"mgmt0", "ctl0"},
		Reservations: []string{"mgmt-192-0-2-150"},
	}
}

func TestCheckConsistent(t *testing.T) {
	if f := Check(consistent()); !f.Empty() {
		t.Fatalf("a consistent snapshot has findings: %+v", f)
	}
}

// TestCheckFinds breaks the consistent snapshot one way at a time: each check must report exactly what broke,
// in its category, and nothing else.
func TestCheckFinds(t *testing.T) {
	cases := []struct {
		name        string
		mutate      func(s *Snapshot)
		dups, leaks []string // substrings of the expected findings, in order
	}{
		{"two FloatingIPs of one address", func(s *Snapshot) {
			f := fip("192.0.2.10", "", "", "", "")
			f.Name, f.Spec.Pool = "other-192-0-2-10", "other"
			s.FloatingIPs = append(s.FloatingIPs, f)
		}, []string{"192.0.2.10 is held by 2 FloatingIPs: mgmt-192-0-2-10"}, nil},
		{"one address in two pods", func(s *Snapshot) {
			s.Inside[1].Attachments[0] = attach("net1", "braid-demo/mgmt", "192.0.2.10/24")
		}, []string{"192.0.2.10 is in use by braid-demo/db-0 net1 and braid-demo/web-a net1",
			"braid-demo/web-a net1 (braid-demo/mgmt) uses 192.0.2.10, but FloatingIP mgmt-192-0-2-10 holds it for pod \"braid-demo/db-0\""},
			[]string{"FloatingIP mgmt-192-0-2-11 holds 192.0.2.11 for braid-demo/web-a net1, which the pod does not use"}},
		{"an address in network-status only", func(s *Snapshot) {
			s.Inside[1].Attachments[0].Status = append(s.Inside[1].Attachments[0].Status, netip.MustParseAddr("192.0.2.12"))
		}, []string{"uses 192.0.2.12, which no FloatingIP holds"}, nil},
		{"a pod uses an address released meanwhile", func(s *Snapshot) {
			s.FloatingIPs[1].Status = braidv1.FloatingIPStatus{Phase: braidv1.FloatingIPReleased, ReleasedAt: &metav1.Time{Time: now}}
		}, []string{"uses 192.0.2.11, but FloatingIP mgmt-192-0-2-11 holds it for pod \"braid-demo/web-a\" uid \"u1\" (phase \"Released\")"},
			[]string{"released 0s ago, still cooling down (10s)"}},
		{"a FloatingIP of a deleted pod", func(s *Snapshot) {
			s.FloatingIPs = append(s.FloatingIPs, fip("192.0.2.12", "braid-demo/web-gone", "u9", braidv1.ReleaseOnPodDeletion, ""))
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 4, "186"
		}, nil, []string{"FloatingIP mgmt-192-0-2-12 (192.0.2.12): names pod \"braid-demo/web-gone\" uid \"u9\", which is gone"}},
		{"a FloatingIP of an earlier pod of the same name", func(s *Snapshot) {
			s.FloatingIPs[1].Spec.PodUID = "u-old"
		}, []string{"uses 192.0.2.11, but FloatingIP mgmt-192-0-2-11 holds it for pod \"braid-demo/web-a\" uid \"u-old\""},
			[]string{"names pod \"braid-demo/web-a\" uid \"u-old\", which is gone"}},
		{"an ordinal the StatefulSet no longer wants", func(s *Snapshot) {
			f := fip("192.0.2.12", "braid-demo/db-1", "", braidv1.ReleaseKeepForStatefulSet, "")
			f.Annotations = map[string]string{statefulSetAnnotation: "db"}
			s.FloatingIPs = append(s.FloatingIPs, f)
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 4, "186"
			s.StatefulSets["braid-demo/db"] = [2]int{0, 1}
		}, nil, []string{"names pod \"braid-demo/db-1\" uid \"\", which is gone, and nothing keeps it (policy KeepForStatefulSet"}},
		{"a released FloatingIP past its cool-down", func(s *Snapshot) {
			f := fip("192.0.2.12", "braid-demo/web-gone", "u9", braidv1.ReleaseOnPodDeletion, braidv1.FloatingIPReleased)
			f.Status.ReleasedAt = &metav1.Time{Time: now.Add(-30 * time.Second)}
			s.FloatingIPs = append(s.FloatingIPs, f)
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 4, "186"
		}, nil, []string{"released 30s ago, its pool's cool-down is 10s: it should be gone"}},
		{"an admin reservation deleted", func(s *Snapshot) {
			s.FloatingIPs = s.FloatingIPs[:2]
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 2, "188"
		}, []string{"admin reservation mgmt-192-0-2-150 is gone"}, nil},
		{"an admin reservation handed out", func(s *Snapshot) {
			s.FloatingIPs[2].Spec.Pod = "braid-demo/web-gone"
		}, []string{"admin reservation mgmt-192-0-2-150 was handed out: pod \"braid-demo/web-gone\""}, nil},
		{"a released FloatingIP still cooling down", func(s *Snapshot) {
			f := fip("192.0.2.12", "braid-demo/web-gone", "u9", braidv1.ReleaseOnPodDeletion, braidv1.FloatingIPReleased)
			f.Status.ReleasedAt = &metav1.Time{Time: now.Add(-5 * time.Second)}
			s.FloatingIPs = append(s.FloatingIPs, f)
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 4, "186"
		}, nil, []string{"released 5s ago, still cooling down (10s) for pod \"braid-demo/web-gone\""}},
		{"pool status.used wrong", func(s *Snapshot) { s.Pools[0].Status.Used = 2 },
			nil, []string{"IPPool mgmt: status.used 2, but 3 FloatingIPs name it"}},
		{"pool status.free wrong", func(s *Snapshot) { s.Pools[0].Status.Free = "188" },
			nil, []string{"IPPool mgmt: status.free 188, want total 190 - 3 FloatingIPs = 187"}},
		{"a sandbox of a deleted pod", func(s *Snapshot) {
			s.Sandboxes = append(s.Sandboxes, Sandbox{ID: strings.Repeat("b", 64), PodKey: "braid-demo/web-gone", PodUID: "u9"})
		}, nil, []string{"sandbox bbbbbbbbbbbb of pod braid-demo/web-gone (uid u9) is still ready"}},
		{"a cache file of a gone container", func(s *Snapshot) {
			s.CacheFiles = append(s.CacheFiles, CacheFile{Path: "/c/braid/results/mgmt-x-net1", ContainerID: strings.Repeat("c", 64)})
		}, nil, []string{"stale cache file /c/braid/results/mgmt-x-net1: container cccccccccccc has no ready sandbox"}},
		{"a veth of a gone sandbox", func(s *Snapshot) {
			s.Links = append(s.Links, Link{Name: "veth12", Index: 12, Kind: "veth", Master: "braidclu0"})
		}, nil, []string{"veth veth12 (ifindex 12) on braidclu0 belongs to no ready sandbox"}},
		{"a macvlan left on the host", func(s *Snapshot) {
			s.Links = append(s.Links, Link{Name: "tmp123", Index: 12, Kind: "macvlan", Parent: "mgmt0"},
				Link{Name: "other", Index: 13, Kind: "macvlan", Parent: "eth0"}) // not on the underlay: not braid's
		}, nil, []string{"macvlan tmp123 on mgmt0 left in the host's namespace"}},
		{"a VF neither on the node nor in a pod", func(s *Snapshot) {
			s.Links = s.Links[:len(s.Links)-3]
			s.Links = append(s.Links, Link{Name: "eth0", Index: 2, Kind: "device"}, Link{Name: "vf2", Index: 7, Kind: "veth"})
		}, nil, []string{"VF 0000:3b:02.1 (netdev vf1) is neither on the node nor in a running pod"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := consistent()
			c.mutate(&s)
			f := Check(s)
			match(t, "duplicates", f.Duplicates, c.dups)
			match(t, "leaks", f.Leaks, c.leaks)
		})
	}
}

// TestCheckKeeps: what braid keeps on purpose is no leak.
func TestCheckKeeps(t *testing.T) {
	cases := map[string]braidv1.FloatingIP{
		"an ordinal the StatefulSet still wants": func() braidv1.FloatingIP {
			f := fip("192.0.2.12", "braid-demo/db-1", "", braidv1.ReleaseKeepForStatefulSet, "")
			f.Annotations = map[string]string{statefulSetAnnotation: "db"}
			return f
		}(),
		"policy Never":          fip("192.0.2.12", "braid-demo/web-gone", "u9", braidv1.ReleaseNever, ""),
		"a reservation by name": fip("192.0.2.12", "braid-demo/later", "", "", ""),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			s := consistent()
			s.FloatingIPs = append(s.FloatingIPs, f)
			s.Pools[0].Status.Used, s.Pools[0].Status.Free = 4, "186"
			if got := Check(s); !got.Empty() {
				t.Errorf("findings: %+v", got)
			}
		})
	}
}

func match(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d %q, want %d matching %q", what, len(got), got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("%s[%d] = %q, want it to contain %q", what, i, got[i], want[i])
		}
	}
}
