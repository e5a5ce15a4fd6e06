package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// The package's tests share one kube-apiserver (envtest); each makes its own namespace.
var suiteEnv *testenv.Env

func TestMain(m *testing.M) {
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtest:", err)
		os.Exit(1)
	}
	suiteEnv = env
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

// api is braid's client to the suite's API server, counting its requests.
func api(t *testing.T) (*kube.Client, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	cfg := rest.CopyConfig(suiteEnv.Config)
	cfg.Wrap(kube.CountingTransport(func() { n.Add(1) }))
	c, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, &n
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func createPod(t *testing.T, ns, name, node string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause:1"}}}}
	if err := suiteEnv.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// annotation reads the pod's network-status ("" when it has none).
func annotation(t *testing.T, ns, name string) (string, *corev1.Pod) {
	t.Helper()
	var p corev1.Pod
	if err := suiteEnv.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return p.Annotations[netstatus.Annotation], &p
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs q until the test ends.
func run(t *testing.T, q *StatusQueue, workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx, workers); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}
