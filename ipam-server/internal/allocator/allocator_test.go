package allocator

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	must(t, a.Observe("p", netip.MustParseAddr("192.0.2.3"), "reserved-by-hand", nil))
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

// fip plays a FloatingIP's life in the allocator as braid-ipam-server drives it: created (observed
// holding), released at some time (observed released), deleted at some time (forgotten).
type fip struct {
	a    *Allocator
	addr netip.Addr
	name string
}

// uids numbers the FloatingIPs the tests create: each object has a UID of its own, as in the API server.
var uids atomic.Int64

func created(t *testing.T, a *Allocator, addr netip.Addr) fip {
	t.Helper()
	f := fip{a, addr, fmt.Sprintf("p-%s-%d", addr, uids.Add(1))}
	must(t, a.Observe("p", addr, f.name, nil))
	return f
}

func (f fip) release(t *testing.T, at time.Time) {
	t.Helper()
	must(t, f.a.Observe("p", f.addr, f.name, &at))
}

func (f fip) deleted(t *testing.T, at time.Time) {
	t.Helper()
	must(t, f.a.Forget("p", f.addr, f.name, at))
}

func TestCooldownAndLeastRecentlyUsed(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/30"}) // .1 and .2 usable; cool-down 60s
	x, y := created(t, a, mustAlloc(t, a, t0)), created(t, a, mustAlloc(t, a, t0))
	y.release(t, t0.Add(1*time.Second))
	x.release(t, t0.Add(2*time.Second))
	if _, err := a.Allocate("p", t0.Add(30*time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("during cool-down: want ErrExhausted, got %v", err)
	}
	y.deleted(t, t0.Add(61*time.Second)) // the server deletes a released FloatingIP once its cool-down has passed
	x.deleted(t, t0.Add(62*time.Second))
	if got := mustAlloc(t, a, t0.Add(62*time.Second)); got != y.addr {
		t.Fatalf("got %s, want %s (released first)", got, y.addr)
	}
	if got := mustAlloc(t, a, t0.Add(62*time.Second)); got != x.addr {
		t.Fatalf("got %s, want %s", got, x.addr)
	}
}

// A released FloatingIP keeps its name, so its address cannot be handed out again until it is deleted, even
// once the cool-down has passed (the create would be refused, and the address left held by nobody).
func TestReleasedFloatingIPKeepsItsAddressUntilDeleted(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/31"}) // two usable addresses (RFC 3021)
	x, y := created(t, a, mustAlloc(t, a, t0)), created(t, a, mustAlloc(t, a, t0))
	x.release(t, t0)
	if got, err := a.Allocate("p", t0.Add(time.Hour)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("cool-down over, FloatingIP not deleted yet: want ErrExhausted, got %s %v", got, err)
	}
	x.deleted(t, t0.Add(time.Hour))
	if got := created(t, a, mustAlloc(t, a, t0.Add(time.Hour))); got.addr != x.addr {
		t.Fatalf("got %s, want %s", got.addr, x.addr)
	}
	// Deleting a FloatingIP that held its address (no cool-down recorded) starts the cool-down then.
	y.deleted(t, t0.Add(2*time.Hour))
	st, err := a.Stats("p", t0.Add(2*time.Hour+time.Second))
	must(t, err)
	if st.Used != 2 || st.Free.Sign() != 0 {
		t.Fatalf("stats: used %d free %s, want 2 (one held, one cooling) and 0", st.Used, st.Free)
	}
}

// Two FloatingIPs of one address (an admin's reservation under another name, made while a pod held it): the
// address stays held until both are gone.
func TestSecondFloatingIPKeepsTheAddressHeld(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/30", ReuseCooldown: &metav1.Duration{}})
	x := created(t, a, mustAlloc(t, a, t0))
	must(t, a.Observe("p", x.addr, "keep-router", nil))
	x.deleted(t, t0)
	if got := mustAlloc(t, a, t0); got == x.addr {
		t.Fatalf("handed out %s while FloatingIP keep-router still holds it", got)
	}
	if err := a.Claim("p", x.addr, t0); !errors.Is(err, ErrTaken) {
		t.Fatalf("claim of %s held by keep-router: want ErrTaken, got %v", x.addr, err)
	}
	must(t, a.Forget("p", x.addr, "keep-router", t0))
	must(t, a.Claim("p", x.addr, t0))
}

func TestNeverUsedBeforeReused(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/29"})
	first := created(t, a, mustAlloc(t, a, t0))
	first.deleted(t, t0)
	if got := mustAlloc(t, a, t0.Add(time.Hour)); got == first.addr {
		t.Fatalf("reused %s while never-used addresses remain", got)
	}
}

func TestClaim(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "2001:db8:1::/64", Gateway: "2001:db8:1::1"})
	want := netip.MustParseAddr("2001:db8:1::42")
	must(t, a.Claim("p", want, t0))
	if err := a.Claim("p", want, t0); !errors.Is(err, ErrTaken) {
		t.Fatalf("second claim: want ErrTaken, got %v", err)
	}
	for _, bad := range []string{"2001:db8:1::1", "2001:db8:2::1", "2001:db8:1::"} {
		if err := a.Claim("p", netip.MustParseAddr(bad), t0); !errors.Is(err, ErrNotUsable) {
			t.Errorf("claim %s: want ErrNotUsable, got %v", bad, err)
		}
	}
	if _, err := a.Allocate("nope", t0); !errors.Is(err, ErrUnknownPool) {
		t.Fatalf("unknown pool: got %v", err)
	}
	// Asked for by name, a released address may be claimed during its cool-down, its FloatingIP still there.
	f := created(t, a, want)
	f.release(t, t0)
	must(t, a.Claim("p", want, t0.Add(time.Second)))
}

