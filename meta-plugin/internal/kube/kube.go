// Package kube is braid's thin adapter to the API server: it reads a pod and NetworkAttachmentDefinitions,
// writes the network-status annotation through the pods/status subresource, and records Events.
//
// It talks REST with a scheme holding only core/v1 and k8s.cni.cncf.io/v1 instead of using the generated
// clientsets: braid runs as a fresh process for every CNI call, and registering every API group of client-go
// at start-up would cost more than the few requests it makes. It does no discovery, so each method is
// exactly one HTTP request.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// UserAgent identifies braid's requests in the API server's audit log.
const UserAgent = "braid-cni"

// Client reaches the API server. It is safe for concurrent use.
type Client struct {
	core *rest.RESTClient
	nad  *rest.RESTClient
	// Host is reported as the Event source.
	host string
	now  func() time.Time
}

// FromKubeconfig builds a Client from a kubeconfig file; every request is bounded by timeout.
func FromKubeconfig(path string, timeout time.Duration) (*Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg.Timeout = timeout
	return New(cfg)
}

// New builds a Client from a rest.Config. The config is copied, not changed.
func New(cfg *rest.Config) (*Client, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("kube scheme: %w", err)
	}
	if err := nadv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("kube scheme: %w", err)
	}
	codecs := serializer.NewCodecFactory(scheme).WithoutConversion()

	base := rest.CopyConfig(cfg)
	base.UserAgent = UserAgent
	// A CNI call makes a handful of requests at once; client-go's default limit (5/s, burst 10) would make a
	// pod with many networks wait, and the server's priority and fairness protects it anyway.
	base.QPS, base.Burst = 100, 200
	base.NegotiatedSerializer = codecs
	base.ContentType = runtime.ContentTypeJSON
	// One HTTP client for both API groups, so both share one connection (and one TLS handshake).
	httpClient, err := rest.HTTPClientFor(base)
	if err != nil {
		return nil, fmt.Errorf("kube http client: %w", err)
	}
	coreCfg := rest.CopyConfig(base)
	coreCfg.GroupVersion = &corev1.SchemeGroupVersion
	coreCfg.APIPath = "/api"
	// Pods and Events in protobuf, as the kubelet and the controllers read them: the API server encodes a pod
	// (and every watch event of the daemon's pod cache) at a fraction of the CPU and garbage of JSON, and so
	// does braid decode it. NADs are custom resources, which the API server serves in JSON only.
	coreCfg.ContentType = runtime.ContentTypeProtobuf
	coreCfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	core, err := rest.RESTClientForConfigAndClient(coreCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kube core client: %w", err)
	}
	nadCfg := rest.CopyConfig(base)
	nadCfg.GroupVersion = &nadv1.SchemeGroupVersion
	nadCfg.APIPath = "/apis"
	nad, err := rest.RESTClientForConfigAndClient(nadCfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kube NAD client: %w", err)
	}
	host, _ := os.Hostname() // only decorates Events
	return &Client{core: core, nad: nad, host: host, now: time.Now}, nil
}

// rv is the resourceVersion of a read: "0" lets the API server answer from its watch cache, which is much
// cheaper than a quorum read from etcd but may lag by a few milliseconds; "" is a quorum read.
func rv(fresh bool) string {
	if fresh {
		return ""
	}
	return "0"
}

// GetPod reads one pod; fresh asks for a quorum read instead of the API server's cache.
func (c *Client) GetPod(ctx context.Context, namespace, name string, fresh bool) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := c.core.Get().Namespace(namespace).Resource("pods").Name(name).Param("resourceVersion", rv(fresh)).Do(ctx).Into(&pod)
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return &pod, nil
}

// GetNAD reads one NetworkAttachmentDefinition; fresh asks for a quorum read instead of the API server's cache.
func (c *Client) GetNAD(ctx context.Context, namespace, name string, fresh bool) (*nadv1.NetworkAttachmentDefinition, error) {
	var nad nadv1.NetworkAttachmentDefinition
	err := c.nad.Get().Namespace(namespace).Resource("network-attachment-definitions").Name(name).
		Param("resourceVersion", rv(fresh)).Do(ctx).Into(&nad)
	if err != nil {
		return nil, fmt.Errorf("get network-attachment-definition %s/%s: %w", namespace, name, err)
	}
	return &nad, nil
}

// SetPodAnnotation sets one annotation through the pods/status subresource, which is what a node's
// credentials may write (and what the NPWG network-status is meant to go through). A merge patch needs no
// read-modify-write, so a concurrent change of other annotations is never lost.
// With uid set, the patch carries it, and the API server refuses the patch when the pod of that name is another
// incarnation (its UID cannot change).
func (c *Client) SetPodAnnotation(ctx context.Context, namespace, name string, uid types.UID, key, value string) error {
	meta := map[string]any{"annotations": map[string]string{key: value}}
	if uid != "" {
		meta["uid"] = uid
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return fmt.Errorf("annotation patch: %w", err)
	}
	err = c.core.Patch(types.MergePatchType).Namespace(namespace).Resource("pods").Name(name).SubResource("status").
		Body(patch).Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("set annotation %s on pod %s/%s: %w", key, namespace, name, err)
	}
	return nil
}

// RecordEvent records an Event about the pod, where `kubectl describe pod` shows it.
func (c *Client) RecordEvent(ctx context.Context, pod *corev1.Pod, eventType, reason, message string) error {
	now := metav1.NewTime(c.now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason: reason, Message: message, Type: eventType, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "braid", Host: c.host},
	}
	if err := c.core.Post().Namespace(pod.Namespace).Resource("events").Body(ev).Do(ctx).Error(); err != nil {
		return fmt.Errorf("record event on pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// CountingTransport wraps a rest.Config's transport to count requests; tests and the benchmark use it to hold
// braid to its API-call budget.
func CountingTransport(count func()) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			count()
			return rt.RoundTrip(r)
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// PodsOnNode lists and watches the pods bound to node, for the node daemon's cache.
func (c *Client) PodsOnNode(node string) *cache.ListWatch {
	return cache.NewListWatchFromClient(c.core, "pods", metav1.NamespaceAll, fields.OneTermEqualSelector("spec.nodeName", node))
}

// NADs lists and watches every NetworkAttachmentDefinition, for the node daemon's cache.
func (c *Client) NADs() *cache.ListWatch {
	return cache.NewListWatchFromClient(c.nad, "network-attachment-definitions", metav1.NamespaceAll, fields.Everything())
}
