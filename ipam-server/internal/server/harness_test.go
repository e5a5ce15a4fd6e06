package server_test

import (
	"context"
	"runtime/pprof"

	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

var (
	env *testenv.Env
	k8s client.Client // a client that knows NADs too
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	var err error
	env, err = testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scheme, err := server.Scheme()
	if err == nil {
		k8s, err = client.New(env.Config, client.Options{Scheme: scheme})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// startServer runs one in-process replica until the test ends; with leaseID, it takes part in leader election.
func startServer(t *testing.T, leaseID string, options ...func(*server.Options)) manager.Manager {
	t.Helper()
	opts := server.Options{MetricsAddr: "0", ProbeAddr: "0", Registry: prometheus.NewRegistry(), Workers: 8, InProcessReplica: true}
	for _, o := range options {
		o(&opts)
	}
	if leaseID != "" {
		opts.LeaderElection, opts.LeaderElectionID, opts.LeaderElectionNamespace = true, leaseID, "default"
		opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = 4*time.Second, 3*time.Second, 500*time.Millisecond
	}
	mgr, err := server.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second): // the manager's grace period is 30s: show what it waits for
			var dump strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&dump, 1)
			t.Logf("server still stopping after 20s; goroutines:\n%s", dump.String())
			err = <-done
		}
		switch {
		case err != nil && leaseID != "" && strings.Contains(err.Error(), "leader election lost"):
			// On a loaded machine a replica can miss its renew deadline; it stops and another takes over,
			// which is what replicas are for. The test's own checks judge the outcome.
			t.Logf("server replica: %v", err)
		case err != nil:
			t.Errorf("server: %v", err)
		}
	})
	return mgr
}

type poolOpt func(*braidv1.IPPool)

func cooldown(d time.Duration) poolOpt {
	return func(p *braidv1.IPPool) { p.Spec.ReuseCooldown = &metav1.Duration{Duration: d} }
}

func policy(p braidv1.ReleasePolicy) poolOpt {
	return func(ip *braidv1.IPPool) { ip.Spec.ReleasePolicy = p }
}

func mkPool(t *testing.T, name, cidr string, opts ...poolOpt) {
	t.Helper()
	p := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: braidv1.IPPoolSpec{CIDR: cidr}}
	cooldown(0)(p)
	for _, o := range opts {
		o(p)
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// Runs after the test's servers stop (cleanups run last-in first-out), so -count=N starts clean.
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), p)
		for _, f := range fips(t, name) {
			_ = k8s.Delete(context.Background(), &f)
		}
		dropFinalizer(name)
	})
}

// dropFinalizer removes the server's finalizer from a deleted pool: the servers have stopped, and a pool left
// deleting would refuse later tests' pools of the same addresses.
func dropFinalizer(pool string) {
	_ = k8s.Patch(context.Background(), &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool}},
		client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
}

func mkNAD(t *testing.T, ns, name string, pools ...string) {
	t.Helper()
	cfg := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"macvlan","master":"eth0","ipam":{"type":"braid-ipam","pools":["%s"]}}`,
		name, strings.Join(pools, `","`))
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: cfg}}
	if err := k8s.Create(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
}

func podObj(ns, name, node, networks string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": networks}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}
}

func mkPod(t *testing.T, ns, name, node, networks string) *corev1.Pod {
	t.Helper()
	p := podObj(ns, name, node, networks)
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// deletePod deletes at once (no kubelet runs in envtest to finish a graceful deletion).
func deletePod(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if err := k8s.Delete(context.Background(), p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

// assignments waits until the pod's annotation assigns every listed interface an address, with no error.
func assignments(t *testing.T, ns, name string, ifaces ...string) assignment.Assignments {
	t.Helper()
	var got assignment.Assignments
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			return false, nil
		}
		v, ok := p.Annotations[assignment.Annotation]
		if !ok {
			return false, nil
		}
		a, err := assignment.Parse(v)
		if err != nil || a.PodUID != string(p.UID) {
			return false, nil
		}
		for _, i := range ifaces {
			if iface, ok := a.Interfaces[i]; !ok || iface.Error != "" || len(iface.Addresses) == 0 {
				return false, nil
			}
		}
		got = a
		return true, nil
	})
	if err != nil {
		p := &corev1.Pod{}
		_ = k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p)
		t.Fatalf("pod %s/%s not served: %v; annotation: %s", ns, name, err, p.Annotations[assignment.Annotation])
	}
	return got
}

// fips lists the FloatingIPs of a pool.
func fips(t *testing.T, poolName string) []braidv1.FloatingIP {
	t.Helper()
	list := &braidv1.FloatingIPList{}
	if err := k8s.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	var out []braidv1.FloatingIP
	for _, f := range list.Items {
		if f.Spec.Pool == poolName {
			out = append(out, f)
		}
	}
	return out
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not reached within %s: %s", what, timeout, last)
	}
}

// getPool reads a pool from the API server.
func getPool(t *testing.T, name string) *braidv1.IPPool {
	t.Helper()
	p := &braidv1.IPPool{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// poolStatus reads a pool's status.
func poolStatus(t *testing.T, name string) braidv1.IPPoolStatus {
	t.Helper()
	return getPool(t, name).Status
}

// podEvents returns the reasons and messages of the Events about a pod.
func podEvents(t *testing.T, ns, name string) []string {
	t.Helper()
	list := &corev1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Reason+": "+e.Message)
		}
	}
	return out
}

// awaitEvent waits until the pod has an Event of the reason whose message contains want.
func awaitEvent(t *testing.T, ns, pod, reason, want string) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("an Event %s on %s saying %q", reason, pod, want), func() (bool, string) {
		evs := podEvents(t, ns, pod)
		for _, e := range evs {
			if r, msg, _ := strings.Cut(e, ": "); r == reason && strings.Contains(msg, want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("events: %q", evs)
	})
}
