package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartBraidDaemon runs `braid daemon` (the binary at braid, built by Build) for node, as deploy/ runs it on
// every node, with its socket and state under dir, until the test ends; it returns once the daemon listens
// (its caches are full), with the socket's path. At the end it sends SIGTERM and fails the test unless the
// daemon exits cleanly within 30 s; its log is shown then.
func StartBraidDaemon(t testing.TB, braid, dir, node, kubeconfig string) string {
	t.Helper()
	socket := filepath.Join(dir, "run", "braid.sock")
	log := &OutputBuffer{}
	// Not the test's context: it ends before the cleanup below, which stops the daemon the way a kubelet does.
	cmd := exec.CommandContext(context.Background(), braid, "daemon", "-socket", socket, "-node", node, "-kubeconfig", kubeconfig,
		"-state-dir", filepath.Join(dir, "status-queue"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start braid daemon: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("braid daemon for %s: %v", node, err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("braid daemon for %s did not stop within 30s of SIGTERM", node)
		}
		t.Logf("braid daemon for %s, its log:\n%s", node, log.String())
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return socket
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: braid daemon for %s does not listen on %s after 60s; its log:\n%s", node, socket, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// OutputBuffer collects a running process's output, which its copying goroutines write while the test reads
// it.
type OutputBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *OutputBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *OutputBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
