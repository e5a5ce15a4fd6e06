package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/crds/shim"
)

// In the daemon, calls of one container do not overlap: a DEL the runtime sends while the container's ADD
// is still running (its delegate slow, the runtime's patience gone) starts only after the ADD and its
// rollback ended, so that no attachment is deleted by two calls at once. Another container's calls are not
// held up meanwhile.
func TestDaemonSerializesCallsOfOneContainer(t *testing.T) {
	r := newDaemonRig(t, "1.0.0")
	r.standardNADs()
	slow := r.pod("slow", map[string]string{selection.NetworksAnnotation: "net-a"})
	other := r.pod("other", map[string]string{selection.NetworksAnnotation: "net-a"})
	waitCached(t, r, slow)
	waitCached(t, r, other)

	var mu sync.Mutex
	var seen []string // "call/delegate command/ifName" of each delegate run for the slow container
	held, release := make(chan struct{}), make(chan struct{})
	holdOnce := sync.OnceFunc(func() { close(held) })
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the daemon stops: a failed test does not wait out the held call
	r.exec.setHook(func(ctx context.Context, environ []string) error {
		env := map[string]string{}
		for _, kv := range environ {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		if env["CNI_CONTAINERID"] != slow.containerID {
			return nil
		}
		call, _ := ctx.Value(daemonCallKey{}).(string)
		mu.Lock()
		seen = append(seen, call+"/"+env["CNI_COMMAND"]+"/"+env["CNI_IFNAME"])
		mu.Unlock()
		if call == "ADD" && env["CNI_COMMAND"] == "ADD" && env["CNI_IFNAME"] == "net1" {
			holdOnce()
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("slow delegate gave up")
		}
		return nil
	})
	t.Cleanup(func() { r.exec.setHook(nil) })

	addDone, delDone := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := r.add(slow)
		addDone <- err
	}()
	select {
	case <-held:
	case err := <-addDone:
		t.Fatalf("ADD ended before its slow delegate was held: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the slow delegate was not reached after 30s")
	}
	go func() { delDone <- r.del(slow) }()

	// Another container's calls go through while the slow container's ADD is held.
	if _, err := r.add(other); err != nil {
		t.Fatalf("ADD of another container while one ADD is held: %v", err)
	}
	if err := r.del(other); err != nil {
		t.Fatalf("DEL of another container while one ADD is held: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-delDone:
		t.Fatalf("DEL of the container returned while its ADD was still running: %v", err)
	default:
	}
	mu.Lock()
	during := fmt.Sprint(seen)
	mu.Unlock()
	if strings.Contains(during, "DEL/") {
		t.Fatalf("DEL ran delegates while the container's ADD was still running: %s", during)
	}

	releaseOnce()
	if err := <-addDone; err == nil || !strings.Contains(err.Error(), "slow delegate gave up") {
		t.Fatalf("ADD = %v, want the slow delegate's failure", err)
	}
	if err := <-delDone; err != nil {
		t.Fatalf("DEL after the ADD: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	lastOfAdd, firstOfDel, rollback := -1, len(seen), 0
	for i, s := range seen {
		switch {
		case strings.HasPrefix(s, "ADD/"):
			lastOfAdd = i
			if strings.HasPrefix(s, "ADD/DEL/") {
				rollback++
			}
		case strings.HasPrefix(s, "DEL/") && i < firstOfDel:
			firstOfDel = i
		}
	}
	if rollback == 0 || firstOfDel == len(seen) || lastOfAdd > firstOfDel {
		t.Errorf("delegate runs %v: want the ADD's, its rollback (ADD/DEL/...) included, all before the DEL's", seen)
	}
	r.assertGone(slow)
}

// A delegate that hangs, and whose process leaves a child behind holding its stdout (a shell script's
// sleep, say), is killed with that child when the call ends (its caller gone, or out of time): the call
// answers, and the container's DEL, which waits for it, runs. Before, the killed delegate's child kept the
// pipe open, the call never ended, its goroutines and pipes stayed for good, and every later call of the
// container failed with "another call of the container is still running", so its pod was never torn down.
func TestDaemonEndsAHungDelegateWithItsChildren(t *testing.T) {
	r := newDaemonRig(t, "1.0.0")
	r.standardNADs()
	bin := t.TempDir()
	pidFile := filepath.Join(bin, "sleep.pid")
	r.writeFile(filepath.Join(bin, "hang"), fmt.Sprintf(`#!/bin/sh
if [ "$CNI_COMMAND" = ADD ]; then
	sleep 300 &
	echo $! > %s
	wait
fi
`, pidFile))
	if err := os.Chmod(filepath.Join(bin, "hang"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.nad("hang-net", `{"cniVersion":"1.0.0","type":"hang"}`, nil)
	stuck := r.pod("stuck", map[string]string{selection.NetworksAnnotation: "hang-net"})
	other := r.pod("other", map[string]string{selection.NetworksAnnotation: "net-a"})
	waitCached(t, r, stuck)
	waitCached(t, r, other)
	args := r.args(stuck)
	args.Path = bin + ":" + args.Path

	// The runtime gives up on the ADD after 20s, the delegate hanging (braid-shim's own bound is 110s).
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	addDone := make(chan error, 1)
	go func() {
		_, _, err := shim.Call(ctx, r.socket, shim.Request{Command: "ADD", ContainerID: args.ContainerID,
			Netns: args.Netns, IfName: args.IfName, Args: args.Args, Path: args.Path, Stdin: args.StdinData})
		addDone <- err
	}()
	var sleepPID int
	if !eventuallyWithin(30*time.Second, func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		sleepPID, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}) {
		t.Fatal("the hanging delegate did not start within 30s")
	}
	// Other pods' calls go through meanwhile.
	if _, err := r.add(other); err != nil {
		t.Fatalf("ADD of another pod while one delegate hangs: %v", err)
	}
	if err := r.del(other); err != nil {
		t.Fatalf("DEL of another pod while one delegate hangs: %v", err)
	}
	if err := <-addDone; err == nil {
		t.Fatal("the abandoned ADD answered")
	}

	delDone := make(chan error, 1)
	go func() {
		_, err := r.call("DEL", args)
		delDone <- err
	}()
	select {
	case err := <-delDone:
		if err != nil {
			t.Fatalf("DEL after the abandoned ADD: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("DEL of the container still waiting 60s after its ADD was abandoned: the hung delegate's call never ended")
	}
	if !eventuallyWithin(10*time.Second, func() bool { return !running(sleepPID) }) {
		t.Errorf("the hung delegate's child (pid %d) still runs after its call ended", sleepPID)
	}
}

// eventuallyWithin polls cond until it holds or d has passed.
func eventuallyWithin(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// running: process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(after, "Z")
}
