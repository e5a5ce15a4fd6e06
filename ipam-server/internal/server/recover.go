package server

import (
	"context"
	"fmt"
	"runtime/debug"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// Event filters and map functions run on the informers' goroutines, where a panic (a bug one object ran
// into) ends the server, and with it IPAM for every pod, again at each restart while the object exists.
// controller-runtime recovers panics in Reconcile only. These wrappers recover them here too: a filter lets
// the event pass, so that the object's reconcile (where a panic is recovered and retried with backoff)
// reports it; a map function enqueues nothing for that event, and the periodic resync tries again.
// The FloatingIP informer's own handler (state.informerHandler) is not wrapped: the allocator must see every
// held address, and a server that missed one would hand it out twice.

func passOnPanic[E any](what string, f func(E) bool) func(E) bool {
	return func(e E) (pass bool) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(what, r)
				pass = true
			}
		}()
		return f(e)
	}
}

func noRequestsOnPanic(what string, f handler.MapFunc) handler.MapFunc {
	return func(ctx context.Context, o client.Object) (reqs []reconcile.Request) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(what, r)
				reqs = nil
			}
		}()
		return f(ctx, o)
	}
}

func logPanic(what string, r any) {
	ctrl.Log.WithName("braid-ipam-server").Error(fmt.Errorf("panic: %v", r), "recovered in "+what, "stack", string(debug.Stack()))
}
