// Command braid-ipam-server is braid's central Floating-IP IPAM service: it hands out addresses from IPPools
// to pods that ask for braid-ipam networks, one FloatingIP per held address. Run two replicas; one leads.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/braid-cni/braid/ipam-server/internal/server"
)

func main() {
	var opts server.Options
	flag.BoolVar(&opts.LeaderElection, "leader-elect", true, "elect a leader so that several replicas are safe")
	flag.StringVar(&opts.LeaderElectionID, "leader-election-id", "braid-ipam-server", "name of the leader-election Lease")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the Lease (default: the pod's namespace)")
	flag.DurationVar(&opts.LeaseDuration, "lease-duration", 0, "leader lease duration (default 15s)")
	flag.DurationVar(&opts.RenewDeadline, "renew-deadline", 0, "leader renew deadline (default 10s)")
	flag.DurationVar(&opts.RetryPeriod, "retry-period", 0, "leader-election retry period (default 2s)")
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", "address of /metrics; 0 disables")
	flag.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz; 0 disables")
	flag.DurationVar(&opts.Resync, "resync", 10*time.Minute,
		"re-reconcile every pod, FloatingIP and pool this often, a safety net for missed events (0: controller-runtime's default, 10h)")
	flag.IntVar(&opts.Workers, "workers", 8, "concurrent pod reconciles")
	flag.DurationVar(&opts.MirrorGrace, "mirror-grace", server.DefaultMirrorGrace,
		"how long a static pod's addresses wait for the kubelet's new mirror after its mirror is deleted, before their release")
	flag.Func("default-networks", "braid's defaultNetworks as namespace/name, comma-separated: the same list as the braid conf on the nodes",
		func(v string) error { opts.Defaults.Networks = splitList(v); return nil })
	opts.Defaults.SystemNamespaces = []string{"kube-system"}
	flag.Func("system-namespaces", "namespaces whose pods get no default networks, comma-separated (default kube-system; as braid's conf)",
		func(v string) error { opts.Defaults.SystemNamespaces = splitList(v); return nil })
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if (opts.LeaseDuration > 0) != (opts.RenewDeadline > 0) || (opts.LeaseDuration > 0) != (opts.RetryPeriod > 0) {
		fmt.Fprintln(os.Stderr, "braid-ipam-server: set --lease-duration, --renew-deadline and --retry-period together")
		os.Exit(2)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "braid-ipam-server: kubeconfig: %v\n", err)
		os.Exit(1)
	}
	mgr, err := server.New(cfg, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "braid-ipam-server: %v\n", err)
		os.Exit(1)
	}
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintf(os.Stderr, "braid-ipam-server: %v\n", err)
		os.Exit(1)
	}
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
