package server_test

import (
	"net/netip"
	"testing"

	"github.com/braid-cni/braid/ipam-server/internal/server"
)

func TestNameAddressInvertsFloatingIPName(t *testing.T) {
	for _, a := range []string{"192.0.2.10", "0.0.0.0", "2001:db8::a", "::"} {
		addr := netip.MustParseAddr(a)
		for _, pool := range []string{"mgmt", "mgmt-v6", "rack-1.dc"} {
			got, ok := server.NameAddress(pool, server.FloatingIPName(pool, addr))
			if !ok || got != addr {
				t.Errorf("NameAddress(%s, FloatingIPName(%s)) = %s %v", pool, a, got, ok)
			}
		}
	}
	for _, name := range []string{"mgmt", "mgmt-", "mgmt-192-0-2", "mgmt-192-0-2-010", "mgmt-2001-db8--a", "other-192-0-2-1",
		"mgmt-for-db-0", "mgmt-192-0-2-1-x", "mgmt-2001-0db8-0000-0000-0000-0000-0000-00zz"} {
		if got, ok := server.NameAddress("mgmt", name); ok {
			t.Errorf("NameAddress(mgmt, %s) = %s, want none", name, got)
		}
	}
}
