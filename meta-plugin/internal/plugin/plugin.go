// Package plugin is braid's CNI meta-plugin: ADD, DEL, CHECK, STATUS and GC of the CNI 1.1 spec, delegating
// every attachment of a pod through libcni (with its result cache), in order and never in parallel, as the
// NPWG multi-network spec v1.3 asks. The API server, the kubelet and the plugin executor are injected, so the
// core runs in tests against envtest and a fake kubelet, with the real reference plugins as delegates.
//
// Error codes returned to the runtime:
//
//	7    braid's own configuration is invalid
//	11   try again later: the pod is not (yet) visible with the runtime's UID, the readiness indicator file or
//	     the cluster network's conf is missing, or the API server failed
//	50   (STATUS) braid cannot serve: readiness file or cluster network missing
//	100  the pod's k8s.v1.cni.cncf.io/networks (or default-network) annotation is invalid; the message names the field
//	101  a selected network cannot be used: NAD missing, forbidden by namespace isolation, or its config invalid
//	102  an attachment asks for ips/mac/bandwidth/portMappings/infiniband-guid and no plugin declares it
//	103  the kubelet allocated no device of the NAD's resourceName to the pod
//	999  internal error
//
// A delegate's own CNI error keeps its code (so a delegate's 11 still means "try again later"), with braid's
// context (network and interface) in the message.
package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
	"github.com/braid-cni/braid/meta-plugin/internal/device"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
	"github.com/braid-cni/braid/meta-plugin/internal/route"
)

// Error codes of braid (see the package comment).
const (
	CodeSelection  uint = 100
	CodeNetwork    uint = 101
	CodeCapability uint = 102
	CodeDevice     uint = 103
)

// Deadlines of one CNI call; kubelet gives up on a sandbox after 2 minutes (runtime-request-timeout).
const (
	callTimeout     = 100 * time.Second
	rollbackTimeout = 30 * time.Second
	apiTimeout      = 10 * time.Second
)

var (
	// errTryAgain marks failures that may pass on retry (CNI code 11).
	errTryAgain = errors.New("try again later")
	// errNetwork marks a selected network that cannot be used (code 101).
	errNetwork = errors.New("network unusable")
	// errNotReady marks STATUS failures (code 50).
	errNotReady = errors.New("not ready")
)

// Kube is what braid needs from the API server. Reads with fresh false may be answered from the API server's
// cache, which can lag by milliseconds; braid retries a miss with fresh true before believing it.
type Kube interface {
	GetPod(ctx context.Context, namespace, name string, fresh bool) (*corev1.Pod, error)
	GetNAD(ctx context.Context, namespace, name string, fresh bool) (*nadv1.NetworkAttachmentDefinition, error)
	// SetPodAnnotation sets one annotation of the pod; with uid set, only of that incarnation of the pod.
	SetPodAnnotation(ctx context.Context, namespace, name string, uid k8stypes.UID, key, value string) error
	RecordEvent(ctx context.Context, pod *corev1.Pod, eventType, reason, message string) error
}

// Devices is what braid needs from the kubelet's PodResources API.
type Devices interface {
	Devices(ctx context.Context, namespace, name string) (map[string][]string, error)
}

// StatusWriter takes the network-status write off an ADD's path: braid's node daemon queues the write and
// returns, and drops it when the sandbox's DEL comes first (see internal/daemon). Without one, ADD writes the
// annotation itself before it returns.
type StatusWriter interface {
	// Write records that the pod's network-status should become w.Value. Once it returns nil, the write
	// survives a restart of the writer.
	Write(ctx context.Context, w netstatus.Write) error
	// Forget drops the write queued for the sandbox containerID, if it is still queued.
	Forget(containerID string) error
}

// Deps are braid's connections to the outside world.
type Deps struct {
	// Kube builds the API client from the conf's kubeconfig path.
	Kube func(kubeconfig string) (Kube, error)
	// Devices builds the PodResources client for the conf's socket path.
	Devices func(socket string) Devices
	// Exec runs delegate plugins; nil means fork/exec as libcni does, plugin stderr to ours, a delegate
	// whose call ended killed with the processes it started (delegateExec).
	Exec invoke.Exec
	// SetDefaultRoute moves the pod's default route; nil means route.SetDefault.
	SetDefaultRoute func(netnsPath, ifName string, gws []netip.Addr) error
	// Status, when set, writes network-status in the background (the node daemon); nil means ADD writes it.
	Status StatusWriter
	// Stdout receives ADD's result; nil means os.Stdout at the time of the call.
	Stdout io.Writer
	// Stderr receives logs when the conf names no log file; nil means os.Stderr.
	Stderr io.Writer
}

