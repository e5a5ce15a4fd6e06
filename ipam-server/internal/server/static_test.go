package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// A static address the pool cannot give as asked is refused with an Event that names the field (the network
// selection's ips), says what is wrong with the address, and no FloatingIP is made: the network and broadcast
// addresses, an excluded address, and an address asked with a prefix length other than the pool's (the pod
// would be configured with a mask its network does not have).
func TestStaticAddressRefusalsNameTheFieldAndTheProblem(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "refuse-v4", "192.0.2.0/24", func(p *braidv1.IPPool) {
		p.Spec.Gateway = "192.0.2.1"
		p.Spec.Excludes = []string{"192.0.2.200/29"}
	})
	mkNAD(t, ns, "s", "refuse-v4")
	startServer(t, "")
	for _, tc := range []struct{ pod, ip, reason, says string }{
		{"network", "192.0.2.0/24", "RequestedAddressOutsidePool", "network address"},
		{"broadcast", "192.0.2.255/24", "RequestedAddressOutsidePool", "broadcast address"},
		{"excluded", "192.0.2.201/24", "RequestedAddressOutsidePool", "spec.excludes"},
		{"gateway", "192.0.2.1/24", "RequestedAddressOutsidePool", "gateway"},
		{"mask", "192.0.2.50/25", "RequestedPrefixLengthMismatch", "/24"},
	} {
		mkPod(t, ns, tc.pod, "node-1", fmt.Sprintf(`[{"name":"s","ips":[%q]}]`, tc.ip))
		awaitEvent(t, ns, tc.pod, tc.reason, strings.Split(tc.ip, "/")[0])
		awaitEvent(t, ns, tc.pod, tc.reason, "ips")
		awaitEvent(t, ns, tc.pod, tc.reason, tc.says)
	}
	time.Sleep(time.Second)
	if fs := fips(t, "refuse-v4"); len(fs) != 0 {
		t.Fatalf("refused requests hold addresses: %+v", fs)
	}
}
