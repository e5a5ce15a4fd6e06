// Package localcluster finds the local single-node cluster that deploy/local/cluster-up.sh runs, for the tests
// that use it (the e2e packages and the soak): it decides whether such a test may run here, where the
// cluster's tools and state are, and gives them its scripts' output in the test log and an admin client.
package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// Paths are where the repo, its caches and the cluster's state are (deploy/local/env.sh names the same).
type Paths struct {
	Repo   string
	Cache  string // BRAID_CACHE, default <repo>/.cache
	Bin    string // Kubernetes, etcd, crictl, kubectl
	CNIBin string // the CNI reference plugins
	State  string // the running cluster: PKI, kubeconfigs, logs, containerd's and the kubelet's dirs
}

// AdminKubeconfig is the cluster admin's kubeconfig.
func (p Paths) AdminKubeconfig() string { return filepath.Join(p.State, "admin.kubeconfig") }

// StaticPods is the kubelet's staticPodPath: a manifest written there runs as a static pod of the node.
func (p Paths) StaticPods() string { return filepath.Join(p.State, "static-pods") }

// CrictlConfig is crictl's config pointing at the cluster's containerd.
func (p Paths) CrictlConfig() string { return filepath.Join(p.State, "crictl.yaml") }

// Script is the path of a script in deploy/local (cluster-up.sh, demo.sh, ...).
func (p Paths) Script(name string) string { return filepath.Join(p.Repo, "deploy", "local", name) }

// Require skips t unless the environment variable enable is "1" and the test runs as root (the cluster runs
// containerd and a kubelet and the tests enter network namespaces); what says what the test does and how to
// run it, for the skip message.
func Require(t testing.TB, enable, what string) Paths {
	t.Helper()
	if os.Getenv(enable) != "1" {
		t.Skipf("%s: set %s=1 (as root, under /tmp/braid-cluster.lock) to run it on the local cluster", what, enable)
	}
	if os.Geteuid() != 0 {
		t.Skipf("%s needs root: it runs the local cluster (containerd, kubelet) and enters network namespaces", what)
	}
	repo, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("BRAID_CACHE")
	if cache == "" {
		cache = filepath.Join(repo, ".cache")
	}
	return Paths{Repo: repo, Cache: cache, Bin: filepath.Join(cache, "bin"), CNIBin: filepath.Join(cache, "cni-bin"),
		State: filepath.Join(cache, "cluster")}
}

// Run runs a command in the repo with its output, line by line, in the test log under label.
func (p Paths) Run(ctx context.Context, t testing.TB, label, name string, args ...string) error {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = p.Repo
	cmd.WaitDelay = 10 * time.Second
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			t.Log(label + ": " + sc.Text())
		}
	}()
	start := time.Now()
	err := cmd.Run()
	_ = w.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s %s failed after %s: %w", label, strings.Join(args, " "), time.Since(start).Round(time.Second), err)
	}
	return nil
}

// Client is a cluster-admin client that knows Kubernetes' types and braid's; tune, if not nil, adjusts the
// config first (timeouts, rate limits).
func (p Paths) Client(t testing.TB, tune func(*rest.Config)) (client.Client, *rest.Config) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", p.AdminKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(cfg)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := braidv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, cfg
}

// PodNetNS asks the runtime (crictl inspectp) for the network namespace file of the pod's one ready sandbox.
func (p Paths) PodNetNS(ctx context.Context, namespace, name string) (string, error) {
	crictl := filepath.Join(p.Bin, "crictl")
	ids, err := exec.CommandContext(ctx, crictl, "--config", p.CrictlConfig(), "pods", "-q", "--state", "ready",
		"--namespace", namespace, "--name", name).Output()
	if err != nil {
		return "", fmt.Errorf("crictl pods: %w", err)
	}
	fields := strings.Fields(string(ids))
	if len(fields) != 1 {
		return "", fmt.Errorf("crictl pods: want one ready sandbox for %s/%s, got %q", namespace, name, fields)
	}
	raw, err := exec.CommandContext(ctx, crictl, "--config", p.CrictlConfig(), "inspectp", fields[0]).Output()
	if err != nil {
		return "", fmt.Errorf("crictl inspectp %s: %w", fields[0], err)
	}
	var info struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string } `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return "", fmt.Errorf("crictl inspectp %s: %w", fields[0], err)
	}
	for _, ns := range info.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			return ns.Path, nil
		}
	}
	return "", fmt.Errorf("crictl inspectp %s: no network namespace path in the runtime spec", fields[0])
}
