package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/daemon"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
	"github.com/braid-cni/braid/meta-plugin/internal/plugin"
)

// runDaemon is `braid daemon`: braid's node daemon, which serves braid-shim (see internal/daemon).
func runDaemon(args []string) int {
	fs := flag.NewFlagSet("braid daemon", flag.ContinueOnError)
	var (
		cfg        daemon.Config
		kubeconfig string
		root       string
		debug      bool
	)
	fs.StringVar(&cfg.Socket, "socket", shim.DefaultSocket, "unix socket braid-shim calls (the conf's daemonSocket)")
	fs.StringVar(&cfg.Node, "node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/cni/braid/status-queue", "where queued network-status writes survive a restart")
	fs.StringVar(&kubeconfig, "kubeconfig", "/etc/cni/net.d/braid.d/braid.kubeconfig", "kubeconfig (the one braid install writes)")
	fs.StringVar(&root, "chroot", "", "the host's root as mounted in the container: the daemon works in it, so that every path (confs, CNI bin dir, netns, caches) is the host's and delegates run as if the runtime had run them")
	fs.BoolVar(&debug, "debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := stderrLogger(debug).With("component", "braid-daemon")
	cfg.Log = log
	if err := daemonMain(cfg, kubeconfig, root); err != nil {
		log.Error("braid daemon", "err", err)
		return 1
	}
	return 0
}

func daemonMain(cfg daemon.Config, kubeconfig, root string) error {
	if root != "" {
		if err := syscall.Chroot(root); err != nil {
			return fmt.Errorf("-chroot %s: %w", root, err)
		}
		if err := os.Chdir("/"); err != nil {
			return fmt.Errorf("-chroot %s: %w", root, err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// braid install, beside the daemon in the same pod, writes the kubeconfig; wait for it.
	err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(context.Context) (bool, error) {
		_, err := os.Stat(kubeconfig)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("-kubeconfig %s: not there after 5m (is braid install running?): %w", kubeconfig, err)
	}
	api, err := kube.FromKubeconfig(kubeconfig, apiTimeout)
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, api)
	if err != nil {
		return err
	}
	p := plugin.New(plugin.Deps{
		Kube:   func(string) (plugin.Kube, error) { return d.Cache, nil },
		Status: d.Status,
	})
	err = d.Run(ctx, p.Handle)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
