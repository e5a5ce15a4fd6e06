package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
)

const testKey = "braid.dev/ip-assignments"

// The daemon answers CommandPodAnnotation on its socket from the cache of its node's pods: at once when the
// value differs from After, at the change that makes it differ, with the value as it is when the wait is over,
// and "not found" for a pod it has not seen (another node's, or another UID) after notSeenWait at most; it
// makes no request to the API server for any of it.
func TestPodAnnotationFromTheCache(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	mine := createPod(t, ns, "mine", "node-q")
	createPod(t, ns, "theirs", "node-other")
	api, calls := api(t)
	d, ctx, cancel := runDaemon(t, api, "node-q")
	awaitServing(ctx, t, d, ns, "mine")
	ask := func(q shim.AnnotationQuery) (shim.AnnotationAnswer, time.Duration) {
		t.Helper()
		q.Namespace, q.Key = ns, testKey
		start := time.Now()
		a, err := shim.AskPodAnnotation(ctx, d.cfg.Socket, q)
		must(t, err)
		return a, time.Since(start)
	}
	calls.Store(0)

	// No annotation yet: the query waits for the server's write.
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := setAnnotation(ns, "mine", `{"podUID":"x"}`); err != nil {
			t.Error(err)
		}
	}()
	a, took := ask(shim.AnnotationQuery{Name: "mine", UID: string(mine.UID), Wait: 10 * time.Second})
	if !a.Found || a.UID != string(mine.UID) || a.Value != `{"podUID":"x"}` || took < 250*time.Millisecond || took > 5*time.Second {
		t.Errorf("waiting query = %+v after %v, want the value written after 300ms", a, took)
	}
	// Value differs from After: at once.
	if a, took := ask(shim.AnnotationQuery{Name: "mine", Wait: 10 * time.Second}); a.Value != `{"podUID":"x"}` || took > time.Second {
		t.Errorf("query with a different After = %+v after %v, want the value at once", a, took)
	}
	// Nothing changes: the value as it is when the wait is over.
	if a, took := ask(shim.AnnotationQuery{Name: "mine", After: `{"podUID":"x"}`, Wait: 500 * time.Millisecond}); !a.Found || a.Value != `{"podUID":"x"}` || took < 450*time.Millisecond {
		t.Errorf("unchanged = %+v after %v, want the same value after the 500ms wait", a, took)
	}
	// Another node's pod, and another incarnation of mine: not found, after notSeenWait at most.
	for _, q := range []shim.AnnotationQuery{{Name: "theirs", Wait: time.Minute}, {Name: "mine", UID: "other-uid", Wait: time.Minute}} {
		if a, took := ask(q); a.Found || took > notSeenWait+time.Second {
			t.Errorf("%+v = %+v after %v, want not found within %v", q, a, took, notSeenWait)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the daemon made %d API requests, want 0", n)
	}
	if n := d.Cache.waiters.count(); n != 0 {
		t.Errorf("%d queries still registered as waiting after all answered", n)
	}

	// A stopping daemon answers a waiting query at once (it would otherwise hold the daemon's exit).
	answered := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_, _ = shim.AskPodAnnotation(context.Background(), d.cfg.Socket, shim.AnnotationQuery{Namespace: ns, Name: "mine",
			Key: testKey, After: `{"podUID":"x"}`, Wait: time.Minute})
		answered <- time.Since(start)
	}()
	eventually(t, "query waiting", func() bool { return d.Cache.waiters.count() == 1 })
	cancel()
	select {
	case took := <-answered:
		if took > 10*time.Second {
			t.Errorf("waiting query answered %v after the daemon was told to stop", took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a waiting query kept the stopping daemon")
	}
}

// setAnnotation writes the annotation as braid-ipam-server does (not through the daemon's client).
func setAnnotation(ns, name, value string) error {
	var p corev1.Pod
	if err := suiteEnv.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		return err
	}
	patch := client.MergeFrom(p.DeepCopy())
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[testKey] = value
	return suiteEnv.Client.Patch(context.Background(), &p, patch)
}

// A pod being deleted is never served by braid-ipam-server, so a query that asks to hear of it (EndOnDeletion,
// as braid-ipam sends) is answered at once, or at the deletion when it waits, with Deleting set. A query without
// it (an older braid-ipam, which would only ask again at once) waits as it always did.
func TestPodAnnotationAnswersAPodBeingDeleted(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	pod := createPod(t, ns, "leaving", "node-d")
	holdOnDeletion(t, pod)
	api, _ := api(t)
	d, ctx, _ := runDaemon(t, api, "node-d")
	q := shim.AnnotationQuery{Namespace: ns, Name: "leaving", UID: string(pod.UID), Key: testKey, EndOnDeletion: true, Wait: time.Minute}
	awaitServing(ctx, t, d, ns, "leaving")
	ask := func(q shim.AnnotationQuery) (shim.AnnotationAnswer, time.Duration) {
		t.Helper()
		start := time.Now()
		a, err := shim.AskPodAnnotation(ctx, d.cfg.Socket, q)
		must(t, err)
		return a, time.Since(start)
	}

	// Deleted while the query waits for the annotation.
	time.AfterFunc(300*time.Millisecond, func() {
		if err := suiteEnv.Client.Delete(context.Background(), pod); err != nil {
			t.Error(err)
		}
	})
	if a, took := ask(q); !a.Found || !a.Deleting || took > 5*time.Second {
		t.Errorf("waiting query = %+v after %v, want the pod being deleted, answered at its deletion", a, took)
	}
	// Being deleted already: at once.
	if a, took := ask(q); !a.Found || !a.Deleting || took > time.Second {
		t.Errorf("query = %+v after %v, want the pod being deleted, at once", a, took)
	}
	// An older braid-ipam's query: the wait is its to end, by the value's change or its Wait.
	old := q
	old.EndOnDeletion, old.Wait = false, 700*time.Millisecond
	if a, took := ask(old); !a.Found || took < 600*time.Millisecond {
		t.Errorf("query without EndOnDeletion = %+v after %v, want an answer when its 700ms wait is over", a, took)
	}
}

