package allocator

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// FuzzAllocator drives the allocator with random operations, playing FloatingIPs' lives as braid-ipam-server
// does (picked, created, released, deleted, made by hand, a create failing), and checks every answer against a
// plain reference model: it never hands out an address that is held, picked already, excluded, outside the
// pool, in cool-down, or whose FloatingIP still exists; it reports exhaustion only when nothing is free; and it
// picks exactly the address the ordering rules name. Its count of used addresses matches the reference's, also
// after the pool's spec changed or the pool was deleted and made again.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 2, 0, 3, 0, 7, 9, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 200, 0, 0})
	f.Add([]byte{2, 4, 2, 1, 0, 2, 0, 7, 200, 3, 0, 7, 200, 0, 0, 6, 3, 0, 0})
	// few releases remembered: pods one after the other, each deleted, until old releases are forgotten
	f.Add(slices.Concat([]byte{0x81}, bytes.Repeat([]byte{0, 0, 1, 0, 3, 0, 5, 100}, 8), []byte{0, 0, 0, 0}))
	// Each pool's spec, and the spec an admin changes it to (op 8).
	specs := [][2]braidv1.IPPoolSpec{
		{{CIDR: "192.0.2.0/28", Gateway: "192.0.2.1", Excludes: []string{"192.0.2.4/30", "192.0.2.9"}},
			{CIDR: "192.0.2.0/28", Gateway: "192.0.2.1", Excludes: []string{"192.0.2.8/29"}}},
		{{CIDR: "2001:db8:1::/124", Ranges: []braidv1.IPRange{{Start: "2001:db8:1::2", End: "2001:db8:1::6"}, {Start: "2001:db8:1::a", End: "2001:db8:1::c"}}},
			{CIDR: "2001:db8:1::/124", Ranges: []braidv1.IPRange{{Start: "2001:db8:1::4", End: "2001:db8:1::b"}}}},
		{{CIDR: "198.51.100.0/31"}, {CIDR: "198.51.100.0/31", Excludes: []string{"198.51.100.1"}}},
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		var models [2]pool.Model
		for i, spec := range specs[int(ops[0])%len(specs)] {
			var err error
			if models[i], err = pool.Parse(spec); err != nil {
				t.Fatal(err)
			}
		}
		m := models[0]
		a := New()
		a.SetPool("p", m)
		ref := &reference{model: m, objects: map[netip.Addr]map[string]*time.Time{}, picked: map[netip.Addr]time.Time{},
			released: map[netip.Addr]time.Time{}, keep: releaseMemory}
		if ops[0]&0x80 != 0 { // remember few releases, so that these small pools forget some
			a.releaseMemory, ref.keep = 2, 2
		}
		now := t0
		candidates := addrsOf(m.Prefix)

		for i := 1; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%10, int(ops[i+1])
			switch op {
			case 0: // allocate
				got, err := a.Allocate("p", now)
				ref.forgetOldReleases(now)
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
				if ref.busy(got, now) || !m.Usable(got) || !m.Prefix.Contains(got) {
					t.Fatalf("op %d: handed out %s, which is busy or not usable", i, got)
				}
				if at, ok := ref.released[got]; ok && now.Sub(at) < m.Cooldown {
					t.Fatalf("op %d: handed out %s during its cool-down", i, got)
				}
				ref.picked[got] = now
			case 1: // the FloatingIP of a picked address is created (and observed)
				if addr, ok := pick(candidates, arg, func(a netip.Addr) bool { _, ok := ref.picked[a]; return ok }); ok {
					uid := fmt.Sprintf("p-%s-%d", addr, i) // a new object: a UID of its own
					must(t, a.Observe("p", addr, uid, nil))
					ref.observe(addr, uid, nil)
				}
			case 2: // a holding FloatingIP is released now
				if addr, name, ok := ref.object(candidates, arg, false); ok {
					at := now
					must(t, a.Observe("p", addr, name, &at))
					ref.observe(addr, name, &at)
				}
			case 3: // a FloatingIP, holding or released, is deleted now; the deletion is seen twice (the server's
				// own delete, then the informer's event), maybe later
				if addr, name, ok := ref.object(candidates, arg, true); ok {
					must(t, a.Forget("p", addr, name, now))
					must(t, a.Forget("p", addr, name, now.Add(time.Duration(arg)*time.Second)))
					ref.forget(addr, name, now)
				}
			case 4: // claim a specific address
				addr := candidates[arg%len(candidates)]
				err := a.Claim("p", addr, now)
				switch {
				case !m.Usable(addr):
					if !errors.Is(err, ErrNotUsable) {
						t.Fatalf("op %d: claim of unusable %s: %v", i, addr, err)
					}
				case ref.holds(addr) || ref.freshPick(addr, now):
					if !errors.Is(err, ErrTaken) {
						t.Fatalf("op %d: claim of held %s: %v", i, addr, err)
					}
				default:
					must(t, err)
					ref.picked[addr] = now
				}
			case 5: // let time pass
				now = now.Add(time.Duration(arg) * time.Second)
			case 6: // an admin reserves an address by hand, under a name of their own
				addr := candidates[arg%len(candidates)]
				uid := fmt.Sprintf("hand-%s-%d", addr, i)
				must(t, a.Observe("p", addr, uid, nil))
				ref.observe(addr, uid, nil)
			case 7: // the create of a picked address failed
				if addr, ok := pick(candidates, arg, func(a netip.Addr) bool { _, ok := ref.picked[a]; return ok }); ok {
					a.Unclaim("p", addr)
					delete(ref.picked, addr)
				}
			case 8: // an admin changes the pool's spec
				m = models[arg%2]
				a.SetPool("p", m)
				ref.model = m
			case 9: // the pool is deleted and made again (its FloatingIPs kept): what was picked is dropped
				a.RemovePool("p")
				a.SetPool("p", m)
				ref.picked = map[netip.Addr]time.Time{}
			}
		}
		st, err := a.Stats("p", now)
		must(t, err)
		if want := ref.used(now); st.Used != want {
			t.Fatalf("stats: used %d, reference says %d", st.Used, want)
		}
	})
}

