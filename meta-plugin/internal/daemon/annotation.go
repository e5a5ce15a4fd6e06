package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/crds/shim"
)

// maxAnnotationWait bounds one query's wait; a caller that waits longer asks again.
const maxAnnotationWait = 2 * time.Minute

// notSeenWait is how long a query waits for a pod the cache has not seen before answering "not found", so
// that the caller asks the API server: a pod created a moment ago reaches the cache within milliseconds.
const notSeenWait = time.Second

// podWaiters wakes the queries waiting on a pod whenever the cache's copy of it changes.
type podWaiters struct {
	mu      sync.Mutex
	waiting map[string][]chan struct{} // namespace/name -> one channel per waiting query
}

func (w *podWaiters) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    w.changed,
		UpdateFunc: func(_, obj any) { w.changed(obj) },
		DeleteFunc: w.changed,
	}
}

func (w *podWaiters) changed(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	w.mu.Lock()
	chans := w.waiting[key]
	delete(w.waiting, key)
	w.mu.Unlock()
	for _, c := range chans {
		close(c)
	}
}

// next returns a channel closed at the pod's next change, and a function that stops waiting for it.
func (w *podWaiters) next(key string) (<-chan struct{}, func()) {
	c := make(chan struct{})
	w.mu.Lock()
	if w.waiting == nil {
		w.waiting = map[string][]chan struct{}{}
	}
	w.waiting[key] = append(w.waiting[key], c)
	w.mu.Unlock()
	return c, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.waiting[key] = slices.DeleteFunc(w.waiting[key], func(o chan struct{}) bool { return o == c })
		if len(w.waiting[key]) == 0 {
			delete(w.waiting, key)
		}
	}
}

// count is the number of queries waiting, for tests.
func (w *podWaiters) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, cs := range w.waiting {
		n += len(cs)
	}
	return n
}

// PodAnnotation answers an AnnotationQuery from the cache of the node's pods: at once when the annotation
// differs from q.After (or, for q.EndOnDeletion, the pod is being deleted), else at the pod's first change that
// makes it so, or when q.Wait is over (with the value as it is). A pod the cache has not seen is waited for
// notSeenWait at most.
func (c *Cache) PodAnnotation(ctx context.Context, q shim.AnnotationQuery) shim.AnnotationAnswer {
	key := q.Namespace + "/" + q.Name
	wait := min(q.Wait, maxAnnotationWait)
	start := time.Now()
	var found shim.AnnotationAnswer // the pod as this query last found it
	for {
		changed, stop := c.waiters.next(key) // before the read, so that no change is missed in between
		var ans shim.AnnotationAnswer
		if obj, ok, err := c.pods.GetStore().GetByKey(key); err == nil && ok {
			ans = answer(obj.(*corev1.Pod), q)
		}
		if found.Found && !ans.Found && q.EndOnDeletion {
			// The pod this query found has left the cache: it was deleted. Deleted outright (a grace period of
			// 0), it is marked deleting and removed at once, and the cache may have taken both before this read.
			stop()
			found.Deleting = true
			return found
		}
		if ans.Found {
			found = ans
		}
		limit := wait
		if !ans.Found {
			limit = min(wait, notSeenWait)
		}
		left := limit - time.Since(start)
		if news(ans, q) || left <= 0 {
			stop()
			return ans
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			stop()
			return ans
		}
		timer.Stop()
		stop() // a no-op once the change closed it
	}
}

// answer is what the cached pod tells q: nothing (not found) when it is another incarnation. A static pod's
// mirror answers for the static pod's UID, which is the one braid-ipam has from the runtime.
func answer(pod *corev1.Pod, q shim.AnnotationQuery) shim.AnnotationAnswer {
	if !podid.Is(string(pod.UID), pod.Annotations, q.UID) {
		return shim.AnnotationAnswer{}
	}
	return shim.AnnotationAnswer{Found: true, UID: string(pod.UID), Value: pod.Annotations[q.Key], Deleting: pod.DeletionTimestamp != nil}
}

// news reports whether ans ends q's wait: the value changed, or the pod is being deleted and q asked to hear
// of it (braid-ipam-server will then never write the value q waits for).
func news(ans shim.AnnotationAnswer, q shim.AnnotationQuery) bool {
	return ans.Found && (ans.Value != q.After || (q.EndOnDeletion && ans.Deleting))
}

// answerPodAnnotation is the daemon's handler for shim.CommandPodAnnotation.
func (c *Cache) answerPodAnnotation(ctx context.Context, stdin []byte) ([]byte, error) {
	var q shim.AnnotationQuery
	if err := json.Unmarshal(stdin, &q); err != nil {
		return nil, fmt.Errorf("braid daemon: %s: undecodable query: %w", shim.CommandPodAnnotation, err)
	}
	if q.Namespace == "" || q.Name == "" || q.Key == "" {
		return nil, fmt.Errorf("braid daemon: %s: a query needs namespace, name and key", shim.CommandPodAnnotation)
	}
	return json.Marshal(c.PodAnnotation(ctx, q))
}
