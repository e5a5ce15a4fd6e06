// Package testenv is braid's envtest harness: it starts a real kube-apiserver and etcd (controller-runtime's
// envtest) from the binaries that deploy/local/build-tools.sh caches in .cache/bin, installs the CRD YAML from
// crds/ exactly as braid ships it, and hands tests a client. Tests of every component use it.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

const modulePath = "github.com/braid-cni/braid"

// Env is a running kube-apiserver + etcd with braid's CRDs installed.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Client is a client with core types and braid's types registered.
	Client client.Client
	// Scheme is the private scheme Client uses.
	Scheme *runtime.Scheme

	env      *envtest.Environment
	adminDir string // holds the static token file of TokenConfig's user
}

// adminToken is the bearer token of a cluster admin the API server accepts from its static token file.
const adminToken = "braid-testenv-admin-token"

// New starts the API server and installs every CRD under crds/. Call Stop when done.
func New() (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, ".cache", "bin")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("testenv: %s not found in %s: run `make deps` first: %w", bin, assets, err)
		}
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("testenv: core scheme: %w", err)
	}
	if err := braidv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("testenv: braid scheme: %w", err)
	}

	// A static bearer token, besides envtest's client certificates, so that clients can authenticate the way
	// braid's components do in a cluster (ServiceAccount tokens; see TokenConfig).
	adminDir, err := os.MkdirTemp("", "braid-testenv-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	tokens := filepath.Join(adminDir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+`,braid-testenv-admin,braid-testenv-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("testenv: %w", err), os.RemoveAll(adminDir))
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "crds")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	env.ControlPlane.GetAPIServer().Configure().Append("token-auth-file", tokens)
	cfg, err := env.Start()
	if err != nil {
		// Start can fail after launching etcd and the API server (a CRD the API server refuses): stop them.
		return nil, errors.Join(fmt.Errorf("testenv: start kube-apiserver and etcd: %w", err), env.Stop(), os.RemoveAll(adminDir))
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("testenv: client: %w", err), env.Stop(), os.RemoveAll(adminDir))
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, env: env, adminDir: adminDir}, nil
}

// Stop stops the API server and etcd.
func (e *Env) Stop() error {
	return errors.Join(e.env.Stop(), os.RemoveAll(e.adminDir))
}

// TokenConfig reaches the API server as a cluster admin that authenticates with a bearer token, as braid's
// components do in a cluster with their ServiceAccount tokens. The API server caches a token's
// authentication; a client certificate (Config) costs it a signature check on every request, which matters to
// benchmarks.
func (e *Env) TokenConfig() *rest.Config {
	cfg := rest.AnonymousClientConfig(e.Config)
	cfg.BearerToken = adminToken
	return cfg
}

// WriteTokenKubeconfig writes a kubeconfig for TokenConfig's user to path.
func (e *Env) WriteTokenKubeconfig(path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["testenv"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: adminToken}
	kc.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "admin"}
	kc.CurrentContext = "testenv"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("testenv: token kubeconfig: %w", err)
	}
	return os.Chmod(path, 0o600)
}

// Start starts an Env for one test and stops it when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("testenv: stop: %v", err)
		}
	})
	return e
}

// WriteKubeconfig writes a kubeconfig for a user of the given groups (e.g. "system:masters", or a node's
// "system:nodes") to path, for binaries under test that read a kubeconfig file as they do in production.
func (e *Env) WriteKubeconfig(path, user string, groups ...string) error {
	u, err := e.env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return fmt.Errorf("testenv: add user %s: %w", user, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return fmt.Errorf("testenv: kubeconfig for %s: %w", user, err)
	}
	return os.WriteFile(path, kc, 0o600)
}

// Namespace creates a namespace with a unique name for one test.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.GenerateName = "test-"
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("testenv: create namespace: %v", err)
	}
	return ns.Name
}

// RepoRoot finds the braid checkout by walking up from the working directory to braid's go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testenv: working directory: %w", err)
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(mod), "module "+modulePath+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}