// A pick whose FloatingIP never shows up (a create that failed unseen, or an object deleted before this
// process saw it) frees the address after claimTTL; Unclaim frees it at once.
func TestPickWithoutFloatingIPExpires(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/31"})
	x, y := mustAlloc(t, a, t0), mustAlloc(t, a, t0)
	if _, err := a.Allocate("p", t0.Add(claimTTL-time.Second)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted while both picks are fresh, got %v", err)
	}
	a.Unclaim("p", y)
	if got := mustAlloc(t, a, t0); got != y {
		t.Fatalf("after Unclaim: got %s, want %s", got, y)
	}
	if got := mustAlloc(t, a, t0.Add(claimTTL)); got != x {
		t.Fatalf("after claimTTL: got %s, want %s", got, x)
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

// A FloatingIP deleted while its pool has no model (invalid when the server started, or not loaded yet) keeps
// its address cooling down once the pool is loaded. Before, the deletion was dropped (unknown pool) and the
// address, never released as far as the pool knew, was the first handed out.
func TestDeletionWhileThePoolHasNoModelKeepsTheCooldown(t *testing.T) {
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "198.51.100.0/30"}) // .1 and .2 usable; cool-down 60s
	must(t, err)
	held := netip.MustParseAddr("198.51.100.1")
	for _, seen := range []bool{true, false} { // observed first (the rebuild lists it), or only its deletion seen
		a := New()
		if seen {
			if err := a.Observe("p", held, "uid-1", nil); err != nil && !errors.Is(err, ErrUnknownPool) {
				t.Fatal(err)
			}
		}
		if err := a.Forget("p", held, "uid-1", t0); err != nil && !errors.Is(err, ErrUnknownPool) {
			t.Fatal(err)
		}
		a.SetPool("p", m)
		if got := created(t, a, mustAlloc(t, a, t0.Add(time.Second))); got.addr == held {
			t.Fatalf("seen %v: handed out %s one second after its FloatingIP was deleted (cool-down 60s)", seen, got.addr)
		}
		if got, err := a.Allocate("p", t0.Add(2*time.Second)); !errors.Is(err, ErrExhausted) {
			t.Fatalf("seen %v: want ErrExhausted while %s cools down, got %s %v", seen, held, got, err)
		}
		if got := mustAlloc(t, a, t0.Add(61*time.Second)); got != held {
			t.Fatalf("seen %v: after the cool-down got %s, want %s", seen, got, held)
		}
	}
}

