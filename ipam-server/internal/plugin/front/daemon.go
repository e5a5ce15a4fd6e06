package front

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// ErrNotYet is the reason given when the server has recorded nothing for the interface.
var ErrNotYet = errors.New("braid-ipam-server has not assigned an address yet (is it running?)")

// AskDaemon asks braid's node daemon, when it listens on socket, for the pod's assignment, until the
// interface is assigned, the pod is being deleted, or ctx ends. answered is false when the daemon cannot
// answer (not running, an older daemon, or the pod not in its cache; a missing socket fails the dial at once):
// the caller then reads the API server. A daemon older than AnnotationAnswer.Deleting leaves a pod being
// deleted to the deadline, as before.
func AskDaemon(ctx context.Context, socket string, pod PodArgs, ifName string) (iface assignment.Interface, answered bool, err error) {
	reason := ErrNotYet.Error()
	after := ""
	for {
		deadline, _ := ctx.Deadline()
		ans, err := shim.AskPodAnnotation(ctx, socket, shim.AnnotationQuery{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Key: assignment.Annotation, After: after, Wait: time.Until(deadline), EndOnDeletion: true})
		switch {
		case ctx.Err() != nil:
			return assignment.Interface{}, true, NoAddress(pod, ifName, reason)
		case err != nil || !ans.Found:
			return assignment.Interface{}, false, nil //nolint:nilerr // the API server answers instead
		}
		var annotations map[string]string
		if ans.Value != "" {
			annotations = map[string]string{assignment.Annotation: ans.Value}
		}
		// The daemon answered for pod.UID (the mirror of a static pod answers for the static pod's), so the
		// UID left to check is the assignment's, against the answering pod's.
		if iface, done := Assigned(ans.UID, annotations, "", ifName, &reason); done {
			return iface, true, nil
		}
		if ans.Deleting { // the daemon answers only for the pod of pod.UID, when it is known
			return assignment.Interface{}, true, PodBeingDeleted(pod)
		}
		if time.Until(deadline) <= 0 {
			return assignment.Interface{}, true, NoAddress(pod, ifName, reason)
		}
		after = ans.Value
	}
}

// Assigned reports whether the pod object of UID uid with these annotations, when it is the pod of CNI_ARGS'
// UID wantUID ("" for any), has addresses for the interface; otherwise it updates reason with what the server
// recorded.
func Assigned(uid string, annotations map[string]string, wantUID, ifName string, reason *string) (assignment.Interface, bool) {
	if !podid.Is(uid, annotations, wantUID) {
		*reason = fmt.Sprintf("pod has UID %s, not %s (recreated?)", uid, wantUID)
		return assignment.Interface{}, false
	}
	value, ok := annotations[assignment.Annotation]
	if !ok {
		return assignment.Interface{}, false
	}
	a, err := assignment.Parse(value)
	if err != nil {
		*reason = err.Error()
		return assignment.Interface{}, false
	}
	iface, ok := a.Interfaces[ifName]
	switch {
	case a.PodUID != uid:
		return assignment.Interface{}, false
	case !ok:
		*reason = fmt.Sprintf("braid-ipam-server assigned the pod's interfaces [%s] but not %s (check the interface names in "+
			"the pod's %s, and that the network's NAD exists)", strings.Join(slices.Sorted(maps.Keys(a.Interfaces)), " "), ifName, selection.NetworksAnnotation)
		return assignment.Interface{}, false
	case iface.Error != "":
		*reason = iface.Error
		return assignment.Interface{}, false
	}
	return iface, len(iface.Addresses) > 0
}

// NoAddress is ADD's answer when the deadline passed: try again later, with what the server recorded.
func NoAddress(pod PodArgs, ifName, reason string) error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("braid-ipam: no address for pod %s/%s interface %s: %s", pod.Namespace, pod.Name, ifName, reason), "")
}

// PodBeingDeleted is ADD's answer for a pod being deleted before it had an address: code 11, as for a pod
// already gone, since the runtime gives up the sandbox of a terminating pod anyway.
func PodBeingDeleted(pod PodArgs) error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("braid-ipam: pod %s/%s is being deleted; braid-ipam-server assigns no address to it", pod.Namespace, pod.Name), "")
}
