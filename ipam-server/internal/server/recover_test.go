package server

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// A panic in an event filter lets the event pass (the object's reconcile, where panics are recovered, then
// reports it); a filter that does not panic keeps its answer.
func TestAPanickingFilterPassesTheEvent(t *testing.T) {
	panics := passOnPanic("test filter", func(event.UpdateEvent) bool { panic("one pod's bug") })
	if !panics(event.UpdateEvent{}) {
		t.Fatal("a filter that panicked dropped the event")
	}
	if passOnPanic("test filter", func(event.UpdateEvent) bool { return false })(event.UpdateEvent{}) {
		t.Fatal("a filter that did not panic lost its answer")
	}
}

// A panic in a map function enqueues nothing for that event and does not reach the informer's goroutine.
func TestAPanickingMapFunctionEnqueuesNothing(t *testing.T) {
	var nilMap map[string]int
	f := noRequestsOnPanic("test map", func(context.Context, client.Object) []reconcile.Request {
		nilMap["x"] = 1 // a real runtime panic, not only a panic call
		return []reconcile.Request{{}}
	})
	if reqs := f(t.Context(), &corev1.Pod{}); reqs != nil {
		t.Fatalf("requests %v, want none", reqs)
	}
}
