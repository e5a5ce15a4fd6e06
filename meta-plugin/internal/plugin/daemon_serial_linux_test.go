package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-cni/braid/crds/selection"
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