// A pod deleted outright (grace period 0) while a query waits is marked deleting and removed in one go: the
// cache may apply both before the query reads it again, so that the query never sees it being deleted, only
// gone. The query is answered at once with Deleting, as for a pod seen being deleted; before, it waited
// notSeenWait and answered "not found", and braid-ipam went on to ask the API server.
func TestPodAnnotationAnswersAPodRemovedWhileWaiting(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	pod := createPod(t, ns, "removed", "node-r")
	api, _ := api(t)
	d, ctx, _ := runDaemon(t, api, "node-r")
	awaitServing(ctx, t, d, ns, "removed")
	answered := make(chan shim.AnnotationAnswer, 1)
	go func() {
		a, err := shim.AskPodAnnotation(ctx, d.cfg.Socket, shim.AnnotationQuery{Namespace: ns, Name: "removed", UID: string(pod.UID),
			Key: testKey, EndOnDeletion: true, Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		answered <- a
	}()
	eventually(t, "query waiting", func() bool { return d.Cache.waiters.count() == 1 })
	// What the informer does with the pod's last events when it takes them together: its store drops the
	// pod, then the handlers hear of it.
	obj, ok, err := d.Cache.pods.GetStore().GetByKey(ns + "/removed")
	if err != nil || !ok {
		t.Fatalf("pod not in the cache: %v", err)
	}
	start := time.Now()
	must(t, d.Cache.pods.GetStore().Delete(obj))
	d.Cache.waiters.changed(obj)
	select {
	case a := <-answered:
		if !a.Found || !a.Deleting || a.UID != string(pod.UID) {
			t.Errorf("query = %+v, want pod %s being deleted", a, pod.UID)
		}
		if took := time.Since(start); took > notSeenWait/2 {
			t.Errorf("answered %v after the pod left the cache, want at once", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query not answered 10s after the pod left the cache")
	}
}

// holdOnDeletion gives the pod a finalizer, so that deleting it leaves it with a deletionTimestamp (as a
// terminating pod stays while the kubelet stops it), and removes the finalizer when the test ends.
func holdOnDeletion(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Finalizers = append(pod.Finalizers, "braid.dev/test-hold")
	must(t, suiteEnv.Client.Patch(t.Context(), pod, patch))
	t.Cleanup(func() {
		var p corev1.Pod
		if err := suiteEnv.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &p); err != nil {
			return
		}
		patch := client.MergeFrom(p.DeepCopy())
		p.Finalizers = nil
		_ = suiteEnv.Client.Patch(context.Background(), &p, patch)
	})
}

// runDaemon runs the node's daemon (answering no CNI call) until stop or the test's end; ctx ends with it.
func runDaemon(t *testing.T, api *kube.Client, node string) (d *Daemon, ctx context.Context, stop context.CancelFunc) {
	t.Helper()
	d, err := New(Config{Socket: filepath.Join(t.TempDir(), "braid.sock"), Node: node, StateDir: t.TempDir(), Log: testLog(t)}, api)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.Run(ctx, func(context.Context, shim.Request) ([]byte, error) { return nil, errors.New("not a CNI call") })
	}()
	t.Cleanup(func() { cancel(); must(t, <-done) })
	return d, ctx, cancel
}

// A query whose asker hangs up (braid-ipam's deadline passed, or it was killed) stops waiting: nobody is left
// for the answer. Before, it waited out its Wait (up to 2 minutes) with its goroutine, connection and watcher,
// one more for each query braid-ipam gave up on.
func TestPodAnnotationEndsWhenTheAskerHangsUp(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	createPod(t, ns, "asked", "node-h")
	api, _ := api(t)
	d, ctx, _ := runDaemon(t, api, "node-h")
	awaitServing(ctx, t, d, ns, "asked")
	askCtx, cancel := context.WithTimeout(ctx, time.Second) // the asker's deadline, far shorter than its Wait
	defer cancel()
	_, err := shim.AskPodAnnotation(askCtx, d.cfg.Socket, shim.AnnotationQuery{Namespace: ns, Name: "asked", Key: testKey, Wait: time.Minute})
	if err == nil {
		t.Fatal("the asker's deadline passed and it got an answer")
	}
	eventually(t, "the abandoned query no longer waiting", func() bool { return d.Cache.waiters.count() == 0 })
}

// awaitServing waits until d answers on its socket and has pod ns/name in its cache.
func awaitServing(ctx context.Context, t *testing.T, d *Daemon, ns, name string) {
	t.Helper()
	eventually(t, "socket up and pod cached", func() bool {
		_, ok, _ := d.Cache.Pods().GetByKey(ns + "/" + name)
		_, err := shim.AskPodAnnotation(ctx, d.cfg.Socket, shim.AnnotationQuery{Namespace: ns, Name: name, Key: testKey})
		return ok && err == nil
	})
}
