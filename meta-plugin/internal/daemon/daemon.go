// Package daemon is braid's node daemon (`braid daemon`, in braid's DaemonSet pod). The container runtime runs
// braid-shim, which hands each CNI call to the daemon over a unix socket (crds/shim); the daemon runs the
// meta-plugin with two things a fresh process cannot have: watch caches of the node's pods and of the NADs
// (Cache), so a call reads nothing from the API server, and a queue that writes network-status after the ADD
// has returned (StatusQueue). Calls run concurrently, one per sandbox, as the runtime makes them. braid-ipam
// asks the same socket for its pod's address assignment (shim.CommandPodAnnotation, answered from Cache).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
)

// Config is what the daemon needs to start.
type Config struct {
	// Socket is where braid-shim calls (the conf's daemonSocket).
	Socket string
	// Node is this node's name: the daemon caches the pods bound to it.
	Node string
	// StateDir keeps queued network-status writes across restarts.
	StateDir string
	// SyncTimeout bounds the wait for the first full list of pods and NADs.
	SyncTimeout time.Duration
	// StatusWorkers write network-status annotations concurrently (each pod's writes stay in order).
	StatusWorkers int
	// DrainTimeout is how long a stopping daemon keeps writing queued statuses.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// Daemon is the running daemon's state; the caller builds the meta-plugin on Cache and Status.
type Daemon struct {
	cfg    Config
	Cache  *Cache
	Status *StatusQueue
}

// New prepares the daemon: the caches (empty until Run) and the status queue with what a previous daemon left.
func New(cfg Config, api *kube.Client) (*Daemon, error) {
	if cfg.Node == "" {
		return nil, errors.New("node name: empty (set -node or NODE_NAME)")
	}
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 2 * time.Minute
	}
	if cfg.StatusWorkers == 0 {
		cfg.StatusWorkers = 4
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	q, err := NewStatusQueue(cfg.StateDir, api, cfg.Log)
	if err != nil {
		return nil, err
	}
	return &Daemon{cfg: cfg, Cache: NewCache(api, cfg.Node), Status: q}, nil
}

// Run fills the caches, then serves calls with h until ctx ends. It listens only once the caches are full, so
// a shim that comes earlier gets "try again later". On the way out it stops taking calls, lets the calls in
// progress finish, and gives queued status writes DrainTimeout to land (the rest stay on disk).
func (d *Daemon) Run(ctx context.Context, h shim.Handler) error {
	unlock, err := lockStateDir(ctx, d.cfg.StateDir, d.cfg.Log)
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.Status.Reload(); err != nil {
		return err
	}
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	go d.Cache.Run(cacheCtx)
	if err := d.Cache.WaitForSync(ctx, d.cfg.SyncTimeout); err != nil {
		return err
	}
	statusCtx, stopStatus := context.WithCancel(context.WithoutCancel(ctx))
	statusDone := make(chan struct{})
	go func() {
		d.Status.Run(statusCtx, d.cfg.StatusWorkers)
		close(statusDone)
	}()
	l, err := shim.Listen(ctx, d.cfg.Socket)
	if err != nil {
		stopStatus()
		<-statusDone
		return err
	}
	served := make(chan error, 1)
	go func() {
		served <- shim.Serve(ctx, l, func(call context.Context, req shim.Request) ([]byte, error) {
			if req.Command == shim.CommandPodAnnotation {
				// Answered when the daemon stops (a CNI call in progress is finished instead): the asker
				// then reads the API server. An asker that hung up is not waited for.
				q, cancel := context.WithCancel(call)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				return d.Cache.answerPodAnnotation(q, req.Stdin)
			}
			return h(call, req)
		})
	}()
	d.cfg.Log.Info("serving CNI calls", "socket", d.cfg.Socket, "node", d.cfg.Node)

	var serveErr error
	select {
	case <-ctx.Done():
		_ = l.Close()
		serveErr = <-served
	case serveErr = <-served:
		_ = l.Close()
	}
	deadline := time.Now().Add(d.cfg.DrainTimeout)
	for d.Status.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stopStatus()
	<-statusDone
	if n := d.Status.Pending(); n > 0 {
		d.cfg.Log.Warn("network-status writes left queued on disk for the next daemon", "count", n)
	}
	if serveErr != nil {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return nil
}
