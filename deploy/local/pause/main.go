// Command pause is the sandbox ("infra") process of braid's local test cluster, standing in for
// registry.k8s.io/pause, which cannot be pulled on an offline machine. deploy/local/images.sh builds it
// statically into the sandbox image and into localhost/braid:dev (as /usr/bin/pause) so that a test pod
// can run a long-lived container without any other binary.
//
// Like the upstream pause it holds the pod's namespaces open: it sleeps until SIGINT or SIGTERM, then
// exits 0. Because it runs as PID 1 of the pod's PID namespace it also reaps every child that gets
// re-parented to it (SIGCHLD), so exited processes never linger as zombies.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (braid local cluster)")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking. Signals coalesce, so one SIGCHLD may stand for
// several exits: loop until no zombie is left.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
