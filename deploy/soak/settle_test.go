package soak

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ipamTwoReplicas runs braid-ipam-server as two replicas. The local overlay runs one on the host network,
// where a second would fail to bind the same metrics and probe ports (and the scheduler refuses a second pod
// with the same host ports): the soak turns both servers off, and with them the probes that use them.
const ipamTwoReplicas = `[
{"op": "replace", "path": "/spec/replicas", "value": 2},
{"op": "test", "path": "/spec/template/spec/containers/0/args/1", "value": "--metrics-bind-address=:18080"},
{"op": "replace", "path": "/spec/template/spec/containers/0/args/1", "value": "--metrics-bind-address=0"},
{"op": "test", "path": "/spec/template/spec/containers/0/args/2", "value": "--health-probe-bind-address=:18081"},
{"op": "replace", "path": "/spec/template/spec/containers/0/args/2", "value": "--health-probe-bind-address=0"},
{"op": "remove", "path": "/spec/template/spec/containers/0/ports"},
{"op": "remove", "path": "/spec/template/spec/containers/0/readinessProbe"},
{"op": "remove", "path": "/spec/template/spec/containers/0/livenessProbe"}
]`

// twoIPAMReplicas scales braid-ipam-server to two replicas and waits for both to run and one to lead.
func (e *env) twoIPAMReplicas(ctx context.Context, t *testing.T) {
	t.Helper()
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = systemNS, "braid-ipam-server"
	if err := e.c.Patch(ctx, d, client.RawPatch(types.JSONPatchType, []byte(ipamTwoReplicas))); err != nil {
		t.Fatalf("braid-ipam-server to two replicas: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, poll, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(d), d); err != nil {
			return false, err
		}
		st := d.Status
		return st.ObservedGeneration >= d.Generation && st.Replicas == 2 && st.UpdatedReplicas == 2 && st.AvailableReplicas == 2, nil
	})
	if err != nil {
		t.Fatalf("braid-ipam-server: two replicas not available: %v (status %+v)", err, d.Status)
	}
	pod, _, holder, err := e.ipamLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("braid-ipam-server runs two replicas; %s leads (Lease holder %s)", pod, holder)
}

// settle stops what the churn left (bare pods), scales the workloads back to the demo's, and waits until
// every pod runs Ready and nothing terminates, both braid-ipam-server replicas run, and one leads.
func (e *env) settle(ctx context.Context, t *testing.T) error {
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := e.c.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(demoNS), client.MatchingLabels{"app": "soak"})
		if err == nil {
			err = e.scale(ctx, &appsv1.Deployment{}, "web", 2)
		}
		if err == nil {
			err = e.scale(ctx, &appsv1.StatefulSet{}, "db", 2)
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("scaling back to the demo's workloads: %w", err)
	}
	var why string
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, settleTimeout, true, func(ctx context.Context) (bool, error) {
		why = e.unsettled(ctx)
		return why == "", nil
	})
	if err != nil {
		return fmt.Errorf("after %s: %s%s", settleTimeout, why, e.stuck(ctx))
	}
	t.Logf("settled in %s: web 2, db 2, no bare pod, every pod Ready", time.Since(start).Round(time.Second))
	return nil
}

// unsettled says what is not settled yet ("" when all is).
func (e *env) unsettled(ctx context.Context) string {
	want := map[string]int{"web": 2, "db": 2}
	var pods corev1.PodList
	if err := e.c.List(ctx, &pods, client.InNamespace(demoNS)); err != nil {
		return err.Error()
	}
	got := map[string]int{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !Ready(p) {
			return fmt.Sprintf("pod %s/%s is not Ready (or terminating)", p.Namespace, p.Name)
		}
		got[p.Labels["app"]]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Sprintf("pods by app %v, want %v", got, want)
	}
	var sys corev1.PodList
	if err := e.c.List(ctx, &sys, client.InNamespace(systemNS)); err != nil {
		return err.Error()
	}
	servers := 0
	for i := range sys.Items {
		p := &sys.Items[i]
		if !Ready(p) {
			return fmt.Sprintf("pod %s/%s is not Ready (or terminating)", p.Namespace, p.Name)
		}
		if p.Labels["app.kubernetes.io/name"] == "braid-ipam-server" {
			servers++
		}
	}
	if servers != 2 {
		return fmt.Sprintf("%d braid-ipam-server pods, want 2", servers)
	}
	l := &coordinationv1.Lease{}
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: leaseName}, l); err != nil {
		return err.Error()
	}
	if r := l.Spec.RenewTime; l.Spec.HolderIdentity == nil || r == nil || time.Since(r.Time) > leaseDuration {
		return "no braid-ipam-server leads (the Lease is not renewed)"
	}
	return ""
}

