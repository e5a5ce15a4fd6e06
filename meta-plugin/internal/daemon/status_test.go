package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
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

// A write accepted by one daemon is on disk (0600) and made by the next one, after a restart; once it landed,
// a daemon started after that finds nothing left to write.
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
	if fi, err := os.Stat(journalPath(dir)); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("the journal has mode %v, want 0600", fi.Mode().Perm())
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
	if n := reloaded(t, dir).Pending(); n != 0 {
		t.Errorf("a daemon started after the write landed has %d writes to make, want 0", n)
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
	must(t, q.Forget("old-sandbox"))
	if q.Pending() != 1 {
		t.Fatal("forgetting the old sandbox dropped the new sandbox's write")
	}
	must(t, q.Write(ctx, write(b, "b-sandbox", `[{"name":"b","default":true}]`)))
	must(t, q.Forget("b-sandbox"))
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

// A queue directory the previous braid version left (one file per pod, named by its key) is taken over: its
// writes are kept, its broken files dropped, and the files go, so that the next start finds the writes in the
// journal alone.
func TestStatusQueueTakesOverPerPodFiles(t *testing.T) {
	dir := t.TempDir()
	kept := queued("a", "sa", `"a"`)
	writeJSON(t, filepath.Join(dir, "uid-a"), kept)
	writeJSON(t, filepath.Join(dir, "uid-b"), queued("c", "sc", `"named for another pod"`))
	must(t, os.WriteFile(filepath.Join(dir, "uid-d"), []byte("{not json"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, ".uid-e.123"), []byte("half"), 0o600))
	q := reloaded(t, dir)
	if want := map[string]netstatus.Write{"uid-a": kept}; !maps.Equal(q.pending, want) {
		t.Errorf("queued after taking over the per-pod files: %v, want %v", q.pending, want)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{filepath.Base(journalPath(dir))}) {
		t.Errorf("the queue dir holds %v, want the journal alone", names)
	}
	if q2 := reloaded(t, dir); !maps.Equal(q2.pending, q.pending) {
		t.Errorf("the next start queues %v, want %v", q2.pending, q.pending)
	}
}

// A daemon that folded the per-pod files into the journal and died before it removed them may have landed or
// replaced their writes since: the journal's lines count over the files.
func TestStatusQueueJournalGoesOverPerPodFiles(t *testing.T) {
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, "uid-a"), queued("a", "sa", `"landed"`))
	writeJSON(t, filepath.Join(dir, "uid-b"), queued("b", "sb", `"replaced"`))
	newer := queued("b", "sb2", `"newer"`)
	must(t, os.WriteFile(journalPath(dir), journal(dropLine("uid-a"), put(t, newer)), 0o600))
	want := map[string]netstatus.Write{"uid-b": newer}
	if q := reloaded(t, dir); !maps.Equal(q.pending, want) {
		t.Errorf("queued %v, want %v", q.pending, want)
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
	must(t, q1.Forget("s2"))
	must(t, q1.Forget("s-old"))
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

// A write on the ADD path creates no file (a new inode costs up to a quarter millisecond): it is appended to
// the journal, which Reload made. Nor does a DEL's Forget.
func TestStatusQueueWriteCreatesNoFile(t *testing.T) {
	dir := t.TempDir()
	q := reloaded(t, dir)
	before := dirNames(t, dir)
	must(t, q.Write(t.Context(), queued("a", "sa", `"a"`)))
	must(t, q.Write(t.Context(), queued("b", "sb", `"b"`)))
	must(t, q.Forget("sa"))
	if after := dirNames(t, dir); !slices.Equal(after, before) {
		t.Errorf("the queue dir held %v before the writes, %v after", before, after)
	}
}

// Writes that land keep the journal short: past its limit, with nothing queued, it is emptied.
func TestStatusQueueJournalStaysBounded(t *testing.T) {
	dir := t.TempDir()
	q, err := NewStatusQueue(dir, patcherFunc(func(context.Context, string, string, k8stypes.UID, string, string) error {
		return nil
	}), testLog(t))
	must(t, err)
	q.maxJournal = 4 << 10
	must(t, q.Reload())
	run(t, q, 1)
	var longest int64
	for i := range 100 { // some 30 KiB of journal lines
		must(t, q.Write(t.Context(), queued(fmt.Sprint("p", i%7), fmt.Sprint("s", i), `"lands"`)))
		eventually(t, "the write landed", func() bool { return q.Pending() == 0 })
		longest = max(longest, fileSize(t, journalPath(dir)))
	}
	if longest > q.maxJournal+1<<10 {
		t.Errorf("the journal grew to %d bytes, limit %d", longest, q.maxJournal)
	}
	if n := reloaded(t, dir).Pending(); n != 0 {
		t.Errorf("after the compactions, a restart finds %d writes to make, want 0", n)
	}
}

// Past its limit with a write still queued (its pod's API requests fail), the journal is rewritten to the
// queued write: it stays short, and a restart still finds the write.
func TestStatusQueueJournalRewriteKeepsQueuedWrites(t *testing.T) {
	dir := t.TempDir()
	stuck := queued("stuck", "s", `"does not land yet"`)
	q, err := NewStatusQueue(dir, patcherFunc(func(_ context.Context, _, name string, _ k8stypes.UID, _, _ string) error {
		if name == stuck.Name {
			return apierrors.NewServiceUnavailable("not now")
		}
		return nil
	}), testLog(t))
	must(t, err)
	q.maxJournal = 4 << 10
	must(t, q.Reload())
	must(t, q.Write(t.Context(), stuck))
	run(t, q, 1)
	var longest int64
	for i := range 100 {
		must(t, q.Write(t.Context(), queued("p", fmt.Sprint("s", i), `"lands"`)))
		eventually(t, "the write landed", func() bool { return q.Pending() == 1 })
		longest = max(longest, fileSize(t, journalPath(dir)))
	}
	if longest > q.maxJournal+1<<10 {
		t.Errorf("the journal grew to %d bytes, limit %d", longest, q.maxJournal)
	}
	want := map[string]netstatus.Write{"uid-stuck": stuck}
	if q2 := reloaded(t, dir); !maps.Equal(q2.pending, want) {
		t.Errorf("after the rewrites, a restart queues %v, want %v", q2.pending, want)
	}
}

// A daemon that died in the middle of an append left a torn line; a write appended after it, by a daemon
// that has not reloaded (made while the other still held the directory), is not lost with the torn line.
func TestStatusQueueWriteAfterATornJournal(t *testing.T) {
	dir := t.TempDir()
	a, b := queued("a", "sa", `"a"`), queued("b", "sb", `"b"`)
	torn := put(t, b)
	must(t, os.WriteFile(journalPath(dir), journal(put(t, a), torn[:len(torn)/2]), 0o600))
	q, err := NewStatusQueue(dir, nil, testLog(t))
	must(t, err)
	must(t, q.Write(t.Context(), b))
	want := map[string]netstatus.Write{"uid-a": a, "uid-b": b}
	if q2 := reloaded(t, dir); !maps.Equal(q2.pending, want) {
		t.Errorf("a restart queues %v, want %v", q2.pending, want)
	}
}

// Leftovers, which the end-to-end test checks, lists the writes still queued and any stray file, not the
// journal itself.
func TestLeftoversAreTheWritesStillQueued(t *testing.T) {
	dir := t.TempDir()
	q := reloaded(t, dir)
	must(t, q.Write(t.Context(), queued("a", "sa", `"a"`)))
	must(t, q.Write(t.Context(), queued("b", "sb", `"b"`)))
	must(t, q.Forget("sa"))
	must(t, os.WriteFile(filepath.Join(dir, ".journal.123"), nil, 0o600))
	got, err := Leftovers(dir)
	must(t, err)
	if slices.Sort(got); !slices.Equal(got, []string{".journal.123", "uid-b"}) {
		t.Errorf("leftovers %v, want .journal.123 and uid-b", got)
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

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	return fi.Size()
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	must(t, err)
	must(t, os.WriteFile(path, data, 0o600))
}

type patcherFunc func(ctx context.Context, ns, name string, uid k8stypes.UID, key, value string) error

func (f patcherFunc) SetPodAnnotation(ctx context.Context, ns, name string, uid k8stypes.UID, key, value string) error {
	return f(ctx, ns, name, uid, key, value)
}

// BenchmarkStatusQueueWrite is what queueing a status costs an ADD, with its DEL's Forget, and the worker's
// compaction that keeps the journal short (it runs once per write).
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
		if err := q.Forget(w.ContainerID); err != nil {
			b.Fatal(err)
		}
		q.mu.Lock()
		q.compactJournal()
		q.mu.Unlock()
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

// journalPath is where the queue in dir keeps its writes.
func journalPath(dir string) string { return filepath.Join(dir, journalFile) }
