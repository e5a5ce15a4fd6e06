package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoAPIClient keeps braid-ipam lean: it starts for every CNI call, and an API client's packages
// (HTTP, TLS, kubeconfig YAML, apimachinery) cost it about half its start-up CPU. They belong in
// braid-ipam-api.
func TestLinksNoAPIClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"net/http", "crypto/tls", "crypto/x509", "sigs.k8s.io/yaml", "go.yaml.in/", "k8s.io/",
			"github.com/braid-cni/braid/ipam-server/internal/apiread", "github.com/braid-cni/braid/ipam-server/internal/podnet"} {
			if pkg == banned || strings.HasPrefix(pkg, banned) && (strings.HasSuffix(banned, "/") || pkg[len(banned)] == '/') {
				t.Errorf("braid-ipam links %s (%s): keep it in braid-ipam-api", pkg, banned)
			}
		}
	}
}
