package server

import (
	"context"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// reasonOverlaps is the Ready=False reason of a pool refused because it shares addresses with an older pool.
const reasonOverlaps = "OverlapsPool"

// overlap finds a pool older than p (see olderThan) that could hand out one of p's addresses on the same
// network: each pool guards only its own FloatingIP names, so two such pools would give one address to two
// pods. Pools with distinct spec.vlan are separate networks and may share addresses. served tells whether a
// pool serves already.
func overlap(p *braidv1.IPPool, m *pool.Model, pools []braidv1.IPPool, parse func(*braidv1.IPPool) (pool.Model, error),
	served func(*braidv1.IPPool) bool) (older string, addr netip.Addr, found bool) {
	for i := range pools {
		q := &pools[i]
		if q.Name == p.Name || !olderThan(q, p, served) || separateNetworks(p, q) {
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

// olderThan orders pools by creation; creationTimestamp has whole seconds, so within one second the pool that
// serves already comes first (refusing it would leave its holders' addresses to the other), then the name.
func olderThan(q, p *braidv1.IPPool, served func(*braidv1.IPPool) bool) bool {
	if !q.CreationTimestamp.Equal(&p.CreationTimestamp) {
		return q.CreationTimestamp.Before(&p.CreationTimestamp)
	}
	if qs, ps := served(q), served(p); qs != ps {
		return qs
	}
	return q.Name < p.Name
}

// readyTrue: the pool's status says it serves (as written by this server or an earlier leader).
func readyTrue(p *braidv1.IPPool) bool {
	return meta.IsStatusConditionTrue(p.Status.Conditions, ConditionReady)
}

func separateNetworks(p, q *braidv1.IPPool) bool {
	return p.Spec.VLAN != nil && q.Spec.VLAN != nil && *p.Spec.VLAN != *q.Spec.VLAN
}

func overlapMessage(older string, addr netip.Addr) string {
	return fmt.Sprintf("spec.cidr/spec.ranges: address %s is also in IPPool %s, created earlier (or serving first, within one second); pools of one network "+
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
	served := func(q *braidv1.IPPool) bool {
		_, serving := s.serving(q.Name)
		return serving || readyTrue(q)
	}
	older, addr, found = overlap(p, m, pools.Items, s.parse, served)
	return older, addr, found, nil
}

// parsedPool is a pool's spec parsed at a generation.
type parsedPool struct {
	uid        types.UID
	generation int64
	model      pool.Model
	err        error
}

// parse is pool.Parse, remembered by the pool's UID and generation: pool reconciles follow every FloatingIP
// event, and each compares its pool with every older one.
func (s *state) parse(p *braidv1.IPPool) (pool.Model, error) {
	if v, ok := s.parsed.Load(p.Name); ok && v.(parsedPool).uid == p.UID && v.(parsedPool).generation == p.Generation {
		return v.(parsedPool).model, v.(parsedPool).err
	}
	m, err := pool.Parse(p.Spec)
	s.parsed.Store(p.Name, parsedPool{uid: p.UID, generation: p.Generation, model: m, err: err})
	return m, err
}
