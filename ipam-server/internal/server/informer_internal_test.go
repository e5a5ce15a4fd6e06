package server

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/allocator"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// After its watch broke, the informer lists again and reports a FloatingIP deleted and made again meanwhile
// (its address released and taken again, under the same name) as an update to an object of another UID. The
// old object is gone: once the new one is deleted too, the address is free, not held by the old one forever.
func TestAFloatingIPReplacedWhileTheWatchWasBrokenFreesItsAddress(t *testing.T) {
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "203.0.113.9/32", ReuseCooldown: &metav1.Duration{}})
	if err != nil {
		t.Fatal(err)
	}
	s := newState(time.Now)
	s.alloc.SetPool("one", m)
	h := s.informerHandler()
	fip := func(uid, podUID string) *braidv1.FloatingIP {
		return &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "one-203-0-113-9", UID: types.UID(uid)},
			Spec: braidv1.FloatingIPSpec{IP: "203.0.113.9", Pool: "one", Pod: "ns/p-" + podUID, PodUID: podUID}}
	}
	first, second := fip("uid-1", "a"), fip("uid-2", "b")
	h.OnAdd(first, false)
	h.OnUpdate(first, second) // the relist: first was deleted, second created, while the watch was broken
	h.OnDelete(second)
	if _, err := s.alloc.Allocate("one", time.Now().Add(time.Second)); errors.Is(err, allocator.ErrExhausted) {
		t.Fatalf("203.0.113.9 is held although both its FloatingIPs are gone: %v", err)
	}
}

// A FloatingIP created here and deleted before the cache showed it leaves no entry for its pod behind (one per
// such pod, for the life of the process).
func TestAFloatingIPGoneBeforeTheCacheSawItLeavesNoPendingEntry(t *testing.T) {
	s := newState(time.Now)
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "one-203-0-113-9", UID: "uid-1"},
		Spec: braidv1.FloatingIPSpec{IP: "203.0.113.9", Pool: "one", Pod: "ns/p", PodUID: "a"}}
	s.created(f)
	s.informerHandler().OnDelete(f)
	if n := len(s.pending); n != 0 {
		t.Errorf("pending entries after the FloatingIP went: %d (%v), want none", n, s.pending)
	}
}
