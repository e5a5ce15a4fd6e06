package daemon

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/braid-cni/braid/meta-plugin/internal/kube"
)

// The daemon's pod cache and braid's pod reads travel in protobuf, as the kubelet's do: the API server encodes
// each of the node's pod events once for them at a fraction of JSON's cost.
func TestPodsTravelInProtobuf(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	createPod(t, ns, "wire", "node-wire")

	var mu sync.Mutex
	types := map[string]string{} // request path -> response Content-Type
	cfg := rest.CopyConfig(suiteEnv.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && strings.Contains(r.URL.Path, "/pods") {
				mu.Lock()
				types[r.Method+" "+r.URL.Path+"?watch="+r.URL.Query().Get("watch")] = resp.Header.Get("Content-Type")
				mu.Unlock()
			}
			return resp, err
		})
	})
	c, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPod(t.Context(), ns, "wire", true); err != nil {
		t.Fatal(err)
	}
	lw := c.PodsOnNode("node-wire")
	list, err := lw.ListWithContext(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv, err := meta.NewAccessor().ResourceVersion(list)
	if err != nil {
		t.Fatal(err)
	}
	w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	w.Stop()

	mu.Lock()
	defer mu.Unlock()
	if len(types) != 3 {
		t.Fatalf("want a pod read, a list and a watch; saw %v", types)
	}
	for req, ct := range types {
		if !strings.HasPrefix(ct, "application/vnd.kubernetes.protobuf") {
			t.Errorf("%s answered in %q, want protobuf", req, ct)
		}
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
