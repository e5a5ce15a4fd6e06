package allocator

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// FuzzAllocator drives the allocator with random operations and checks every answer against a plain reference
// model: it never hands out an address that is held, excluded, outside the pool, or in cool-down; it reports
// exhaustion only when nothing is free; and it picks exactly the address the ordering rules name.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 0, 3, 9, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 200, 0, 0})
	f.Add([]byte{2, 3, 2, 7, 0, 1, 3, 4, 1, 0, 0})
	specs := []braidv1.IPPoolSpec{
		{CIDR: "192.0.2.0/28", Gateway: "192.0.2.1", Excludes: []string{"192.0.2.4/30", "192.0.2.9"}},
		{CIDR: "2001:db8:1::/124", Ranges: []braidv1.IPRange{{Start: "2001:db8:1::2", End: "2001:db8:1::6"}, {Start: "2001:db8:1::a", End: "2001:db8:1::c"}}},
		{CIDR: "198.51.100.0/31"},
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		spec := specs[int(ops[0])%len(specs)]
		m, err := pool.Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		a := New()
		a.SetPool("p", m)
		ref := reference{model: m, held: map[netip.Addr]bool{}, released: map[netip.Addr]time.Time{}}
		now := t0
		candidates := addrsOf(m.Prefix)

		for i := 1; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%4, int(ops[i+1])
			switch op {
			case 0: // allocate
				got, err := a.Allocate("p", now)
				want, ok := ref.next(now)
				if !ok {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("op %d: want ErrExhausted, got %s %v", i, got, err)
					}
					continue
				}
				if err != nil || got != want {
					t.Fatalf("op %d: allocated %s (%v), reference says %s", i, got, err, want)
				}
				if ref.held[got] || !m.Usable(got) || !m.Prefix.Contains(got) {
					t.Fatalf("op %d: handed out %s, which is held or not usable", i, got)
				}
				if at, ok := ref.released[got]; ok && now.Sub(at) < m.Cooldown {
					t.Fatalf("op %d: handed out %s during its cool-down", i, got)
				}
				ref.held[got] = true
				delete(ref.released, got)
			case 1: // release a held address
				var held []netip.Addr
				for _, addr := range candidates { // in address order, so a crash replays exactly
					if ref.held[addr] {
						held = append(held, addr)
					}
				}
				if len(held) > 0 {
					addr := held[arg%len(held)]
					must(t, a.Release("p", addr, now))
					delete(ref.held, addr)
					ref.released[addr] = now
				}
			case 2: // claim a specific address
				addr := candidates[arg%len(candidates)]
				err := a.Claim("p", addr)
				switch {
				case !m.Usable(addr):
					if !errors.Is(err, ErrNotUsable) {
						t.Fatalf("op %d: claim of unusable %s: %v", i, addr, err)
					}
				case ref.held[addr]:
					if !errors.Is(err, ErrTaken) {
						t.Fatalf("op %d: claim of held %s: %v", i, addr, err)
					}
				default:
					must(t, err)
					ref.held[addr] = true
					delete(ref.released, addr)
				}
			case 3: // let time pass
				now = now.Add(time.Duration(arg) * time.Second)
			}
		}
	})
}

// reference is the obviously-correct, slow version of the ordering rules.
type reference struct {
	model    pool.Model
	held     map[netip.Addr]bool
	released map[netip.Addr]time.Time
}

func (r *reference) next(now time.Time) (netip.Addr, bool) {
	for _, addr := range addrsOf(r.model.Prefix) {
		if _, used := r.released[addr]; !used && !r.held[addr] && r.model.Usable(addr) {
			return addr, true
		}
	}
	var best netip.Addr
	var bestAt time.Time
	for _, addr := range addrsOf(r.model.Prefix) {
		at, ok := r.released[addr]
		if !ok || now.Sub(at) < r.model.Cooldown || !r.model.Usable(addr) {
			continue
		}
		if !best.IsValid() || at.Before(bestAt) {
			best, bestAt = addr, at
		}
	}
	return best, best.IsValid()
}

func addrsOf(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}
