package plugin

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/crds/selection"
)

// Through the real braid-shim binary and braid's node daemon, a pod gets the same interfaces and the same
// network-status as from the plain plugin, with no API request on the ADD's path (pod and NADs come from the
// daemon's watch cache) and exactly one afterwards (the queued network-status write); CHECK and DEL work the
// same way, and DEL leaves nothing.
func TestDaemonServesCallsThroughTheShim(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newDaemonRig(t, v)
			r.standardNADs()
			p := r.pod("web", map[string]string{selection.NetworksAnnotation: standardSelection})
			waitCached(t, r, p)

			r.apiCalls.Store(0)
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if got := keys(links(t, p.netns)); !cmp.Equal(got, []string{"data0", "eth0", "net1", "net2"}) {
				t.Fatalf("pod interfaces = %v, want data0 eth0 net1 net2", got)
			}
			if net2 := addrs(t, p.netns, "net2"); !cmp.Equal(net2, []string{"198.51.100.200"}) {
				t.Errorf("net2 addresses = %v, want the requested 198.51.100.200", net2)
			}
			routes := defaultRoutes(t, p.netns)
			if !cmp.Equal(routes, []string{"data0 via 192.0.2.1", "eth0 via 2001:db8:1::1"}) {
				t.Errorf("default routes = %v, want data0 via 192.0.2.1 and eth0 via 2001:db8:1::1", routes)
			}
			sts := r.waitStatus(p)
			if n := r.apiCalls.Load(); n != 1 {
				t.Errorf("ADD made %d API requests in all, want 1 (the network-status write)", n)
			}
			var ifs []string
			for _, s := range sts {
				ifs = append(ifs, s.Interface)
				if got := addrs(t, p.netns, s.Interface); !cmp.Equal(s.IPs, got) {
					t.Errorf("status IPs of %s = %v, pod has %v", s.Interface, s.IPs, got)
				}
			}
			if !cmp.Equal(ifs, []string{"eth0", "net1", "net2", "data0"}) || !sts[0].Default {
				t.Errorf("network-status interfaces = %v (eth0 default: %v), want eth0 net1 net2 data0", ifs, len(sts) > 0 && sts[0].Default)
			}

			if _, err := r.call("CHECK", r.args(p)); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			r.assertGone(p)
			if err := r.del(p); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			if _, err := r.call("STATUS", r.args(p)); err != nil && v == "1.1.0" {
				t.Errorf("STATUS: %v", err)
			}
		})
	}
}

// braid's errors reach the runtime through the shim with their code and message, and the pod gets its Event.
func TestDaemonKeepsErrorCodes(t *testing.T) {
	r := newDaemonRig(t, "1.0.0")
	r.standardNADs()
	p := r.pod("bad", map[string]string{selection.NetworksAnnotation: `net-a,missing-net`})
	waitCached(t, r, p)
	_, err := r.add(p)
	var cniErr *types.Error
	if !asCNIError(err, &cniErr) || cniErr.Code != CodeNetwork || !strings.Contains(cniErr.Msg, "missing-net") {
		t.Fatalf("ADD with a missing NAD: %v, want code %d naming missing-net", err, CodeNetwork)
	}
	if ls := links(t, p.netns); len(ls) != 0 {
		t.Errorf("interfaces left after the failed ADD: %v", keys(ls))
	}
	if !eventually(func() bool { return len(r.addFailedEvents(p)) > 0 }) {
		t.Errorf("no %s Event on the pod", EventReason)
	}
}

// Without the daemon, the shim fails with "try again later" and says where it looked; STATUS says the plugin
// is not available (CNI 1.1 code 50), which is what a runtime acts on for STATUS.
func TestShimWithoutDaemonSaysTryAgain(t *testing.T) {
	r := newDaemonRig(t, "1.0.0")
	p := r.pod("early", nil)
	r.stop()
	if _, err := os.Stat(r.socket); err == nil {
		t.Fatalf("socket %s still there after the daemon stopped", r.socket)
	}
	_, err := r.add(p)
	var cniErr *types.Error
	if !asCNIError(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, r.socket) {
		t.Fatalf("ADD without daemon: %v, want code 11 naming %s", err, r.socket)
	}
	status := r.args(p)
	status.StdinData = bytes.Replace(status.StdinData, []byte(`"cniVersion":"1.0.0"`), []byte(`"cniVersion":"1.1.0"`), 1)
	if _, err := r.call("STATUS", status); !asCNIError(err, &cniErr) || cniErr.Code != 50 || !strings.Contains(cniErr.Msg, r.socket) {
		t.Errorf("STATUS without daemon: %v, want code 50 naming %s", err, r.socket)
	}
	if f, _ := filepath.Glob(filepath.Join(r.dir, "cni", "*", "*")); len(f) != 0 {
		t.Errorf("files written without a daemon: %v", f)
	}
}

// waitCached waits until the daemon's cache has the pod, so that a test's request count is exact.
func waitCached(t *testing.T, r *daemonRig, p *pod) {
	t.Helper()
	ok := eventually(func() bool {
		_, found, _ := r.d.Cache.Pods().GetByKey(r.ns + "/" + p.name)
		return found
	})
	if !ok {
		t.Fatalf("pod %s not in the daemon's cache after 10s", p.name)
	}
}

func eventually(f func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func asCNIError(err error, target **types.Error) bool { return errors.As(err, target) }
