package daemon

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

func write(p interface {
	GetNamespace() string
	GetName() string
	GetUID() k8stypes.UID
}, containerID, value string) netstatus.Write {
	return netstatus.Write{ContainerID: containerID, Namespace: p.GetNamespace(), Name: p.GetName(), UID: p.GetUID(), Value: value}
}

// A write accepted by one daemon is on disk (0600) and made by the next one, after a restart.
func TestStatusQueueSurvivesARestart(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	p := createPod(t, ns, "web", "n1")
	c, _ := api(t)
	dir := filepath.Join(t.TempDir(), "queue")
	q1, err := NewStatusQueue(dir, c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := q1.Write(t.Context(), write(p, "sandbox1", `[{"name":"cbr0","default":true}]`)); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("queue dir holds %d files, want 1", len(files))
	}
	if fi, _ := files[0].Info(); fi.Mode().Perm() != 0o600 {
		t.Errorf("queued write has mode %v, want 0600", fi.Mode().Perm())
	}
	// q1 never ran: the daemon died. The next one finds the write and makes it.
	q2, err := NewStatusQueue(dir, c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	must(t, q2.Reload())
	if q2.Pending() != 1 {
		t.Fatalf("restarted queue has %d writes, want 1", q2.Pending())
	}
	run(t, q2, 2)
	eventually(t, "network-status written", func() bool {
		v, _ := annotation(t, ns, "web")
		return v == `[{"name":"cbr0","default":true}]`
	})
	eventually(t, "queue empty", func() bool { return q2.Pending() == 0 })
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("files left in the queue dir: %d", len(files))
	}
}

// Per pod only the latest write counts; DEL's Forget drops its sandbox's write and not another sandbox's.
func TestStatusQueueForgetsOnlyItsSandbox(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	a := createPod(t, ns, "a", "n1")
	b := createPod(t, ns, "b", "n1")
	c, _ := api(t)
	q, err := NewStatusQueue(t.TempDir(), c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	must(t, q.Write(ctx, write(a, "old-sandbox", `"old"`)))
	must(t, q.Write(ctx, write(a, "new-sandbox", `[{"name":"new","default":true}]`)))
	if q.Pending() != 1 {
		t.Fatalf("two writes to one pod: %d pending, want 1 (the latest)", q.Pending())
	}
	must(t, q.Forget(a.UID, "old-sandbox"))
	if q.Pending() != 1 {
		t.Fatal("forgetting the old sandbox dropped the new sandbox's write")
	}
	must(t, q.Write(ctx, write(b, "b-sandbox", `[{"name":"b","default":true}]`)))
	must(t, q.Forget(b.UID, "b-sandbox"))
	run(t, q, 1)
	eventually(t, "a's latest status", func() bool {
		v, _ := annotation(t, ns, "a")
		return v == `[{"name":"new","default":true}]`
	})
	eventually(t, "queue empty", func() bool { return q.Pending() == 0 })
	if v, _ := annotation(t, ns, "b"); v != "" {
		t.Errorf("b got the status its DEL forgot: %s", v)
	}
}

// A write for a pod that is gone, or whose name now belongs to a newer pod, is dropped: it never lands on
// the newer pod.
func TestStatusQueueNeverWritesAnotherIncarnation(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	old := createPod(t, ns, "sts-0", "n1")
	gone := createPod(t, ns, "gone", "n1")
	// Bound pods wait for their kubelet; there is none, so they go at once.
	must(t, suiteEnv.Client.Delete(t.Context(), old, client.GracePeriodSeconds(0)))
	must(t, suiteEnv.Client.Delete(t.Context(), gone, client.GracePeriodSeconds(0)))
	eventually(t, "old pod gone", func() bool {
		err := suiteEnv.Client.Get(t.Context(), client.ObjectKeyFromObject(old), old.DeepCopy())
		return apierrors.IsNotFound(err)
	})
	newer := createPod(t, ns, "sts-0", "n1")
	c, calls := api(t)
	q, err := NewStatusQueue(t.TempDir(), c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	must(t, q.Write(t.Context(), write(old, "s1", `"for the old pod"`)))
	must(t, q.Write(t.Context(), write(gone, "s2", `"for a deleted pod"`)))
	run(t, q, 2)
	eventually(t, "both writes settled", func() bool { return q.Pending() == 0 })
	if v, p := annotation(t, ns, "sts-0"); v != "" || p.UID != newer.UID {
		t.Errorf("the newer sts-0 (%s) got the old pod's status: %q", p.UID, v)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (one try each: neither is retried)", n)
	}
}

// A failing API server is retried with backoff until the write lands.
func TestStatusQueueRetries(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	p := createPod(t, ns, "web", "n1")
	c, _ := api(t)
	flaky := &flakyPatcher{Patcher: c, failures: 3}
	q, err := NewStatusQueue(t.TempDir(), flaky, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	must(t, q.Write(t.Context(), write(p, "s", `[{"name":"x","default":true}]`)))
	run(t, q, 1)
	eventually(t, "status written after the failures", func() bool {
		v, _ := annotation(t, ns, "web")
		return v != ""
	})
	if n := flaky.calls.Load(); n != 4 {
		t.Errorf("%d attempts, want 4 (3 failures, then success)", n)
	}
}

type flakyPatcher struct {
	Patcher
	failures int64
	calls    atomic.Int64
}

func (f *flakyPatcher) SetPodAnnotation(ctx context.Context, ns, name string, uid k8stypes.UID, key, value string) error {
	if f.calls.Add(1) <= f.failures {
		return apierrors.NewServiceUnavailable("etcd leader changed")
	}
	return f.Patcher.SetPodAnnotation(ctx, ns, name, uid, key, value)
}

// A queue directory with a broken file still starts; the file is dropped.
func TestStatusQueueDropsUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "some-uid"), []byte("{not json"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, ".some-uid.123"), []byte("half"), 0o600))
	c, _ := api(t)
	q, err := NewStatusQueue(dir, c, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	must(t, q.Reload())
	if q.Pending() != 0 {
		t.Errorf("%d writes from broken files", q.Pending())
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("broken files left: %d", len(files))
	}
}

