package server_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

func TestServesDualStackAndReleasesOnDeletion(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "basic-v4", "192.0.2.0/24", func(p *braidv1.IPPool) {
		p.Spec.Gateway = "192.0.2.1"
		p.Spec.Routes = []braidv1.Route{{Dst: "203.0.113.0/24"}}
		p.Spec.DNS = &braidv1.DNS{Nameservers: []string{"192.0.2.53"}}
	})
	mkPool(t, "basic-v6", "2001:db8:1::/64")
	mkNAD(t, ns, "mgmt", "basic-v4", "basic-v6")
	startServer(t, "")

	pod := mkPod(t, ns, "p1", "node-1", "mgmt")
	a := assignments(t, ns, "p1", "net1")
	iface := a.Interfaces["net1"]
	if len(iface.Addresses) != 2 {
		t.Fatalf("want a v4 and a v6 address, got %+v", iface.Addresses)
	}
	v4, v6 := iface.Addresses[0], iface.Addresses[1]
	if v4.CIDR != "192.0.2.2/24" || v4.Gateway != "192.0.2.1" || v4.Pool != "basic-v4" {
		t.Errorf("v4 = %+v, want 192.0.2.2/24 via 192.0.2.1 from basic-v4", v4)
	}
	if v6.CIDR != "2001:db8:1::1/64" || v6.Pool != "basic-v6" {
		t.Errorf("v6 = %+v, want 2001:db8:1::1/64 from basic-v6", v6)
	}
	if iface.Network != ns+"/mgmt" || len(iface.Routes) != 1 || iface.DNS == nil || iface.DNS.Nameservers[0] != "192.0.2.53" {
		t.Errorf("interface = %+v, want network, one route and DNS", iface)
	}
	f := &braidv1.FloatingIP{}
	name := server.FloatingIPName("basic-v4", netip.MustParseAddr("192.0.2.2"))
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, f); err != nil {
		t.Fatalf("FloatingIP %s: %v", name, err)
	}
	want := braidv1.FloatingIPSpec{IP: "192.0.2.2", Pool: "basic-v4", Pod: ns + "/p1", PodUID: string(pod.UID),
		Interface: "net1", Network: ns + "/mgmt", Node: "node-1", ReleasePolicy: braidv1.ReleaseOnPodDeletion}
	if f.Spec != want {
		t.Errorf("FloatingIP spec = %+v, want %+v", f.Spec, want)
	}
	eventually(t, 10*time.Second, "pool status counts the address", func() (bool, string) {
		s := poolStatus(t, "basic-v4")
		return s.Used == 1 && s.Total == "253" && s.Free == "252", fmt.Sprintf("%+v", s)
	})

	deletePod(t, pod)
	eventually(t, 10*time.Second, "addresses released", func() (bool, string) {
		n := len(fips(t, "basic-v4")) + len(fips(t, "basic-v6"))
		return n == 0, fmt.Sprintf("%d FloatingIPs left", n)
	})
	eventually(t, 10*time.Second, "pool status back to 0", func() (bool, string) {
		s := poolStatus(t, "basic-v4")
		return s.Used == 0 && s.Free == "253", fmt.Sprintf("%+v", s)
	})
}

