// Command braid-sriov-dp is braid's SR-IOV kubelet device plugin: it finds the node's SR-IOV virtual functions
// (and plain NICs) by PCI enumeration, groups them into the resources of a resourceList config (the SR-IOV
// network device plugin's format), registers each resource with the kubelet and hands functions to pods.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
	"github.com/braid-cni/braid/sriov-device/internal/hostevent"
	"github.com/braid-cni/braid/sriov-device/internal/plugin"
)

func main() {
	os.Exit(run())
}

// run parses the flags, wires the dependencies and serves until SIGINT or SIGTERM; it returns the exit code.
func run() int {
	var (
		opts       plugin.Options
		hostEvents bool
		logLevel   string
	)
	flag.StringVar(&opts.ConfigFile, "config", "/etc/pcidp/config.json", "resourceList config file (SR-IOV network device plugin format); reloaded when it changes")
	flag.StringVar(&opts.Root, "root", "/", "directory the host's /sys, /dev and /proc are read under (a fake PCI tree in tests)")
	flag.StringVar(&opts.PluginDir, "plugin-dir", pluginapi.DevicePluginPath, "kubelet device-plugin directory (holds kubelet.sock)")
	flag.StringVar(&opts.DevInfoDir, "devinfo-dir", devinfo.DefaultDir, "directory for device-info files (NPWG device-info spec 1.1.0)")
	flag.StringVar(&opts.ResourcePrefix, "resource-prefix", config.DefaultPrefix, "prefix of resources whose config names none")
	flag.DurationVar(&opts.Resync, "resync", plugin.DefaultResync, "rescan period without kernel events (0 disables)")
	flag.BoolVar(&hostEvents, "host-events", true, "rescan on netlink link and device notifications")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "braid-sriov-dp: --log-level: %v\n", err)
		return 2
	}
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if hostEvents {
		l, err := hostevent.Listen()
		if err != nil {
			opts.Logger.Warn("kernel notifications unavailable: relying on the resync period", "err", err)
		} else {
			defer func() { _ = l.Close() }()
			opts.HostEvents = l.Events()
		}
	}

	if err := plugin.Run(ctx, opts); err != nil {
		opts.Logger.Error("braid-sriov-dp failed", "err", err)
		return 1
	}
	return 0
}
