// Package podid tells whether a pod of the API is the pod a container runtime names in a CNI call
// (CNI_ARGS' K8S_POD_UID). The two UIDs differ for a static pod: the kubelet gives it a UID of its own, the hash
// of its manifest, and the API server gives the pod's mirror another; the kubelet keeps the static pod's UID on
// the mirror in the kubernetes.io/config.mirror annotation.
package podid

// MirrorAnnotation holds, on the mirror of a static pod, the UID the kubelet and the runtime know the pod by.
const MirrorAnnotation = "kubernetes.io/config.mirror"

// Is reports whether the API pod of uid and annotations is the pod the runtime calls runtimeUID: its own UID,
// or, for the mirror of a static pod, the static pod's. An empty runtimeUID (a runtime that sends none)
// matches any pod.
func Is(uid string, annotations map[string]string, runtimeUID string) bool {
	if runtimeUID == "" || uid == runtimeUID {
		return true
	}
	mirrorOf, mirror := annotations[MirrorAnnotation]
	return mirror && mirrorOf == runtimeUID
}
