package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// Patcher is the API call a StatusQueue makes.
type Patcher interface {
	SetPodAnnotation(ctx context.Context, namespace, name string, uid k8stypes.UID, key, value string) error
}

// patchTimeout bounds one write; a failed write is retried with backoff up to retryCap apart.
const (
	patchTimeout = 10 * time.Second
	retryBase    = 50 * time.Millisecond
	retryCap     = 30 * time.Second
)

// answerGrace is how long after the shim hung up (it printed the answer and exited) a call's write starts:
// time for the runtime to collect the exited shim and read its answer without the write (JSON, TLS, and on
// a node that also runs an API server, that server's work) taking the CPU from it. Nobody waits for
// network-status at that scale; on a 2-core node the runtime's ADD took about 0.5 ms longer without it.
const answerGrace = 10 * time.Millisecond

// StatusQueue writes network-status annotations in the background, so that an ADD returns as soon as its
// interfaces are up. A write is kept on disk (a line in the queue's journal, 0600) from the moment Write
// returns until the API server took it, so a restarted daemon finishes what the previous one accepted. Per
// pod only the latest write counts, writes to one pod never run concurrently, and a pod's writes carry its
// UID, so that a write never lands on a newer pod of the same name. A failed write is retried with backoff
// until it lands, the pod is gone, or the sandbox's DEL forgets it.
type StatusQueue struct {
	dir   string
	api   Patcher
	log   *slog.Logger
	queue workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	pending map[string]netstatus.Write
	// journal is open for appending once Reload made it, or the first Write found it; size is its length and
	// maxJournal the length past which the worker compacts it (journalLimit).
	journal    *os.File
	size       int64
	maxJournal int64
}

// NewStatusQueue returns a queue keeping its writes in dir. It does not read dir: a previous daemon may still
// be using it. Call Reload, once dir is this process's alone, to queue the writes that daemon left there, and
// Run to start writing.
func NewStatusQueue(dir string, api Patcher, log *slog.Logger) (*StatusQueue, error) {
	return newStatusQueue(dir, api, log, clock.RealClock{})
}

func newStatusQueue(dir string, api Patcher, log *slog.Logger, clk clock.WithTicker) (*StatusQueue, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("status queue dir: %w", err)
	}
	q := &StatusQueue{
		dir: dir, api: api, log: log, pending: map[string]netstatus.Write{}, maxJournal: journalLimit,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBase, retryCap),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "braid-network-status", Clock: clk}),
	}
	return q, nil
}

// Reload makes the queue what its directory holds: the journal, and the per-pod files the previous braid
// version kept instead. It rewrites the journal to the writes still to make, with those files folded in, and
// removes the files. A daemon reloads once it owns the directory (lockStateDir), after the previous daemon has
// written and landed what it could.
func (q *StatusQueue) Reload() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	pending, files, err := q.readPerPodFiles()
	if err != nil {
		return err
	}
	// The journal goes over the files: a daemon that died after folding them in, before removing them, may
	// have landed or replaced their writes since.
	if err := q.replayJournal(pending); err != nil {
		return err
	}
	if err := q.rewriteJournal(pending); err != nil {
		return fmt.Errorf("status queue journal: %w", err)
	}
	for _, name := range files {
		_ = os.Remove(filepath.Join(q.dir, name)) // the journal holds its write now
	}
	q.pending = pending
	for k := range pending {
		q.queue.Add(k)
	}
	return nil
}

// key names a pod's entry (and its file, in the previous version): its UID, or namespace_name for a pod the
// runtime gave no UID for. Neither a UID nor a DNS-1123 name holds '_' or '/'.
func key(w netstatus.Write) string {
	if w.UID != "" {
		return string(w.UID)
	}
	return w.Namespace + "_" + w.Name
}

// Write queues w, replacing an earlier write for the same pod that has not landed yet. It returns once w is
// on disk (appended to the open journal: an ADD's path makes no file); when ctx is a daemon call's, the write
// starts answerGrace after the call has been answered.
func (q *StatusQueue) Write(ctx context.Context, w netstatus.Write) error {
	k := key(w)
	l, err := putLine(k, w)
	if err != nil {
		return fmt.Errorf("queue network-status: %w", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.appendLine(l); err != nil {
		return fmt.Errorf("queue network-status: %w", err)
	}
	q.pending[k] = w
	if !shim.AfterReply(ctx, func() { q.queue.AddAfter(k, answerGrace) }) {
		q.queue.Add(k)
	}
	return nil
}

// Forget drops the queued write of the sandbox containerID, if it has not landed yet; a write of another
// sandbox of the pod stays. The container ID alone names the sandbox: the UID the runtime knows the pod by is
// not the API's for a static pod.
func (q *StatusQueue) Forget(containerID string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, w := range q.pending {
		if w.ContainerID == containerID {
			if err := q.drop(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// Pending is the number of writes that have not landed.
func (q *StatusQueue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Run writes with the given number of workers until ctx ends.
func (q *StatusQueue) Run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	q.queue.ShutDown()
	wg.Wait()
	// The journal's file goes with the workers; a Write after them (none in the daemon, which stops taking
	// calls first) opens it again.
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.journal != nil {
		_ = q.journal.Close()
		q.journal = nil
	}
}

func (q *StatusQueue) next(ctx context.Context) bool {
	k, quit := q.queue.Get()
	if quit {
		return false
	}
	defer q.queue.Done(k)
	q.mu.Lock()
	w, ok := q.pending[k]
	q.mu.Unlock()
	if !ok { // a DEL forgot it
		q.queue.Forget(k)
		q.mu.Lock()
		q.compactJournal()
		q.mu.Unlock()
		return true
	}
	pctx, cancel := context.WithTimeout(ctx, patchTimeout)
	err := q.api.SetPodAnnotation(pctx, w.Namespace, w.Name, w.UID, netstatus.Annotation, w.Value)
	cancel()
	switch {
	case err == nil:
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err), apierrors.IsConflict(err):
		// The pod is gone, or the name belongs to a newer pod (the UID in the patch does not match): this status
		// describes nothing that exists. (Invalid is also what a status the API server refuses gets; retrying
		// would not help it either.)
		q.log.Info("network-status dropped: the pod is gone or refused it", "pod", w.Namespace+"/"+w.Name, "uid", w.UID, "err", err)
	default:
		q.log.Warn("network-status write failed; will retry", "pod", w.Namespace+"/"+w.Name, "err", err)
		q.queue.AddRateLimited(k)
		return true
	}
	q.queue.Forget(k)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending[k] == w { // not replaced by a newer write meanwhile
		if err := q.drop(k); err != nil {
			q.log.Error("written network-status still queued on disk", "err", err)
		}
	}
	q.compactJournal()
	return true
}

// drop removes entry k, and appends its drop to the journal; q.mu is held.
func (q *StatusQueue) drop(k string) error {
	delete(q.pending, k)
	if err := q.appendLine(dropLine(k)); err != nil {
		return fmt.Errorf("queued network-status: %w", err)
	}
	return nil
}
