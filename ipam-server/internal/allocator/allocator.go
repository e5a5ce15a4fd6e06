// Package allocator is braid-ipam-server's in-memory address allocator. It does no I/O: the server rebuilds it
// from the API server's FloatingIPs before serving, and the FloatingIP name (pool + address) remains the real
// guard against double allocation; this index only makes the choice fast and well-ordered.
//
// Order of choice: addresses never used come first (lowest first), then released addresses whose cool-down has
// passed, least recently released first, because switches and peers cache ARP/ND entries for a while.
package allocator

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
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

// Allocator tracks, per pool, which addresses are held and which were released when. Safe for concurrent use.
type Allocator struct {
	mu    sync.Mutex
	pools map[string]*state
}

type state struct {
	model    pool.Model
	held     map[netip.Addr]struct{}
	released map[netip.Addr]time.Time // not held; value is when it was released
}

// New returns an empty allocator.
func New() *Allocator {
	return &Allocator{pools: map[string]*state{}}
}

// SetPool loads or replaces a pool's model; what is held or released stays recorded. It reports whether the
// pool is new, so the caller can record the addresses already held in it.
func (a *Allocator) SetPool(name string, m pool.Model) (added bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.pools[name]; ok {
		s.model = m
		return false
	}
	a.pools[name] = &state{model: m, held: map[netip.Addr]struct{}{}, released: map[netip.Addr]time.Time{}}
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

// RemovePool forgets a pool and everything recorded for it.
func (a *Allocator) RemovePool(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pools, name)
}

func (a *Allocator) get(name string) (*state, error) {
	s, ok := a.pools[name]
	if !ok {
		return nil, fmt.Errorf("pool %q: %w", name, ErrUnknownPool)
	}
	return s, nil
}

// Hold records an address as held whatever the pool's model says, as the server does for every existing
// FloatingIP when it rebuilds (an admin may reserve any address by hand).
func (a *Allocator) Hold(name string, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return err
	}
	s.held[addr] = struct{}{}
	delete(s.released, addr)
	return nil
}

// Claim holds a specific address a pod asked for (static `ips`). It must be usable and not held; an address
// that is still cooling down may be claimed, since it was asked for by name.
func (a *Allocator) Claim(name string, addr netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return err
	}
	if !s.model.Usable(addr) {
		return fmt.Errorf("pool %q (%s): %s: %w", name, s.model.Prefix, addr, ErrNotUsable)
	}
	if _, ok := s.held[addr]; ok {
		return fmt.Errorf("pool %q: %s: %w", name, addr, ErrTaken)
	}
	s.held[addr] = struct{}{}
	delete(s.released, addr)
	return nil
}

// Release records that addr was released at the given time; it becomes reusable after the pool's cool-down.
func (a *Allocator) Release(name string, addr netip.Addr, at time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return err
	}
	delete(s.held, addr)
	s.released[addr] = at
	return nil
}

// Allocate picks and holds an address of the pool at time now.
func (a *Allocator) Allocate(name string, now time.Time) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.get(name)
	if err != nil {
		return netip.Addr{}, err
	}
	addr, ok := s.neverUsed()
	if !ok {
		addr, ok = s.leastRecentlyReleased(now)
	}
	if !ok {
		return netip.Addr{}, fmt.Errorf("pool %q (%s): %w: %d held, %d cooling down", name, s.model.Prefix,
			ErrExhausted, len(s.held), s.cooling(now))
	}
	s.held[addr] = struct{}{}
	delete(s.released, addr)
	return addr, nil
}

// neverUsed is the lowest usable address that is neither held nor ever released.
func (s *state) neverUsed() (netip.Addr, bool) {
	for _, r := range s.model.Ranges {
		for addr := r.Start; addr.IsValid() && addr.Compare(r.End) <= 0; addr = addr.Next() {
			if x, ok := s.excludeOf(addr); ok {
				addr = pool.Last(x) // the loop's Next steps past the excluded block
				continue
			}
			if _, held := s.held[addr]; held {
				continue
			}
			if _, used := s.released[addr]; used {
				continue
			}
			if s.model.Usable(addr) {
				return addr, true
			}
		}
	}
	return netip.Addr{}, false
}

// leastRecentlyReleased is the usable released address whose cool-down ended first.
func (s *state) leastRecentlyReleased(now time.Time) (netip.Addr, bool) {
	var best netip.Addr
	var bestAt time.Time
	for addr, at := range s.released {
		if now.Sub(at) < s.model.Cooldown || !s.model.Usable(addr) {
			continue
		}
		if !best.IsValid() || at.Before(bestAt) || (at.Equal(bestAt) && addr.Less(best)) {
			best, bestAt = addr, at
		}
	}
	return best, best.IsValid()
}

func (s *state) cooling(now time.Time) int {
	n := 0
	for _, at := range s.released {
		if now.Sub(at) < s.model.Cooldown {
			n++
		}
	}
	return n
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
	Used  int64    // usable addresses held or cooling down
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
	var used int64
	for addr := range s.held {
		if s.model.Usable(addr) {
			used++
		}
	}
	for addr, at := range s.released {
		if now.Sub(at) < s.model.Cooldown && s.model.Usable(addr) {
			used++
		}
	}
	total := s.model.Size()
	return Stats{Total: total, Used: used, Free: new(big.Int).Sub(total, big.NewInt(used))}, nil
}
