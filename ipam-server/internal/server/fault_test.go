package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
)

// replica is a braid-ipam-server process.
type replica struct {
	cmd                *exec.Cmd
	metrics, readiness string
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startReplica(t *testing.T, bin, kubeconfig, lease string) *replica {
	t.Helper()
	r := &replica{metrics: freePort(t), readiness: freePort(t)}
	r.cmd = exec.Command(bin, "--kubeconfig", kubeconfig, "--leader-elect", "--leader-election-id", lease,
		"--leader-election-namespace", "default", "--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms",
		"--metrics-bind-address", r.metrics, "--health-probe-bind-address", r.readiness)
	logf, err := os.Create(filepath.Join(t.TempDir(), "replica.log"))
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		_, _ = r.cmd.Process.Wait()
	})
	return r
}

func (r *replica) scrape() string {
	resp, err := http.Get("http://" + r.metrics + "/metrics") //nolint:noctx // a test's loopback scrape
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// isLeader reads controller-runtime's leader_election_master_status metric of the replica.
func (r *replica) isLeader() bool {
	sc := bufio.NewScanner(strings.NewReader(r.scrape()))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "leader_election_master_status{") && strings.HasSuffix(sc.Text(), " 1") {
			return true
		}
	}
	return false
}

func (r *replica) ready() bool {
	resp, err := http.Get("http://" + r.readiness + "/readyz") //nolint:noctx // a test's loopback probe
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestLeaderKilledMidBurst: two real braid-ipam-server processes; the leader gets SIGKILL while 300 pods are
// being served; the other takes over: every pod served, no address twice, no FloatingIP left over.
func TestLeaderKilledMidBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two server processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "braid-ipam-server")
	if err := testenv.Build(t.Context(), dir, "./ipam-server/cmd/braid-ipam-server"); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, "braid-ipam-server", "system:masters"); err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	mkPool(t, "fault-v4", "203.0.113.0/24")
	mkPool(t, "fault-v6", "2001:db8:3::/64")
	mkNAD(t, ns, "fault", "fault-v4", "fault-v6")

	replicas := []*replica{startReplica(t, bin, kubeconfig, "fault-lease"), startReplica(t, bin, kubeconfig, "fault-lease")}
	var leader, standby *replica
	eventually(t, 30*time.Second, "a leader is elected and ready", func() (bool, string) {
		for i, r := range replicas {
			if r.isLeader() && r.ready() {
				leader, standby = r, replicas[1-i]
				return true, ""
			}
		}
		return false, "no ready leader yet"
	})
	if !standby.ready() {
		t.Errorf("the standby replica should report ready once its cache has synced")
	}

	const pods = 200
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k8s.Create(context.Background(), podObj(ns, fmt.Sprintf("f%03d", i), fmt.Sprintf("node-%d", i%10), "fault")); err != nil {
				t.Error(err)
			}
		}()
	}
	eventually(t, 30*time.Second, "the burst is partly served", func() (bool, string) {
		n := len(fips(t, "fault-v4"))
		return n >= 40, fmt.Sprintf("%d served", n)
	})
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := len(fips(t, "fault-v4"))
	wg.Wait()
	if killedAt >= pods {
		t.Fatalf("the leader served the whole burst (%d) before it was killed; the test proves nothing", killedAt)
	}
	eventually(t, 30*time.Second, "the standby takes over", func() (bool, string) { return standby.isLeader(), "" })

	seen := map[string]string{}
	for i := range pods {
		name := fmt.Sprintf("f%03d", i)
		a := assignments(t, ns, name, "net1")
		if len(a.Interfaces["net1"].Addresses) != 2 {
			t.Fatalf("%s: %+v, want one v4 and one v6", name, a.Interfaces["net1"])
		}
		for _, addr := range a.Interfaces["net1"].Addresses {
			if other, dup := seen[addr.CIDR]; dup {
				t.Fatalf("%s held by %s and %s", addr.CIDR, other, name)
			}
			seen[addr.CIDR] = name
		}
	}
	if v4, v6 := len(fips(t, "fault-v4")), len(fips(t, "fault-v6")); v4 != pods || v6 != pods {
		t.Fatalf("FloatingIPs: %d v4, %d v6, want %d each (leaked or duplicated across the failover)", v4, v6, pods)
	}
	t.Logf("leader killed after %d of %d pods; the standby served the rest", killedAt, pods)
	eventually(t, 10*time.Second, "the new leader's metrics count its work", func() (bool, string) {
		m := standby.scrape()
		return strings.Contains(m, `braid_ipam_allocations_total{pool="fault-v4"}`) &&
				strings.Contains(m, `braid_ipam_pool_used{pool="fault-v4"} 200`) &&
				strings.Contains(m, "braid_ipam_allocation_duration_seconds_count"),
			"metrics lack braid_ipam_allocations_total / pool_used=200 / latency histogram"
	})

	if err := k8s.DeleteAllOf(context.Background(), &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "no FloatingIP left", func() (bool, string) {
		n := len(fips(t, "fault-v4")) + len(fips(t, "fault-v6"))
		return n == 0, fmt.Sprintf("%d left", n)
	})
}