// Writes, forgets and landings of one daemon leave exactly the writes still to make to the next one: per pod
// the latest, none a DEL forgot, none that landed.
func TestStatusQueueRestartKeepsExactlyTheLiveWrites(t *testing.T) {
	dir := t.TempDir()
	landing := patcherFunc(func(_ context.Context, _, name string, _ k8stypes.UID, _, _ string) error {
		if name == "landed" {
			return nil
		}
		return apierrors.NewServiceUnavailable("not now")
	})
	q1, err := NewStatusQueue(dir, landing, testLog(t))
	must(t, err)
	must(t, q1.Reload())
	ctx := t.Context()
	must(t, q1.Write(ctx, queued("replaced", "s1", `"first"`)))
	must(t, q1.Write(ctx, queued("forgotten", "s2", `"forgotten"`)))
	must(t, q1.Write(ctx, queued("landed", "s3", `"landed"`)))
	must(t, q1.Write(ctx, queued("replaced", "s4", `"second"`)))
	must(t, q1.Write(ctx, queued("other-sandbox", "s5", `"stays"`)))
	must(t, q1.Forget("uid-forgotten", "s2"))
	must(t, q1.Forget("uid-other-sandbox", "s-old"))
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q1.Run(runCtx, 1); close(stopped) }()
	eventually(t, "the landing write landed", func() bool { return q1.Pending() == 2 })
	stop()
	<-stopped

	want := map[string]netstatus.Write{
		"uid-replaced":      queued("replaced", "s4", `"second"`),
		"uid-other-sandbox": queued("other-sandbox", "s5", `"stays"`),
	}
	if q2 := reloaded(t, dir); !maps.Equal(q2.pending, want) {
		t.Errorf("the next start queues %v, want %v", q2.pending, want)
	}
}

// queued is a write for the pod ns/name with UID uid-name.
func queued(name, containerID, value string) netstatus.Write {
	return netstatus.Write{ContainerID: containerID, Namespace: "ns", Name: name, UID: k8stypes.UID("uid-" + name), Value: value}
}

// reloaded is a new queue on dir after its Reload: what a restarted daemon starts with.
func reloaded(t *testing.T, dir string) *StatusQueue {
	t.Helper()
	q, err := NewStatusQueue(dir, nil, testLog(t))
	must(t, err)
	must(t, q.Reload())
	return q
}

type patcherFunc func(ctx context.Context, ns, name string, uid k8stypes.UID, key, value string) error

func (f patcherFunc) SetPodAnnotation(ctx context.Context, ns, name string, uid k8stypes.UID, key, value string) error {
	return f(ctx, ns, name, uid, key, value)
}

