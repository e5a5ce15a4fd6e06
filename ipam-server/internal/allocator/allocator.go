// Package allocator is braid-ipam-server's in-memory address allocator. It does no I/O: the server rebuilds it
// from the API server's FloatingIPs before serving, and the FloatingIP name (pool + address) remains the real
// guard against double allocation; this index only makes the choice fast and well-ordered.
//
// It mirrors the FloatingIPs by UID: an address is busy while any FloatingIP of it exists (holding, reserved,
// or released and cooling down: its name is taken until it is deleted), and for a short while after this
// process picked it for a FloatingIP it is creating. Counting objects, not addresses, keeps a second
// FloatingIP of one address (an admin's, under another name) holding it when the first goes.
//
// Order of choice: addresses never used come first (lowest first), then released addresses whose cool-down has
// passed, least recently released first, because switches and peers cache ARP/ND entries for a while.
package allocator

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

var (
	// ErrUnknownPool means no pool of that name is loaded.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrExhausted means no address is free now (some may be cooling down).
	ErrExhausted = errors.New("pool exhausted")
	// ErrTaken means the address is held already.
	ErrTaken = errors.New("address already held")
	// ErrNotUsable means the address is outside the pool's ranges, excluded, or its gateway.
	ErrNotUsable = errors.New("address not usable in this pool")
)

// claimTTL bounds how long an address picked here stays busy without its FloatingIP showing up: a create
// that failed without saying so, or one whose object was deleted before this process ever saw it, must not
// keep the address forever.
const claimTTL = time.Minute

// Allocator tracks, per pool, the FloatingIPs of each address and when each address was released. Safe for
// concurrent use.
type Allocator struct {
	mu    sync.Mutex
	pools map[string]*state
	// unloaded records, per pool with no model (invalid, not loaded yet, or deleted), its FloatingIPs and
	// release times as for a loaded pool, so that a FloatingIP deleted meanwhile keeps its address cooling down
	// once the pool is loaded. It hands out nothing.
	unloaded map[string]*state
	// gone are the FloatingIPs (by UID) forgotten recently: a list taken before a deletion and applied after
	// it (the rebuild, a pool's load) must not bring one back, holding its address for nobody. UIDs are never
	// reused, so an object of a forgotten UID can only be a stale copy.
	gone      map[string]time.Time
	goneSwept time.Time
	// releaseMemory is how many releases past their cool-down each pool remembers (releaseMemory, but tests
	// set fewer).
	releaseMemory int
}

// goneTTL is how long a forgotten FloatingIP's UID is remembered: longer than any list is applied after it
// was taken.
const goneTTL = 10 * time.Minute

// releaseMemory bounds the releases past their cool-down that a pool remembers. A big pool (an IPv6 /64) hands
// out never-used addresses first, so with pods coming and going it would otherwise remember one for every pod
// it ever served. The oldest are forgotten first: their addresses count as never used again, and, released
// before any address still remembered, they are still the least recently used.
const releaseMemory = 4096

type state struct {
	model pool.Model
	// objects are the FloatingIPs of each address, by name; true for one released (cooling down, or waiting
	// to be deleted), false for one that holds the address.
	objects map[netip.Addr]map[string]bool
	// heldUsable is how many addresses of objects the model makes usable: Stats' count of the held ones, kept
	// as objects come and go and recounted when the model changes, so that Stats does not walk them all.
	heldUsable int64
	claimed    map[netip.Addr]time.Time // picked here (Allocate, Claim) at that time; its FloatingIP not seen yet
	// released is when the address was last released; kept after its FloatingIP is gone, for the cool-down
	// and the least-recently-used order, until forgetOldReleases forgets it.
	released map[netip.Addr]time.Time
	// scanFrom is, per range of the model, where neverUsed starts: every address of the range before it is
	// held, remembered as released, or never usable. Only forgetting a release moves it back; a new model
	// starts it afresh.
	scanFrom []netip.Addr
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{pools: map[string]*state{}, unloaded: map[string]*state{}, gone: map[string]time.Time{},
		releaseMemory: releaseMemory}
}

func newState(m pool.Model) *state {
	return &state{model: m, objects: map[netip.Addr]map[string]bool{}, claimed: map[netip.Addr]time.Time{},
		released: map[netip.Addr]time.Time{}}
}

// SetPool loads or replaces a pool's model; what is recorded for its addresses stays. It reports whether the
// pool is new, so the caller can record the FloatingIPs that already exist in it.
func (a *Allocator) SetPool(name string, m pool.Model) (added bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.pools[name]; ok {
		s.setModel(m)
		return false
	}
	s, ok := a.unloaded[name]
	if !ok {
		s = newState(m)
	}
	delete(a.unloaded, name)
	s.setModel(m)
	a.pools[name] = s
	return true
}

// Model returns a loaded pool's model.
func (a *Allocator) Model(name string) (pool.Model, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.pools[name]
	if !ok {
		return pool.Model{}, false
	}
	return s.model, true
}

