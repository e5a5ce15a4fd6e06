// Package crds_test proves that `make verify` catches generated files that went stale.
package crds_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-cni/braid/crds/testenv"
)

// TestVerifyCatchesStaleGeneratedFiles clones the committed tree, changes an API type without regenerating,
// and expects `make verify` to fail and say why; the untouched clone must pass.
func TestVerifyCatchesStaleGeneratedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen on a clone of the repo")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "braid")
	run(t, root, "git", "clone", "--quiet", root, clone)
	// Share the tool cache so the clone does not rebuild controller-gen.
	cache := filepath.Join(root, ".cache")

	if out, err := makeVerify(clone, cache); err != nil {
		t.Fatalf("make verify fails on an untouched clone of HEAD: %v\n%s", err, out)
	}

	types := filepath.Join(clone, "crds", "v1alpha1", "floatingip_types.go")
	src, err := os.ReadFile(types)
	if err != nil {
		t.Fatal(err)
	}
	stale := strings.Replace(string(src), "\tNode string `json:\"node,omitempty\"`",
		"\tNode string `json:\"node,omitempty\"`\n\n\t// Rack is a field added without regenerating.\n\t// +optional\n\tRack string `json:\"rack,omitempty\"`", 1)
	if stale == string(src) {
		t.Fatal("test could not find the Node field to extend; update the test")
	}
	if err := os.WriteFile(types, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, clone, "git", "commit", "--quiet", "-am", "add a field without regenerating")

	out, err := makeVerify(clone, cache)
	if err == nil {
		t.Fatalf("make verify passed with a stale CRD; output:\n%s", out)
	}
	if !strings.Contains(out, "generated files are stale") || !strings.Contains(out, "braid.dev_floatingips.yaml") {
		t.Fatalf("make verify failed without naming the stale file:\n%s", out)
	}
}

func makeVerify(dir, cache string) (string, error) {
	cmd := exec.Command("make", "--no-print-directory", "verify")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BRAID_CACHE="+cache)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
