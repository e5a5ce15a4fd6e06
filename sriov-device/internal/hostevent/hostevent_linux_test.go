package hostevent

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLinkChangesWake runs in a network namespace of its own (root only): a listener opened there wakes when a
// veth pair is created and when one end goes up, as the plugin wakes on a host when a VF's or PF's link
// changes.
func TestLinkChangesWake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	// This goroutine's thread enters a new network namespace and never leaves it: the thread is discarded
	// when the test goroutine ends without unlocking it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	l, err := Listen() // sockets belong to the namespace of the thread that opens them
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	drain := func() {
		for {
			select {
			case <-l.Events():
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	run := func(args ...string) {
		t.Helper()
		// A child forked from this thread starts in its namespace.
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-l.Events():
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up after %s", what)
		}
	}

	drain()
	run("link", "add", "vf0", "type", "veth", "peer", "name", "vf0p")
	wait("creating a veth pair")
	drain()
	run("link", "set", "vf0", "up")
	wait("setting a link up")
	drain()
	run("link", "del", "vf0")
	wait("deleting a link")

	// Nothing happening: no wake-up.
	drain()
	select {
	case <-l.Events():
		t.Error("woke up without a change")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestCloseStopsTheReaders(t *testing.T) {
	l, err := Listen()
	if err != nil {
		t.Skipf("netlink unavailable: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: a reader is stuck")
	}
}