// RemovePool unloads a pool: it hands out nothing, and what is recorded for its addresses (FloatingIPs and
// cool-downs) is kept as for any pool with no model, should it be loaded again.
func (a *Allocator) RemovePool(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.pools[name]; ok {
		s.setModel(pool.Model{})
		s.claimed = map[netip.Addr]time.Time{}
		a.unloaded[name] = s
	}
	delete(a.pools, name)
}

// setModel gives the pool model m, which starts neverUsed's scans afresh and recounts heldUsable.
func (s *state) setModel(m pool.Model) {
	s.model, s.scanFrom, s.heldUsable = m, nil, 0
	for addr := range s.objects {
		if m.Usable(addr) {
			s.heldUsable++
		}
	}
}

func (a *Allocator) get(name string) (*state, error) {
	s, ok := a.pools[name]
	if !ok {
		return nil, fmt.Errorf("pool %q: %w", name, ErrUnknownPool)
	}
	return s, nil
}

// record is the pool's state, loaded or not, for recording what happens to its FloatingIPs.
func (a *Allocator) record(name string) *state {
	if s, ok := a.pools[name]; ok {
		return s
	}
	s, ok := a.unloaded[name]
	if !ok {
		s = newState(pool.Model{})
		a.unloaded[name] = s
	}
	return s
}

// Observe records FloatingIP object of addr as it exists in the API server: holding the address, or, with
// releasedAt, released at that time. Whatever the pool's model says: an admin may reserve any address by hand.
// A pool with no model records it too (it hands out nothing), and so does a FloatingIP forgotten already: a
// stale copy of it changes nothing.
func (a *Allocator) Observe(name string, addr netip.Addr, object string, releasedAt *time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, forgotten := a.gone[object]; forgotten {
		return nil
	}
	s := a.record(name)
	if len(s.objects[addr]) == 0 {
		s.objects[addr] = map[string]bool{}
		if s.model.Usable(addr) {
			s.heldUsable++
		}
	}
	s.objects[addr][object] = releasedAt != nil
	delete(s.claimed, addr)
	if releasedAt != nil && releasedAt.After(s.released[addr]) {
		s.released[addr] = *releasedAt
	}
	return nil
}

// Forget records that FloatingIP object of addr was deleted at the given time, in a pool loaded or not.
// Deleting one that held the address releases it then; one already released keeps its release time; one never
// observed (deleted before a list that showed it was applied) may have held it, and releases it then too.
// Forgetting an object again (the server's own delete, then the informer's event) changes nothing.
func (a *Allocator) Forget(name string, addr netip.Addr, object string, at time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, forgotten := a.gone[object]; forgotten {
		return nil
	}
	a.sweepGone(at)
	a.gone[object] = at
	s := a.record(name)
	wasReleased, known := s.objects[addr][object]
	if objs, ok := s.objects[addr]; ok {
		delete(objs, object)
		if len(objs) == 0 {
			delete(s.objects, addr)
			if s.model.Usable(addr) {
				s.heldUsable--
			}
		}
	}
	if (!known || !wasReleased) && at.After(s.released[addr]) {
		s.released[addr] = at
	}
	return nil
}

// sweepGone drops the forgotten UIDs older than goneTTL, at most once per goneTTL.
func (a *Allocator) sweepGone(now time.Time) {
	if now.Sub(a.goneSwept) < goneTTL {
		return
	}
	a.goneSwept = now
	for uid, at := range a.gone {
		if now.Sub(at) >= goneTTL {
			delete(a.gone, uid)
		}
	}
}

// Claim picks a specific address a pod asked for (static `ips`) at time now. It must be usable and neither
// held by a FloatingIP nor picked already; one released and still cooling down (its FloatingIP may still
// exist, to be taken over) may be claimed, since it was asked for by name.
func (a *Allocator) Claim(name string, addr netip.Addr, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return err
	}
	if !s.model.Usable(addr) {
		return fmt.Errorf("pool %q (%s): %s: %w", name, s.model.Prefix, addr, ErrNotUsable)
	}
	if s.holds(addr) || s.claimedAt(addr, now) {
		return fmt.Errorf("pool %q: %s: %w", name, addr, ErrTaken)
	}
	s.claimed[addr] = now
	return nil
}

// Unclaim undoes Allocate or Claim when the FloatingIP could not be created.
func (a *Allocator) Unclaim(name string, addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, err := a.get(name); err == nil {
		delete(s.claimed, addr)
	}
}

// Allocate picks an address of the pool at time now; it stays picked until its FloatingIP is observed, the
// pick is undone, or claimTTL passes.
func (a *Allocator) Allocate(name string, now time.Time) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return netip.Addr{}, err
	}
	s.forgetOldReleases(now, a.releaseMemory)
	addr, ok := s.neverUsed(now)
	if !ok {
		addr, ok = s.leastRecentlyReleased(now)
	}
	if !ok {
		// No live counts here: a pod waits with this reason, told once per distinct reason (the IPPool's
		// status and metrics count).
		return netip.Addr{}, fmt.Errorf("pool %q (%s): %w: every address is held or cooling down (see the IPPool's "+
			"status; add addresses with spec.ranges, or free some)", name, s.model.Prefix, ErrExhausted)
	}
	s.claimed[addr] = now
	return addr, nil
}

