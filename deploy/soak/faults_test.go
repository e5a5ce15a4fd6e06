package soak

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The faults, injected in rounds of all three in a random order, at random moments.
const (
	// faultLeader SIGKILLs the braid-ipam-server leader's process: a crash, so the Lease is not released and
	// the standby must wait for it to expire; in-flight writes are cut. (crictl stop would send SIGTERM first
	// and the leader would hand over cleanly; a force-deleted pod is killed the same way.)
	faultLeader = "ipam-leader"
	// faultAPI restarts kube-apiserver: every watch breaks, every writer sees errors for a while.
	faultAPI = "kube-apiserver"
	// faultBraid deletes braid's DaemonSet pod; the DaemonSet recreates it and its installer runs again.
	faultBraid = "braid-pod"

	// leaderLog is what braid-ipam-server logs once it leads (after client-go's "Successfully acquired
	// lease"); a process that loses the Lease exits, so the running container whose log says so leads.
	leaderLog       = "state rebuilt from the API server; serving"
	leaseName       = "braid-ipam-server"
	leaseDuration   = 15 * time.Second // braid-ipam-server's default
	recoveryTimeout = 2 * time.Minute
)

// fault is one injected fault and how the cluster recovered from it.
type fault struct {
	kind      string
	at        time.Duration // since the soak began
	what      string
	recovered time.Duration // from the injection until the component was back
	err       error         // the component did not come back
}

func (f fault) String() string {
	s := fmt.Sprintf("%5s %-14s %s", f.at.Round(time.Second), f.kind, f.what)
	if f.err != nil {
		return s + "; NOT RECOVERED: " + f.err.Error()
	}
	return s + fmt.Sprintf("; back after %s", f.recovered.Round(100*time.Millisecond))
}