// Plugin implements the CNI commands.
type Plugin struct {
	deps  Deps
	locks *containerLocks
}

// New returns a Plugin; nil fields of deps get their production defaults.
func New(deps Deps) *Plugin {
	if deps.Kube == nil {
		deps.Kube = func(string) (Kube, error) { return nil, errors.New("no API client configured") }
	}
	if deps.Devices == nil {
		deps.Devices = func(socket string) Devices { return device.Client{Socket: socket} }
	}
	if deps.SetDefaultRoute == nil {
		deps.SetDefaultRoute = route.SetDefault
	}
	if deps.Exec == nil {
		deps.Exec = newDelegateExec(os.Stderr)
	}
	return &Plugin{deps: deps, locks: newContainerLocks()}
}

// Funcs wires the plugin into skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.CmdAdd, Del: p.CmdDel, Check: p.CmdCheck, Status: p.CmdStatus, GC: p.CmdGC}
}

// CmdAdd is CNI ADD.
func (p *Plugin) CmdAdd(args *skel.CmdArgs) error {
	out := p.deps.Stdout
	if out == nil {
		out = os.Stdout
	}
	return p.add(context.Background(), args, out)
}

func (p *Plugin) add(ctx context.Context, args *skel.CmdArgs, out io.Writer) error {
	return p.run(ctx, args, "ADD", func(ctx context.Context, c *conf.Conf, log *slog.Logger) error {
		res, err := p.Add(ctx, c, args, log)
		if err != nil {
			return err
		}
		if err := res.PrintTo(out); err != nil {
			return fmt.Errorf("print result: %w", err)
		}
		return nil
	})
}

// Handle serves one call that braid-shim forwarded to the node daemon and returns what the plugin would
// print on stdout: ADD's result, nothing for the others. Errors are *types.Error, as a plugin returns them.
func (p *Plugin) Handle(ctx context.Context, req shim.Request) ([]byte, error) {
	args := &skel.CmdArgs{ContainerID: req.ContainerID, Netns: req.Netns, IfName: req.IfName, Args: req.Args,
		Path: req.Path, StdinData: req.Stdin}
	var out bytes.Buffer
	var err error
	switch req.Command {
	case "ADD":
		err = p.add(ctx, args, &out)
	case "DEL":
		err = p.del(ctx, args)
	case "CHECK":
		err = p.check(ctx, args)
	case "STATUS":
		err = p.status(ctx, args)
	case "GC":
		err = p.gc(ctx, args)
	default:
		err = types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_COMMAND %q: must be ADD, DEL, CHECK, STATUS or GC", req.Command), "")
	}
	return out.Bytes(), err
}

// CmdDel is CNI DEL.
func (p *Plugin) CmdDel(args *skel.CmdArgs) error { return p.del(context.Background(), args) }

func (p *Plugin) del(ctx context.Context, args *skel.CmdArgs) error {
	return p.run(ctx, args, "DEL", func(ctx context.Context, c *conf.Conf, log *slog.Logger) error {
		return p.Del(ctx, c, args, log)
	})
}

// CmdCheck is CNI CHECK.
func (p *Plugin) CmdCheck(args *skel.CmdArgs) error { return p.check(context.Background(), args) }

func (p *Plugin) check(ctx context.Context, args *skel.CmdArgs) error {
	return p.run(ctx, args, "CHECK", func(ctx context.Context, c *conf.Conf, log *slog.Logger) error {
		return p.Check(ctx, c, args, log)
	})
}

// CmdStatus is CNI STATUS.
func (p *Plugin) CmdStatus(args *skel.CmdArgs) error { return p.status(context.Background(), args) }

func (p *Plugin) status(ctx context.Context, args *skel.CmdArgs) error {
	return p.run(ctx, args, "STATUS", func(ctx context.Context, c *conf.Conf, log *slog.Logger) error {
		return p.Status(ctx, c, args, log)
	})
}

// CmdGC is CNI GC.
func (p *Plugin) CmdGC(args *skel.CmdArgs) error { return p.gc(context.Background(), args) }

func (p *Plugin) gc(ctx context.Context, args *skel.CmdArgs) error {
	return p.run(ctx, args, "GC", func(ctx context.Context, c *conf.Conf, log *slog.Logger) error {
		return p.GC(ctx, c, args, log)
	})
}

