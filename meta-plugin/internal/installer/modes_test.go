package installer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestModes: with umask 0 (so only what the code sets counts), braid's conf, its credentials directory, the
// token and the kubeconfig are root's alone, binaries are executable by all; and looser modes left by an older
// braid or by hand are tightened again without a content change.
func TestModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	root := t.TempDir()
	src := filepath.Join(root, "image", "braid")
	write(t, src, "#!/bin/sh\n")
	sa := filepath.Join(root, "sa")
	write(t, filepath.Join(sa, "token"), "token-1")
	confDir := filepath.Join(root, "net.d")
	write(t, filepath.Join(confDir, "10-cbr0.conflist"), masterConf)
	binDir := filepath.Join(root, "bin")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Binaries: []string{src}, BinDir: binDir, ConfDir: confDir, APIServer: "https://192.0.2.10:6443",
			TokenFile: filepath.Join(sa, "token"), Resync: time.Hour})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	want := map[string]os.FileMode{
		filepath.Join(confDir, "00-braid.conflist"):           0o600,
		filepath.Join(confDir, "braid.d"):                     0o700,
		filepath.Join(confDir, "braid.d", "token"):            0o600,
		filepath.Join(confDir, "braid.d", "braid.kubeconfig"): 0o600,
		filepath.Join(binDir, "braid"):                        0o755,
	}
	modes := func() (bool, string) {
		for p, m := range want {
			fi, err := os.Stat(p)
			if err != nil {
				return false, err.Error()
			}
			if fi.Mode().Perm() != m {
				return false, fmt.Sprintf("%s has mode %o, want %o", p, fi.Mode().Perm(), m)
			}
		}
		return true, ""
	}
	waitFor(t, modes)

	// An older braid wrote 0644 and 0755: the next sync (the chmod of the conf is itself an event) fixes them.
	// The conf goes last, so that the sync it starts comes after every other change (a map's random order let
	// the sync run first, and a later chmod waited for the hourly resync).
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{"braid.d", 0o755}, {"braid.d/token", 0o644}, {"braid.d/braid.kubeconfig", 0o644}, {"00-braid.conflist", 0o644}} {
		if err := os.Chmod(filepath.Join(confDir, c.path), c.mode); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, modes)
}

func waitFor(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