// pick returns the arg-th (modulo) candidate that satisfies ok, in address order (so a crash replays exactly).
func pick(candidates []netip.Addr, arg int, ok func(netip.Addr) bool) (netip.Addr, bool) {
	var in []netip.Addr
	for _, addr := range candidates {
		if ok(addr) {
			in = append(in, addr)
		}
	}
	if len(in) == 0 {
		return netip.Addr{}, false
	}
	return in[arg%len(in)], true
}

// reference is the obviously-correct, slow version of the rules.
type reference struct {
	model    pool.Model
	objects  map[netip.Addr]map[string]*time.Time // FloatingIPs by name; non-nil: released then
	picked   map[netip.Addr]time.Time
	released map[netip.Addr]time.Time
	keep     int // releases past their cool-down remembered
}

// forgetOldReleases: past 2*keep releases remembered, the oldest (then lowest) whose cool-down has passed and
// whose address has no FloatingIP are forgotten, down to keep.
func (r *reference) forgetOldReleases(now time.Time) {
	if len(r.released) <= 2*r.keep {
		return
	}
	for len(r.released) > r.keep {
		var oldest netip.Addr
		for _, addr := range addrsOf(r.model.Prefix) {
			at, ok := r.released[addr]
			if ok && now.Sub(at) >= r.model.Cooldown && len(r.objects[addr]) == 0 &&
				(!oldest.IsValid() || at.Before(r.released[oldest])) {
				oldest = addr
			}
		}
		if !oldest.IsValid() {
			return
		}
		delete(r.released, oldest)
	}
}

func (r *reference) observe(addr netip.Addr, name string, releasedAt *time.Time) {
	if r.objects[addr] == nil {
		r.objects[addr] = map[string]*time.Time{}
	}
	r.objects[addr][name] = releasedAt
	delete(r.picked, addr)
	if releasedAt != nil && releasedAt.After(r.released[addr]) {
		r.released[addr] = *releasedAt
	}
}

func (r *reference) forget(addr netip.Addr, name string, at time.Time) {
	if rel, known := r.objects[addr][name]; known && rel == nil && at.After(r.released[addr]) {
		r.released[addr] = at
	}
	delete(r.objects[addr], name)
	if len(r.objects[addr]) == 0 {
		delete(r.objects, addr)
	}
}

// object returns the arg-th FloatingIP (by address, then name), of any phase with anyPhase, else holding ones.
func (r *reference) object(candidates []netip.Addr, arg int, anyPhase bool) (netip.Addr, string, bool) {
	type obj struct {
		addr netip.Addr
		name string
	}
	var all []obj
	for _, addr := range candidates {
		var names []string
		for name, rel := range r.objects[addr] {
			if anyPhase || rel == nil {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			all = append(all, obj{addr, n})
		}
	}
	if len(all) == 0 {
		return netip.Addr{}, "", false
	}
	o := all[arg%len(all)]
	return o.addr, o.name, true
}

func (r *reference) holds(addr netip.Addr) bool {
	for _, rel := range r.objects[addr] {
		if rel == nil {
			return true
		}
	}
	return false
}

func (r *reference) freshPick(addr netip.Addr, now time.Time) bool {
	at, ok := r.picked[addr]
	return ok && now.Sub(at) < claimTTL
}

func (r *reference) busy(addr netip.Addr, now time.Time) bool {
	return len(r.objects[addr]) > 0 || r.freshPick(addr, now)
}

func (r *reference) next(now time.Time) (netip.Addr, bool) {
	for _, addr := range addrsOf(r.model.Prefix) {
		if _, used := r.released[addr]; !used && !r.busy(addr, now) && r.model.Usable(addr) {
			return addr, true
		}
	}
	var best netip.Addr
	var bestAt time.Time
	for _, addr := range addrsOf(r.model.Prefix) {
		at, ok := r.released[addr]
		if !ok || now.Sub(at) < r.model.Cooldown || !r.model.Usable(addr) || r.busy(addr, now) {
			continue
		}
		if !best.IsValid() || at.Before(bestAt) {
			best, bestAt = addr, at
		}
	}
	return best, best.IsValid()
}

// used counts the usable addresses that are busy or cooling down.
func (r *reference) used(now time.Time) int64 {
	var n int64
	for _, addr := range addrsOf(r.model.Prefix) {
		if !r.model.Usable(addr) {
			continue
		}
		at, released := r.released[addr]
		if r.busy(addr, now) || (released && now.Sub(at) < r.model.Cooldown) {
			n++
		}
	}
	return n
}

func addrsOf(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}
