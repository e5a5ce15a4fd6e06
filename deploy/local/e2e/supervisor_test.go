package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testSupervisor proves the restart loop cluster-up.sh runs kubelet, kube-scheduler and
// kube-controller-manager under: a component that dies is started again, and one whose loop is killed
// outright keeps running only until cluster-down, which ends what is left of the loop's process group
// (checked by the test's final "nothing left" step).
func testSupervisor(t *testing.T, p paths) {
	loop := pidFile(t, filepath.Join(p.State, "kubelet.pid"))
	first := childOf(t, loop)
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatalf("kill kubelet %d: %v", first, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c := childOf(t, loop); c != 0 && c != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubelet (pid %d, killed) was not started again by its supervisor %d within 15s", first, loop)
		}
		time.Sleep(200 * time.Millisecond)
	}
	log, err := os.ReadFile(filepath.Join(p.State, "logs", "kubelet.log"))
	if err != nil || !strings.Contains(string(log), "==> supervisor: kubelet exited with status 137") {
		t.Errorf("kubelet's log does not record the restart (err %v)", err)
	}

	scheduler := pidFile(t, filepath.Join(p.State, "kube-scheduler.pid"))
	orphan := childOf(t, scheduler)
	if orphan == 0 {
		t.Fatalf("kube-scheduler's supervisor %d has no child", scheduler)
	}
	if err := syscall.Kill(scheduler, syscall.SIGKILL); err != nil {
		t.Fatalf("kill kube-scheduler's supervisor %d: %v", scheduler, err)
	}
	t.Logf("kube-scheduler %d left without its supervisor %d: cluster-down must stop it", orphan, scheduler)
}

// pidFile reads a PID file of cluster-up.sh.
func pidFile(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// childOf returns a running child of pid (the supervised component), or 0.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state, ppid, ...
		if len(fields) < 2 || fields[0] == "Z" || fields[1] != strconv.Itoa(pid) {
			continue
		}
		if c, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			return c
		}
	}
	return 0
}
