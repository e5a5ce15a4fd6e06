package bench

import (
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// The per-process CPU the benchmark prints comes from /proc/<pid>/stat: this process's own line parses to its
// name and parent, and a child that burned CPU shows up in takeCPU under its name while it runs, and in this
// process's reaped children's time once waited for.
func TestTakeCPU(t *testing.T) {
	self, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self.ppid != os.Getppid() || self.comm == "" {
		t.Fatalf("own stat: %+v, want ppid %d and a name", self, os.Getppid())
	}
	before := takeCPU()
	busy := exec.Command("sh", "-c", "while :; do :; done")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(func() { _ = busy.Process.Kill(); _ = busy.Wait() })
	t.Cleanup(stop) // also when the test fails before it stops the shell
	deadline := time.Now().Add(10 * time.Second)
	for takeCPU()["sh"] < 100*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("a busy child shell not seen in takeCPU: %v", takeCPU())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	after := takeCPU()
	if d := after["plugin-execs"] - before["plugin-execs"]; d < 100*time.Millisecond {
		t.Errorf("reaped children's CPU grew by %v, want the shell's", d)
	}
	if got := perPod(before, after, 1); got == "" {
		t.Error("perPod printed nothing")
	}
}