// stuck describes the pods that are not Ready, with the last event of each.
func (e *env) stuck(ctx context.Context) string {
	var b strings.Builder
	for _, ns := range []string{demoNS, systemNS} {
		var pods corev1.PodList
		var events corev1.EventList
		if e.c.List(ctx, &pods, client.InNamespace(ns)) != nil || e.c.List(ctx, &events, client.InNamespace(ns)) != nil {
			continue
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if Ready(p) {
				continue
			}
			evs := slices.DeleteFunc(slices.Clone(events.Items), func(ev corev1.Event) bool { return ev.InvolvedObject.UID != p.UID })
			last := "(no event)"
			if len(evs) > 0 {
				ev := slices.MaxFunc(evs, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
				last = ev.Reason + ": " + ev.Message
			}
			fmt.Fprintf(&b, "\n  %s/%s phase %s deleting %v; last event %s", ns, p.Name, p.Status.Phase, p.DeletionTimestamp != nil, last)
		}
	}
	return b.String()
}

// check reads snapshots until the check finds nothing or checkTimeout passes, and returns the last findings;
// ok is false when no snapshot could be read.
func (e *env) check(ctx context.Context, t *testing.T) (f Findings, ok bool) {
	t.Helper()
	r := Reader{Client: e.c, Node: e.node, Inspector: e.in, Namespace: demoNS, Reservations: []string{reservation}}
	start := time.Now()
	var s Snapshot
	var readErr error
	round := 0
	_ = wait.PollUntilContextTimeout(ctx, 5*time.Second, checkTimeout, true, func(ctx context.Context) (bool, error) {
		round++
		snap, err := r.Read(ctx)
		if err != nil {
			readErr = err
			t.Logf("check round %d: reading the snapshot: %v", round, err)
			return false, nil
		}
		s, readErr, ok = snap, nil, true
		f = Check(s)
		if !f.Empty() {
			t.Logf("check round %d: %d duplicates, %d leaks; first: %s", round, len(f.Duplicates), len(f.Leaks),
				slices.Concat(f.Duplicates, f.Leaks)[0])
		}
		return f.Empty(), nil
	})
	if readErr != nil {
		t.Errorf("the last snapshot could not be read: %v", readErr)
	}
	if ok {
		addrs, veths, peers := 0, 0, 0
		for _, p := range s.Inside {
			for _, a := range p.Attachments {
				if !a.Default {
					addrs += len(podAddrs(a))
				}
			}
		}
		for _, l := range s.Links {
			if l.Kind == "veth" && l.Master == clusterBridge {
				veths++
			}
		}
		for _, sb := range s.Sandboxes {
			if sb.Eth0Peer > 0 {
				peers++
			}
		}
		t.Logf("check after %s (%d rounds) looked at: %d FloatingIPs, %d pools, %d addresses in %d running pods, "+
			"%d ready sandboxes (%d on the cluster network), %d cache files, %d host links (%d veths on %s), %d VFs",
			time.Since(start).Round(time.Second), round, len(s.FloatingIPs), len(s.Pools), addrs, len(s.Inside),
			len(s.Sandboxes), peers, len(s.CacheFiles), len(s.Links), veths, clusterBridge, len(s.VFs))
	}
	return f, ok
}