// TestBurst500PodsTwoReplicas: 500 pods at once across 10 nodes, two leader-elected replicas; every pod gets a
// v4 and a v6 address, all distinct, pool status exact; deleting them all leaves no FloatingIP and used = 0.
func TestBurst500PodsTwoReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("500 pods")
	}
	ns := env.Namespace(t)
	mkPool(t, "burst-a", "192.0.2.0/24")
	mkPool(t, "burst-b", "198.51.100.0/24") // 254 + 254 >= 500: the second pool takes over when the first is full
	mkPool(t, "burst-v6", "2001:db8:2::/64")
	mkNAD(t, ns, "burst", "burst-a", "burst-b", "burst-v6")
	startServer(t, "burst-lease")
	startServer(t, "burst-lease")

	const pods = 500
	created := make([]*struct{ name string }, 0, pods)
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for i := range pods {
		name := fmt.Sprintf("b%03d", i)
		created = append(created, &struct{ name string }{name})
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- k8s.Create(context.Background(), podObj(ns, name, fmt.Sprintf("node-%d", i%10), "burst"))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for _, c := range created {
		a := assignments(t, ns, c.name, "net1")
		if n := len(a.Interfaces["net1"].Addresses); n != 2 {
			t.Fatalf("pod %s has %d addresses, want 2", c.name, n)
		}
		for _, addr := range a.Interfaces["net1"].Addresses {
			if other, dup := seen[addr.CIDR]; dup {
				t.Fatalf("address %s given to %s and %s", addr.CIDR, other, c.name)
			}
			seen[addr.CIDR] = c.name
		}
	}
	held := len(fips(t, "burst-a")) + len(fips(t, "burst-b"))
	if held != pods || len(fips(t, "burst-v6")) != pods {
		t.Fatalf("FloatingIPs: %d v4 and %d v6, want %d each (a leak or a duplicate)", held, len(fips(t, "burst-v6")), pods)
	}
	eventually(t, 30*time.Second, "pool status exact", func() (bool, string) {
		a, b, v6 := poolStatus(t, "burst-a"), poolStatus(t, "burst-b"), poolStatus(t, "burst-v6")
		ok := a.Used == 254 && a.Free == "0" && b.Used == pods-254 && b.Free == fmt.Sprint(254-(pods-254)) && v6.Used == pods
		return ok, fmt.Sprintf("a=%+v b=%+v v6 used=%d", a, b, v6.Used)
	})

	if err := k8s.DeleteAllOf(context.Background(), podObj(ns, "", "", ""), client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every address released", func() (bool, string) {
		n := len(fips(t, "burst-a")) + len(fips(t, "burst-b")) + len(fips(t, "burst-v6"))
		return n == 0, fmt.Sprintf("%d FloatingIPs left", n)
	})
	eventually(t, 30*time.Second, "pool status back to 0", func() (bool, string) {
		a, b, v6 := poolStatus(t, "burst-a"), poolStatus(t, "burst-b"), poolStatus(t, "burst-v6")
		return a.Used == 0 && b.Used == 0 && v6.Used == 0, fmt.Sprintf("used a=%d b=%d v6=%d", a.Used, b.Used, v6.Used)
	})
}

// The allocation latency histogram counts from the server's first sight of the bound pod, not from its
// creationTimestamp (whole seconds, which added 0.5 s on average to every observation).
func TestAllocationLatencyIsMeasuredInMilliseconds(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "latency-v4", "198.51.100.0/24")
	mkNAD(t, ns, "lat", "latency-v4")
	reg := prometheus.NewRegistry()
	startServer(t, "", func(o *server.Options) { o.Registry = reg })
	const pods = 20
	for i := range pods {
		mkPod(t, ns, fmt.Sprintf("p%d", i), "node-1", "lat")
		assignments(t, ns, fmt.Sprintf("p%d", i), "net1")
	}
	var count uint64
	var sum float64
	eventually(t, 10*time.Second, "every allocation observed", func() (bool, string) {
		mfs, err := reg.Gather()
		if err != nil {
			return false, err.Error()
		}
		for _, mf := range mfs {
			if mf.GetName() == "braid_ipam_allocation_duration_seconds" {
				h := mf.GetMetric()[0].GetHistogram()
				count, sum = h.GetSampleCount(), h.GetSampleSum()
			}
		}
		return count == pods, fmt.Sprintf("%d observations", count)
	})
	if mean := sum / float64(count); mean > 0.3 {
		t.Errorf("mean allocation latency %.3fs for %d pods served one by one on an idle server: not measured from first sight", mean, pods)
	}
}
