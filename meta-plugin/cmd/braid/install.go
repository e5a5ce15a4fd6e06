package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/braid-cni/braid/meta-plugin/internal/installer"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// stderrLogger is the log of `braid install` and `braid daemon`: text on stderr (the container's log), info
// and above, or debug too.
func stderrLogger(debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// install is `braid install`, the node DaemonSet's entry point.
func install(args []string) int {
	fs := flag.NewFlagSet("braid install", flag.ContinueOnError)
	var (
		c          installer.Config
		binaries   string
		extra      string
		debug      bool
		defaultAPI string
		socket     string
	)
	if h, p := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"); h != "" && p != "" {
		defaultAPI = "https://" + net.JoinHostPort(h, p)
	}
	fs.StringVar(&binaries, "binaries", "/usr/src/braid/bin/braid", "comma-separated binaries to copy into -bin-dir")
	fs.StringVar(&c.BinDir, "bin-dir", "/host/opt/cni/bin", "the host's CNI bin dir, as mounted")
	fs.StringVar(&c.ConfDir, "conf-dir", "/host/etc/cni/net.d", "the runtime's CNI conf dir, as mounted")
	fs.StringVar(&c.HostConfDir, "host-conf-dir", "/etc/cni/net.d", "the same conf dir as the host sees it")
	fs.StringVar(&c.ConfName, "conf-name", "00-braid.conflist", "braid's conf file name: a .conflist that sorts before the cluster network's conf")
	fs.StringVar(&c.MasterConf, "master-conf", "", "the cluster network's conf file in -conf-dir (default: the first that is not braid's)")
	fs.StringVar(&extra, "braid-conf", "{}", "JSON object of further keys for braid's conf (cniDir, logFile, namespaceIsolation, ...)")
	fs.StringVar(&c.APIServer, "api-server", defaultAPI, "API server URL for braid's kubeconfig (empty: no kubeconfig)")
	fs.StringVar(&c.CAFile, "ca-file", saDir+"/ca.crt", "CA of the API server")
	fs.StringVar(&c.TokenFile, "token-file", saDir+"/token", "ServiceAccount token, re-copied to the host when it rotates")
	fs.StringVar(&socket, "daemon-socket", "", "braid's node daemon listens here (braid daemon -socket): the conf becomes braid-shim's, which forwards every call to it")
	fs.BoolVar(&c.CleanupOnExit, "cleanup-on-exit", false, "remove braid's conf when the installer stops")
	fs.DurationVar(&c.Resync, "resync", 30*time.Second, "re-read token and confs this often even without file events")
	fs.BoolVar(&debug, "debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if binaries != "" {
		c.Binaries = strings.Split(binaries, ",")
	}
	if err := json.Unmarshal([]byte(extra), &c.Extra); err != nil {
		fmt.Fprintf(os.Stderr, "braid install: -braid-conf: %v\n", err)
		return 2
	}
	if socket != "" {
		if c.Extra == nil {
			c.Extra = map[string]any{}
		}
		c.Extra["daemonSocket"] = socket
	}
	c.Log = stderrLogger(debug)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := installer.Run(ctx, c); err != nil {
		c.Log.Error("install", "err", err)
		return 1
	}
	return 0
}
