package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StartBraidDaemon runs `braid daemon` (the binary at braid, built by Build) for node, as deploy/ runs it on
// every node, with its socket and state under dir, until the test ends; it returns once the daemon listens
// (its caches are full), with the socket's path.
func StartBraidDaemon(t testing.TB, braid, dir, node, kubeconfig string) string {
	t.Helper()
	socket := filepath.Join(dir, "run", "braid.sock")
	cmd := exec.CommandContext(context.Background(), braid, "daemon", "-socket", socket, "-node", node, "-kubeconfig", kubeconfig,
		"-state-dir", filepath.Join(dir, "status-queue"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start braid daemon: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return socket
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: braid daemon for %s does not listen on %s after 60s", node, socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
