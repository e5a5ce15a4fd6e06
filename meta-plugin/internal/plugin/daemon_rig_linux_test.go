package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"k8s.io/client-go/rest"

	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/crds/testenv"
	"github.com/braid-cni/braid/meta-plugin/internal/daemon"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// The braid-shim binary, built once for the package's tests.
var (
	shimOnce sync.Once
	shimBin  string
	shimErr  error
)

func buildShim(t *testing.T) string {
	t.Helper()
	shimOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			shimErr = err
			return
		}
		dir := filepath.Join(root, ".cache", "test-bin")
		shimBin = filepath.Join(dir, "braid-shim")
		shimErr = testenv.Build(t.Context(), dir, "./meta-plugin/cmd/braid-shim")
	})
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	return shimBin
}

// daemonRig is braid's node daemon for the rig: the real daemon (watch caches of the rig's node and the NADs
// in envtest, the status queue, the socket), serving the meta-plugin with the rig's delegates from the rig's
// "host" network namespace; calls come through the real braid-shim binary.
type daemonRig struct {
	*rig
	d      *daemon.Daemon
	socket string
	shim   string
	stop   func()
	// handled is the time the daemon spent in the plugin (from the request decoded to the answer), summed.
	handled atomic.Int64
}

func newDaemonRig(t *testing.T, ver string) *daemonRig {
	t.Helper()
	r := newRig(t, ver)
	r.node = "node-" + randHex(4)
	dr := &daemonRig{rig: r, socket: filepath.Join(r.dir, "run", "braid.sock"), shim: buildShim(t)}
	cfg := rest.CopyConfig(suiteEnv.Config)
	cfg.Wrap(kube.CountingTransport(func() { r.apiCalls.Add(1) }))
	api, err := kube.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dr.d, err = daemon.New(daemon.Config{Socket: dr.socket, Node: r.node, StateDir: filepath.Join(r.dir, "status-queue"), Log: log}, api)
	if err != nil {
		t.Fatal(err)
	}
	// The rig's host is a network namespace. The delegates enter it themselves, so that the daemon's goroutines
	// run on any thread, as in braid's DaemonSet pod; entering it around each call would lock the call's
	// goroutine to a thread, and every wait in the call would cost a hand-over between threads.
	r.exec.Exec = &delegateExec{stderr: os.Stderr, netns: r.hostNS.Path()}
	p := New(Deps{
		Kube:   func(string) (Kube, error) { return dr.d.Cache, nil },
		Status: dr.d.Status,
		Exec:   r.exec,
		Stderr: testWriter{t},
	})
	handler := func(ctx context.Context, req shim.Request) (out []byte, err error) {
		ctx = context.WithValue(ctx, daemonCallKey{}, req.Command)
		start := time.Now()
		out, err = p.Handle(ctx, req)
		dr.handled.Add(int64(time.Since(start)))
		return out, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dr.d.Run(ctx, handler) }()
	dr.stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	t.Cleanup(dr.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(dr.socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon socket not there after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.setConf(map[string]any{"type": "braid-shim", "daemonSocket": dr.socket})
	return dr
}

// daemonCallKey marks the context of a daemon call with its command (ADD, DEL...), for recordingExec's hook.
type daemonCallKey struct{}

// call runs the braid-shim binary as a runtime does and returns its stdout, or its CNI error.
func (dr *daemonRig) call(command string, args *skel.CmdArgs) ([]byte, error) {
	cmd := exec.Command(dr.shim)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + args.ContainerID, "CNI_NETNS=" + args.Netns,
		"CNI_IFNAME=" + args.IfName, "CNI_ARGS=" + args.Args, "CNI_PATH=" + args.Path}
	cmd.Stdin = bytes.NewReader(args.StdinData)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		// A CNI error is printed on stdout as JSON, the exit code is 1.
		var cniErr types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &cniErr); jerr == nil && cniErr.Msg != "" {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("braid-shim %s: %w: %s%s", command, err, stdout.String(), stderr.String())
	}
	if err != nil {
		return nil, err
	}
	return stdout.Bytes(), nil
}

func (dr *daemonRig) add(p *pod) (*types100.Result, error) {
	out, err := dr.call("ADD", dr.args(p))
	if err != nil {
		return nil, err
	}
	res, err := create.CreateFromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("ADD result %s: %w", out, err)
	}
	return types100.NewResultFromResult(res)
}

func (dr *daemonRig) del(p *pod) error {
	_, err := dr.call("DEL", dr.args(p))
	return err
}

// waitStatus waits until the status queue is empty and returns the pod's network-status.
func (dr *daemonRig) waitStatus(p *pod) []netstatus.Status {
	dr.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for dr.d.Status.Pending() > 0 {
		if time.Now().After(deadline) {
			dr.t.Fatalf("%d network-status writes still queued after 10s", dr.d.Status.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return dr.status(p)
}
