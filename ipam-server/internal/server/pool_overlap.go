package server

import (
	"context"
	"fmt"
	"net/netip"

	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// reasonOverlaps is the Ready=False reason of a pool refused because it shares addresses with an older pool.
const reasonOverlaps = "OverlapsPool"

// overlap finds a pool older than p (by creation, then name) that could hand out one of p's addresses on
// the same network: each pool guards only its own FloatingIP names, so two such pools would give one
// address to two pods. Pools with distinct spec.vlan are separate networks and may share addresses.
func overlap(p *braidv1.IPPool, m *pool.Model, pools []braidv1.IPPool, parse func(*braidv1.IPPool) (pool.Model, error)) (
	older string, addr netip.Addr, found bool) {
	for i := range pools {
		q := &pools[i]
		if q.Name == p.Name || !olderThan(q, p) || separateNetworks(p, q) {
			continue
		}
		qm, err := parse(q)
		if err != nil {
			continue
		}
		if a, ok := m.Shared(&qm); ok {
			return q.Name, a, true
		}
	}
	return "", netip.Addr{}, false
}

func olderThan(q, p *braidv1.IPPool) bool {
	if !q.CreationTimestamp.Equal(&p.CreationTimestamp) {
		return q.CreationTimestamp.Before(&p.CreationTimestamp)
	}
	return q.Name < p.Name
}

func separateNetworks(p, q *braidv1.IPPool) bool {
	return p.Spec.VLAN != nil && q.Spec.VLAN != nil && *p.Spec.VLAN != *q.Spec.VLAN
}

func overlapMessage(older string, addr netip.Addr) string {
	return fmt.Sprintf("spec.cidr/spec.ranges: address %s is also in IPPool %s, created earlier; pools of one network "+
		"that share addresses would give one address to two pods: keep their ranges apart (spec.ranges, spec.excludes), "+
		"or set distinct spec.vlan if they are separate networks", addr, older)
}

// olderOverlap lists the pools (from the cache) and finds an older one that p, of model m, overlaps.
func (s *state) olderOverlap(ctx context.Context, c client.Reader, p *braidv1.IPPool, m *pool.Model) (
	older string, addr netip.Addr, found bool, err error) {
	pools := &braidv1.IPPoolList{}
	if err := c.List(ctx, pools, client.UnsafeDisableDeepCopy); err != nil { // read only
		return "", netip.Addr{}, false, fmt.Errorf("list IPPools: %w", err)
	}
	older, addr, found = overlap(p, m, pools.Items, s.parse)
	return older, addr, found, nil
}

// parsedPool is a pool's spec parsed at a generation.
type parsedPool struct {
	generation int64
	model      pool.Model
	err        error
}

// parse is pool.Parse, remembered by the pool's UID and generation: pool reconciles follow every FloatingIP
// event, and each compares its pool with every older one.
func (s *state) parse(p *braidv1.IPPool) (pool.Model, error) {
	if v, ok := s.parsed.Load(p.UID); ok && v.(parsedPool).generation == p.Generation {
		return v.(parsedPool).model, v.(parsedPool).err
	}
	m, err := pool.Parse(p.Spec)
	s.parsed.Store(p.UID, parsedPool{generation: p.Generation, model: m, err: err})
	return m, err
}