// injectFaults injects faults at random moments until soakCtx ends; each runs to its end under ctx, so that
// the soak never ends with the API server half restarted. It returns the faults actually injected.
func (e *env) injectFaults(soakCtx, ctx context.Context, t *testing.T, rng *rand.Rand) []fault {
	start := time.Now()
	var out []fault
	var round []string
	for {
		pause := 5*time.Second + time.Duration(rng.Int64N(int64(20*time.Second)))
		select {
		case <-soakCtx.Done():
			return out
		case <-time.After(pause):
		}
		if len(round) == 0 {
			round = []string{faultLeader, faultAPI, faultBraid}
			rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		f := fault{kind: round[0], at: time.Since(start)}
		round = round[1:]
		t.Logf("fault at %s: %s", f.at.Round(time.Second), f.kind)
		var injected bool
		switch f.kind {
		case faultLeader:
			injected = e.killLeader(ctx, t, &f)
		case faultAPI:
			injected = e.restartAPIServer(ctx, t, &f)
		case faultBraid:
			injected = e.restartBraidPod(ctx, &f)
		}
		if !injected {
			t.Logf("fault %s not injected: %v", f.kind, f.err)
			continue
		}
		t.Logf("fault: %s", f)
		out = append(out, f)
	}
}

// killLeader finds the leader's container, SIGKILLs its process, and waits for another process to lead.
func (e *env) killLeader(ctx context.Context, t *testing.T, f *fault) bool {
	pod, id, holder, err := e.ipamLeader(ctx)
	if err != nil {
		f.err = err
		return false
	}
	out, err := e.node.crictl(ctx, "inspect", "-o", "go-template", "--template", "{{.info.pid}}", id)
	if err != nil {
		f.err = err
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 1 {
		f.err = fmt.Errorf("container %.12s: no PID in %q", id, out)
		return false
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		f.err = fmt.Errorf("kill -9 %d: %w", pid, err)
		return false
	}
	killed := time.Now()
	f.what = fmt.Sprintf("SIGKILL pid %d (pod %s, container %.12s, lease holder %s)", pid, pod, id, holder)
	var now string
	f.err = wait.PollUntilContextTimeout(ctx, poll, recoveryTimeout, true, func(ctx context.Context) (bool, error) {
		l := &coordinationv1.Lease{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: leaseName}, l); err != nil {
			return false, nil // the API server may be restarting
		}
		if h, r := l.Spec.HolderIdentity, l.Spec.RenewTime; h != nil && *h != "" && *h != holder && r != nil && r.After(killed) {
			now = *h
			return true, nil
		}
		return false, nil
	})
	f.recovered = time.Since(killed)
	if f.err != nil {
		f.err = fmt.Errorf("no new leader within %s: %w", recoveryTimeout, f.err)
	} else {
		f.what += "; new leader " + now
	}
	t.Logf("killed the IPAM leader: %s", f.what)
	return true
}

// ipamLeader waits for a held, fresh Lease and finds the one running braid-ipam-server container whose log
// says it acquired it. The holder identity alone cannot tell: on the host network both replicas are named
// after the node.
func (e *env) ipamLeader(ctx context.Context) (pod, containerID, holder string, err error) {
	last := errors.New("nothing read yet")
	err = wait.PollUntilContextTimeout(ctx, poll, recoveryTimeout, true, func(ctx context.Context) (bool, error) {
		l := &coordinationv1.Lease{}
		if last = e.c.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: leaseName}, l); last != nil {
			return false, nil
		}
		h, r := l.Spec.HolderIdentity, l.Spec.RenewTime
		if h == nil || *h == "" || r == nil || time.Since(r.Time) > leaseDuration {
			last = errors.New("the Lease is not held")
			return false, nil
		}
		var pods corev1.PodList
		if last = e.c.List(ctx, &pods, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid-ipam-server"}); last != nil {
			return false, nil
		}
		var leaders []string
		for _, p := range pods.Items {
			st := p.Status.ContainerStatuses
			if len(st) != 1 || st[0].State.Running == nil {
				continue
			}
			id := strings.TrimPrefix(st[0].ContainerID, "containerd://")
			// The container writes its log to stderr, which crictl logs passes through as its own.
			logs, err := exec.CommandContext(ctx, e.node.Crictl, "--config", e.node.CrictlConfig, "logs", id).CombinedOutput()
			if err != nil {
				last = fmt.Errorf("crictl logs %s: %w: %s", id, err, logs)
				return false, nil
			}
			if strings.Contains(string(logs), leaderLog) {
				leaders = append(leaders, p.Name+" "+id)
				pod, containerID, holder = p.Name, id, *h
			}
		}
		if len(leaders) != 1 {
			last = fmt.Errorf("%d running containers say they lead: %v", len(leaders), leaders)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		err = fmt.Errorf("finding the IPAM leader: %w (last: %w)", err, last)
	}
	return pod, containerID, holder, err
}

// restartAPIServer stops kube-apiserver and starts it again with the same flags (cluster-up.sh restart).
func (e *env) restartAPIServer(ctx context.Context, t *testing.T, f *fault) bool {
	start := time.Now()
	f.what = "cluster-up.sh restart kube-apiserver: SIGTERM, then started again with the same flags"
	f.err = e.Run(ctx, t, "cluster-up.sh", e.Script("cluster-up.sh"), "restart", "kube-apiserver")
	f.recovered = time.Since(start)
	return true // a failed restart is injected and not recovered: the soak reports it
}

// restartBraidPod deletes braid's DaemonSet pod and waits for its replacement to be Ready.
func (e *env) restartBraidPod(ctx context.Context, f *fault) bool {
	sel := client.MatchingLabels{"app.kubernetes.io/name": "braid"}
	var pods corev1.PodList
	if f.err = e.c.List(ctx, &pods, client.InNamespace(systemNS), sel); f.err != nil {
		return false
	}
	if len(pods.Items) != 1 {
		f.err = fmt.Errorf("want one braid DaemonSet pod, have %d", len(pods.Items))
		return false
	}
	old := pods.Items[0]
	if f.err = e.c.Delete(ctx, &old); f.err != nil {
		return false
	}
	start := time.Now()
	f.what = "deleted braid DaemonSet pod " + old.Name
	f.err = wait.PollUntilContextTimeout(ctx, poll, recoveryTimeout, true, func(ctx context.Context) (bool, error) {
		var l corev1.PodList
		if err := e.c.List(ctx, &l, client.InNamespace(systemNS), sel); err != nil {
			return false, nil
		}
		return len(l.Items) == 1 && l.Items[0].UID != old.UID && Ready(&l.Items[0]), nil
	})
	f.recovered = time.Since(start)
	if f.err != nil {
		f.err = fmt.Errorf("no new braid pod Ready within %s: %w", recoveryTimeout, f.err)
	}
	return true
}