// run parses the conf, opens the log, bounds the call and turns errors into CNI errors. This is the one place
// where an error is both logged (to braid's log file, for the operator) and returned (to the runtime).
func (p *Plugin) run(ctx context.Context, args *skel.CmdArgs, cmd string, f func(context.Context, *conf.Conf, *slog.Logger) error) error {
	c, err := conf.Parse(args.StdinData)
	if err != nil {
		return toCNI(cmd, err)
	}
	log, closeLog := p.logger(c)
	defer closeLog()
	log = log.With("cmd", cmd, "containerID", args.ContainerID, "ifName", args.IfName)
	for _, w := range c.Warnings {
		log.Warn("braid's configuration: " + w)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	start := time.Now()
	if err := p.serialized(ctx, cmd, args.ContainerID, func() error { return f(ctx, c, log) }); err != nil {
		cniErr := toCNI(cmd, err)
		log.Error("failed", "code", cniErr.Code, "err", cniErr.Msg, "took", time.Since(start))
		return cniErr
	}
	log.Debug("done", "took", time.Since(start))
	return nil
}

// serialized runs f once no other ADD, DEL or CHECK of the container runs (in braid's node daemon, calls of
// one container may come at once: a runtime's DEL after an ADD that timed out on its side). STATUS and GC
// name no container; GC takes the lock of each container it removes.
func (p *Plugin) serialized(ctx context.Context, cmd, containerID string, f func() error) error {
	if containerID == "" || cmd == "STATUS" || cmd == "GC" {
		return f()
	}
	unlock, err := p.locks.lock(ctx, containerID)
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// logger opens the conf's log destination. Multus' levels map to slog's: debug, verbose/info, error/panic.
func (p *Plugin) logger(c *conf.Conf) (*slog.Logger, func()) {
	w := p.deps.Stderr
	if w == nil {
		w = os.Stderr
	}
	closeFn := func() {}
	if c.LogFile != "" {
		// Logs name pods and networks: readable by root only, like braid's conf, records and kubeconfig.
		if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o700); err == nil {
			if f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
				closeFn = func() { _ = f.Close() }
				if c.LogToStderr {
					w = io.MultiWriter(f, w)
				} else {
					w = f
				}
			}
		}
	}
	level := slog.LevelError
	switch c.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "verbose", "info":
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", "braid"), closeFn
}

// toCNI gives an error its CNI code (see the package comment).
func toCNI(cmd string, err error) *types.Error {
	msg := strings.ToLower(cmd) + ": " + err.Error()
	var te *types.Error
	switch {
	case errors.Is(err, conf.ErrInvalid):
		return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
	case errors.Is(err, errNotReady):
		return types.NewError(types.ErrPluginNotAvailable, msg, "")
	case errors.Is(err, selection.ErrInvalid):
		return types.NewError(CodeSelection, msg, "")
	case errors.Is(err, delegate.ErrCapability):
		return types.NewError(CodeCapability, msg, "")
	case errors.Is(err, device.ErrNoDevice):
		return types.NewError(CodeDevice, msg, "")
	case errors.Is(err, errNetwork), errors.Is(err, delegate.ErrConfig):
		return types.NewError(CodeNetwork, msg, "")
	case errors.Is(err, errTryAgain):
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case errors.As(err, &te):
		return types.NewError(te.Code, msg, te.Details)
	}
	return types.NewError(types.ErrInternal, msg, "")
}

// env is what one call works with.
type env struct {
	c    *conf.Conf
	args *skel.CmdArgs
	k8s  conf.K8sArgs
	log  *slog.Logger
	cni  *libcni.CNIConfig
	rec  cache.Store
	dev  device.Files
}

func (p *Plugin) newEnv(c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) (*env, error) {
	k8s, err := conf.ParseK8sArgs(args.Args)
	if err != nil {
		return nil, err
	}
	path := []string{c.BinDir}
	path = append(path, filepath.SplitList(args.Path)...)
	return &env{
		c: c, args: args, k8s: k8s, log: log,
		cni: libcni.NewCNIConfigWithCacheDir(path, c.CNIDir, p.deps.Exec),
		rec: recordStore(c),
		dev: device.Files{Dir: c.DeviceInfoDir},
	}, nil
}

// recordStore is where braid keeps its attachment records, next to libcni's "results".
func recordStore(c *conf.Conf) cache.Store {
	return cache.Store{Dir: filepath.Join(c.CNIDir, "attachments")}
}

// kube returns the API client, or nil when braid has no kubeconfig. Building it makes no request.
func (p *Plugin) kube(e *env) (Kube, error) {
	if e.c.Kubeconfig == "" {
		return nil, nil
	}
	k, err := p.deps.Kube(e.c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("api client: %w: %w", err, errTryAgain)
	}
	return k, nil
}
