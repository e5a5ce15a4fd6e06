package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// CommandPodAnnotation asks the daemon for an annotation of a pod on its node, from its watch cache: the
// Request's Stdin is an AnnotationQuery, the Response's Result an AnnotationAnswer. braid-ipam asks it for
// the addresses braid-ipam-server recorded, instead of reading and watching the API server on every call.
const CommandPodAnnotation = "POD-ANNOTATION"

// AnnotationQuery names the pod and the annotation, and how long to wait for a change.
type AnnotationQuery struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID, when set, is the pod's incarnation: a pod of the same name and another UID does not count.
	UID string `json:"uid,omitempty"`
	Key string `json:"key"`
	// After makes the daemon answer once the annotation's value differs from it, or when Wait is over.
	After string        `json:"after"`
	Wait  time.Duration `json:"wait"`
	// EndOnDeletion makes a pod being deleted end the wait too: braid-ipam-server never serves such a pod, so
	// its annotation may never change. A daemon that predates it ignores it and answers as before; an older
	// braid-ipam leaves it unset, because it would only ask again at once, in a loop, until its deadline.
	EndOnDeletion bool `json:"endOnDeletion,omitempty"`
}

// AnnotationAnswer is the annotation's value; Found is false when the daemon's cache has not seen the pod
// (of that UID) within the wait: the caller then asks the API server.
type AnnotationAnswer struct {
	Found bool   `json:"found"`
	UID   string `json:"uid,omitempty"`
	Value string `json:"value"`
	// Deleting is true when the pod has a deletionTimestamp. A daemon that predates it never sets it, so
	// false means "not being deleted, or not known".
	Deleting bool `json:"deleting,omitempty"`
}

// AskPodAnnotation sends q to the daemon at socket. An error means the daemon could not answer (not
// running, too old to know the command): the caller asks the API server instead.
func AskPodAnnotation(ctx context.Context, socket string, q AnnotationQuery) (AnnotationAnswer, error) {
	stdin, err := json.Marshal(q)
	if err != nil {
		return AnnotationAnswer{}, err
	}
	out, hangUp, err := Call(ctx, socket, Request{Command: CommandPodAnnotation, Stdin: stdin})
	if err != nil {
		return AnnotationAnswer{}, err
	}
	hangUp()
	var a AnnotationAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		return AnnotationAnswer{}, fmt.Errorf("braid daemon: undecodable answer to %s: %w", CommandPodAnnotation, err)
	}
	return a, nil
}
