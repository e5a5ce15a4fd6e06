package allocator

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newPool(t testing.TB, spec braidv1.IPPoolSpec) *Allocator {
	t.Helper()
	m, err := pool.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	a := New()
	a.SetPool("p", m)
	return a
}

func mustAlloc(t *testing.T, a *Allocator, now time.Time) netip.Addr {
	t.Helper()
	addr, err := a.Allocate("p", now)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestAllocateSkipsExcludedGatewayAndHeld(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/28", Gateway: "192.0.2.1", Excludes: []string{"192.0.2.4/30", "192.0.2.9"}})
	if err := a.Hold("p", netip.MustParseAddr("192.0.2.3")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		addr, err := a.Allocate("p", t0)
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, addr.String())
	}
	want := "[192.0.2.2 192.0.2.8 192.0.2.10 192.0.2.11 192.0.2.12 192.0.2.13 192.0.2.14]"
	if s := fmtList(got); s != want {
		t.Fatalf("allocated %s, want %s", s, want)
	}
	st, err := a.Stats("p", t0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Int64() != 8 || st.Used != 8 || st.Free.Sign() != 0 {
		t.Fatalf("stats = total %s used %d free %s, want 8/8/0", st.Total, st.Used, st.Free)
	}
}

func TestCooldownAndLeastRecentlyUsed(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/30"}) // .1 and .2 usable; cool-down 60s
	x, y := mustAlloc(t, a, t0), mustAlloc(t, a, t0)
	must(t, a.Release("p", y, t0.Add(1*time.Second)))
	must(t, a.Release("p", x, t0.Add(2*time.Second)))

	if _, err := a.Allocate("p", t0.Add(30*time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("during cool-down: want ErrExhausted, got %v", err)
	}
	if got := mustAlloc(t, a, t0.Add(61*time.Second)); got != y {
		t.Fatalf("after y's cool-down: got %s, want %s (released first)", got, y)
	}
	if _, err := a.Allocate("p", t0.Add(61*time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("x still cooling: want ErrExhausted, got %v", err)
	}
	if got := mustAlloc(t, a, t0.Add(62*time.Second)); got != x {
		t.Fatalf("got %s, want %s", got, x)
	}
}

func TestNeverUsedBeforeReused(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/29"})
	first := mustAlloc(t, a, t0)
	must(t, a.Release("p", first, t0))
	if got := mustAlloc(t, a, t0.Add(time.Hour)); got == first {
		t.Fatalf("reused %s while never-used addresses remain", got)
	}
}

func TestClaim(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "2001:db8:1::/64", Gateway: "2001:db8:1::1"})
	want := netip.MustParseAddr("2001:db8:1::42")
	must(t, a.Claim("p", want))
	if err := a.Claim("p", want); !errors.Is(err, ErrTaken) {
		t.Fatalf("second claim: want ErrTaken, got %v", err)
	}
	for _, bad := range []string{"2001:db8:1::1", "2001:db8:2::1", "2001:db8:1::"} {
		if err := a.Claim("p", netip.MustParseAddr(bad)); !errors.Is(err, ErrNotUsable) {
			t.Errorf("claim %s: want ErrNotUsable, got %v", bad, err)
		}
	}
	if _, err := a.Allocate("nope", t0); !errors.Is(err, ErrUnknownPool) {
		t.Fatalf("unknown pool: got %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fmtList(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
