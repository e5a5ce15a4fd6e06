// Package device finds the device the kubelet allocated to a pod for a NAD's k8s.v1.cni.cncf.io/resourceName
// (kubelet PodResources API) and hands its device-info file (Device Information Specification 1.1) to the
// delegate. Assign is the pure part; Client and Files do the I/O.
package device

import (
	"errors"
	"fmt"
	"slices"
)

// ResourceAnnotation on a NAD names the device-plugin resource that backs the network.
const ResourceAnnotation = "k8s.v1.cni.cncf.io/resourceName"

// ErrNoDevice means the kubelet gave the pod fewer devices of a resource than its networks need.
var ErrNoDevice = errors.New("no device allocated for the network's resource")

// Request is one attachment that needs a device of Resource. Fixed is a device ID the pod asked for itself
// (the annotation's deviceID); it is taken out of the pool so no other attachment gets it.
type Request struct {
	Network  string
	Resource string
	Fixed    string
}

// Assign gives each request a distinct device of its resource, in order, from what the kubelet allocated
// (resource name to device IDs). Requests with an empty Resource get "" (or their Fixed ID).
func Assign(reqs []Request, allocated map[string][]string) ([]string, error) {
	used := map[string]bool{}
	for _, r := range reqs {
		if r.Fixed != "" {
			used[r.Fixed] = true
		}
	}
	out := make([]string, len(reqs))
	for i, r := range reqs {
		if r.Fixed != "" || r.Resource == "" {
			out[i] = r.Fixed
			continue
		}
		ids := allocated[r.Resource]
		j := slices.IndexFunc(ids, func(id string) bool { return !used[id] })
		if j < 0 {
			return nil, fmt.Errorf("network %s: resource %q: the kubelet allocated %d device(s) %v to the pod, all taken "+
				"(does the pod request one %s per network?): %w", r.Network, r.Resource, len(ids), ids, r.Resource, ErrNoDevice)
		}
		used[ids[j]] = true
		out[i] = ids[j]
	}
	return out, nil
}
