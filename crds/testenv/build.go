package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles the repo's packages (paths from the repo root, e.g. "./meta-plugin/cmd/braid") into dir as
// `make build` compiles them for the image: static (CGO_ENABLED=0), -trimpath and stripped, so that tests and
// benchmarks run the binaries that ship (a dynamic, unstripped CNI binary starts about 1 ms slower).
func Build(ctx context.Context, dir string, pkgs ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: go build %v: %w\n%s", pkgs, err, out)
	}
	return nil
}
