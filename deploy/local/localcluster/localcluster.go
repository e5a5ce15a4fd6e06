// Package localcluster finds the local single-node cluster that deploy/local/cluster-up.sh runs, for the tests
// that use it (the e2e packages and the soak): it decides whether such a test may run here and where the
// cluster's tools and state are.
package localcluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/braid-cni/braid/crds/testenv"
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