// holds reports whether a FloatingIP holds addr (one that is not released).
func (s *state) holds(addr netip.Addr) bool {
	for _, released := range s.objects[addr] {
		if !released {
			return true
		}
	}
	return false
}

func (s *state) claimedAt(addr netip.Addr, now time.Time) bool {
	at, ok := s.claimed[addr]
	return ok && now.Sub(at) < claimTTL
}

// busy: a FloatingIP of the address exists, in any phase, or it was just picked.
func (s *state) busy(addr netip.Addr, now time.Time) bool {
	return len(s.objects[addr]) > 0 || s.claimedAt(addr, now)
}

// neverUsed is the lowest usable address that is neither busy nor ever released (as far as remembered).
// Each range's scan starts at its scanFrom and moves that on past what is settled.
func (s *state) neverUsed(now time.Time) (netip.Addr, bool) {
	if len(s.scanFrom) != len(s.model.Ranges) {
		s.scanFrom = make([]netip.Addr, len(s.model.Ranges))
		for i, r := range s.model.Ranges {
			s.scanFrom[i] = r.Start
		}
	}
	for i, r := range s.model.Ranges {
		settled := true // every address of the range before addr is held, remembered as released, or never usable
		for addr := s.scanFrom[i]; addr.IsValid() && addr.Compare(r.End) <= 0; addr = addr.Next() {
			if x, ok := s.excludeOf(addr); ok {
				addr = pool.Last(x) // the loop's Next steps past the excluded block
			} else if _, used := s.released[addr]; !used && len(s.objects[addr]) == 0 {
				if s.claimedAt(addr, now) {
					settled = false // free again if its FloatingIP never shows up
					continue
				}
				if s.model.Usable(addr) {
					return addr, true
				}
			}
			if next := addr.Next(); settled && next.IsValid() {
				s.scanFrom[i] = next
			}
		}
	}
	return netip.Addr{}, false
}

// forgetOldReleases keeps the releases remembered near keep: past twice that, it forgets the oldest of those
// whose cool-down has passed and whose address has no FloatingIP (Forget relies on the release time of a
// released FloatingIP's address), down to keep. A forgotten address counts as never used again.
func (s *state) forgetOldReleases(now time.Time, keep int) {
	if len(s.released) <= 2*keep {
		return
	}
	type release struct {
		addr netip.Addr
		at   time.Time
	}
	var old []release
	for addr, at := range s.released {
		if now.Sub(at) >= s.model.Cooldown && len(s.objects[addr]) == 0 {
			old = append(old, release{addr, at})
		}
	}
	slices.SortFunc(old, func(x, y release) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.addr.Compare(y.addr)
	})
	for _, r := range old[:min(len(old), len(s.released)-keep)] {
		delete(s.released, r.addr)
		for i, rg := range s.model.Ranges {
			if rg.Contains(r.addr) && i < len(s.scanFrom) && r.addr.Less(s.scanFrom[i]) {
				s.scanFrom[i] = r.addr
			}
		}
	}
}

// leastRecentlyReleased is the usable released address, no longer busy, whose cool-down ended first.
func (s *state) leastRecentlyReleased(now time.Time) (netip.Addr, bool) {
	var best netip.Addr
	var bestAt time.Time
	for addr, at := range s.released {
		if now.Sub(at) < s.model.Cooldown || !s.model.Usable(addr) || s.busy(addr, now) {
			continue
		}
		if !best.IsValid() || at.Before(bestAt) || (at.Equal(bestAt) && addr.Less(best)) {
			best, bestAt = addr, at
		}
	}
	return best, best.IsValid()
}

func (s *state) excludeOf(addr netip.Addr) (netip.Prefix, bool) {
	for _, x := range s.model.Excludes {
		if x.Contains(addr) {
			return x, true
		}
	}
	return netip.Prefix{}, false
}

// Stats is what the pool's status shows.
type Stats struct {
	Total *big.Int // addresses the pool can ever hand out
	Used  int64    // usable addresses busy (a FloatingIP exists, or just picked) or cooling down
	Free  *big.Int // Total - Used
}

// Stats counts the pool at time now.
func (a *Allocator) Stats(name string, now time.Time) (Stats, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return Stats{}, err
	}
	used := s.heldUsable
	for addr := range s.claimed {
		if len(s.objects[addr]) == 0 && s.claimedAt(addr, now) && s.model.Usable(addr) {
			used++
		}
	}
	for addr, at := range s.released {
		if now.Sub(at) < s.model.Cooldown && !s.busy(addr, now) && s.model.Usable(addr) {
			used++
		}
	}
	total := s.model.Size()
	return Stats{Total: total, Used: used, Free: new(big.Int).Sub(total, big.NewInt(used))}, nil
}