// BenchmarkStatusQueueWrite is what queueing a status costs an ADD, with its DEL's Forget.
func BenchmarkStatusQueueWrite(b *testing.B) {
	q, err := NewStatusQueue(b.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := q.Reload(); err != nil {
		b.Fatal(err)
	}
	w := queued("web", "sandbox", `[{"name":"cbr0","interface":"eth0","ips":["10.0.0.7"],"default":true}]`)
	ctx := context.Background()
	for b.Loop() {
		if err := q.Write(ctx, w); err != nil {
			b.Fatal(err)
		}
		if err := q.Forget(w.UID, w.ContainerID); err != nil {
			b.Fatal(err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A new daemon may be made while the old one still serves and drains (its pod terminating): a write the old
// one accepted after the new one was made, and left on disk at its exit, is made by the new one. Before, the
// new daemon knew only the files there when it was made, and the write waited for the next restart.
func TestDaemonTakesOverWritesTheOldOneLeft(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	p := createPod(t, ns, "web", "node-t")
	c, _ := api(t)
	dir := filepath.Join(t.TempDir(), "queue")
	cfg := Config{Socket: filepath.Join(t.TempDir(), "braid.sock"), Node: "node-t", StateDir: dir, Log: testLog(t)}
	old, err := New(cfg, c)
	must(t, err)
	cfg.Socket = filepath.Join(t.TempDir(), "braid.sock")
	d, err := New(cfg, c)
	must(t, err)
	// The old daemon accepts an ADD's status and exits (or is killed) before it lands.
	must(t, old.Status.Write(t.Context(), write(p, "sandbox", `[{"name":"late","default":true}]`)))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.Run(ctx, func(context.Context, shim.Request) ([]byte, error) { return nil, errors.New("not a CNI call") })
	}()
	t.Cleanup(func() { cancel(); must(t, <-done) })
	eventually(t, "the old daemon's write made by the new one", func() bool {
		v, _ := annotation(t, ns, "web")
		return v == `[{"name":"late","default":true}]`
	})
}

// The state directory has one daemon at a time: the next one waits until the previous one lets go (exits).
func TestStateDirHasOneDaemonAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "queue")
	unlock, err := lockStateDir(t.Context(), dir, testLog(t))
	must(t, err)
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := lockStateDir(short, dir, testLog(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second daemon while the first holds the directory: %v, want to wait until its deadline", err)
	}
	unlock()
	next, err := lockStateDir(t.Context(), dir, testLog(t))
	must(t, err)
	next()
}

// A call's network-status write waits answerGrace after the shim hung up, so that it does not take the CPU
// from the runtime collecting the answer; then it lands.
func TestStatusWriteWaitsForTheRuntimeToHaveTheAnswer(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	p := createPod(t, ns, "web", "n1")
	c, _ := api(t)
	clk := clocktesting.NewFakeClock(time.Now())
	q, err := newStatusQueue(t.TempDir(), c, testLog(t), clk)
	must(t, err)
	run(t, q, 1)
	socket := filepath.Join(t.TempDir(), "braid.sock")
	l, err := shim.Listen(t.Context(), socket)
	must(t, err)
	served := make(chan error, 1)
	go func() {
		served <- shim.Serve(t.Context(), l, func(ctx context.Context, _ shim.Request) ([]byte, error) {
			return []byte(`{}`), q.Write(ctx, write(p, "sandbox", `[{"name":"cbr0","default":true}]`))
		})
	}()
	t.Cleanup(func() { _ = l.Close(); must(t, <-served) })

	_, hangUp, err := shim.Call(t.Context(), socket, shim.Request{Command: "ADD", ContainerID: "sandbox"})
	must(t, err)
	hangUp()
	time.Sleep(300 * time.Millisecond) // the after-reply work has long run, the clock has not moved
	if v, _ := annotation(t, ns, "web"); v != "" {
		t.Fatalf("network-status written %s before answerGrace passed", v)
	}
	if q.Pending() != 1 {
		t.Fatalf("%d writes pending, want 1", q.Pending())
	}
	clk.Step(answerGrace)
	eventually(t, "network-status written once answerGrace passed", func() bool {
		v, _ := annotation(t, ns, "web")
		return v == `[{"name":"cbr0","default":true}]`
	})
}