// A list taken before a FloatingIP's deletion and applied after it (the rebuild on election, a pool's load,
// both racing the informer) must not bring the FloatingIP back: its address would stay held by nobody.
func TestStaleCopyOfADeletedFloatingIPHoldsNothing(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/31", ReuseCooldown: &metav1.Duration{Duration: time.Minute}})
	addr := netip.MustParseAddr("198.51.100.0")
	must(t, a.Forget("p", addr, "uid-1", t0))   // the informer's deletion
	must(t, a.Observe("p", addr, "uid-1", nil)) // then the stale list's copy
	if got := created(t, a, mustAlloc(t, a, t0.Add(time.Second))); got.addr == addr {
		t.Fatalf("handed out %s during the cool-down its deletion started", got.addr)
	}
	if got := mustAlloc(t, a, t0.Add(time.Hour)); got != addr {
		t.Fatalf("after the cool-down got %s, want %s: the stale copy still holds it", got, addr)
	}
}

// A big pool (an IPv6 /64) hands out never-used addresses first, so with pods coming and going it walks on
// for ever. It used to remember the release of every address it had ever handed out, and each allocation
// scanned past all of them: memory and time per allocation grew with every pod the pool had served. It now
// remembers a bounded number of releases past their cool-down; the oldest are forgotten, and their addresses
// count as never used again.
func TestReleasesRememberedAreBounded(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "2001:db8::/64", ReuseCooldown: &metav1.Duration{Duration: time.Second}})
	a.releaseMemory = 8
	now := t0
	var recent []netip.Addr // released last, most recent last
	seen := map[netip.Addr]bool{}
	for range 100 {
		f := created(t, a, mustAlloc(t, a, now))
		if i := slices.Index(recent, f.addr); i >= 0 && i >= len(recent)-a.releaseMemory {
			t.Fatalf("handed out %s, one of the %d released last: %v", f.addr, a.releaseMemory, recent)
		}
		seen[f.addr] = true
		now = now.Add(time.Second)
		f.deleted(t, now)
		recent = append(recent, f.addr)
	}
	if n := len(a.pools["p"].released); n > 2*a.releaseMemory+1 {
		t.Fatalf("%d releases remembered after 100 pods, want at most %d", n, 2*a.releaseMemory+1)
	}
	if len(seen) > 2*a.releaseMemory+1 {
		t.Fatalf("100 pods one after the other used %d addresses: forgotten releases are not reused", len(seen))
	}
}

// A release still cooling down, or of an address whose FloatingIP still exists, is never forgotten.
func TestCoolingReleasesAreRemembered(t *testing.T) {
	a := newPool(t, braidv1.IPPoolSpec{CIDR: "2001:db8::/120", ReuseCooldown: &metav1.Duration{Duration: time.Hour}})
	a.releaseMemory = 2
	var cooling []netip.Addr
	for range 10 {
		f := created(t, a, mustAlloc(t, a, t0))
		f.deleted(t, t0)
		cooling = append(cooling, f.addr)
	}
	for range 20 {
		got := created(t, a, mustAlloc(t, a, t0.Add(time.Minute)))
		if slices.Contains(cooling, got.addr) {
			t.Fatalf("handed out %s during its cool-down", got.addr)
		}
	}
}

// BenchmarkAllocateInABigPool is one pod's life in an IPv6 pool that has served b.N pods before it: the time
// per allocation must not grow with the pool's history.
func BenchmarkAllocateInABigPool(b *testing.B) {
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "2001:db8::/64", ReuseCooldown: &metav1.Duration{Duration: time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	a := New()
	a.SetPool("p", m)
	now := t0
	for i := range b.N {
		addr, err := a.Allocate("p", now)
		if err != nil {
			b.Fatal(err)
		}
		uid := fmt.Sprintf("uid-%d", i)
		if err := a.Observe("p", addr, uid, nil); err != nil {
			b.Fatal(err)
		}
		now = now.Add(time.Millisecond)
		if err := a.Forget("p", addr, uid, now); err != nil {
			b.Fatal(err)
		}
	}
}
