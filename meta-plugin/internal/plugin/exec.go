package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// delegateWaitDelay bounds how long a delegate's output is waited for once the delegate has exited or been
// killed: a process it left behind (a shell script's child) may hold its stdout open for good.
const delegateWaitDelay = 5 * time.Second

// What braid keeps of a delegate's output: a CNI result is kilobytes, and a delegate gone wrong that prints
// without end must not fill the node daemon's memory, which serves every pod of the node. The rest is read
// and discarded, so that the delegate does not block on a full pipe.
const (
	maxDelegateStdout = 16 << 20
	maxDelegateStderr = 64 << 10
)

// delegateExec runs delegate plugins as libcni's default (invoke.RawExec) does, except that a call that ends
// (out of time, or its caller gone) kills the delegate together with every process it started (its own
// process group), and that no process left behind holding the delegate's stdout or stderr keeps the call
// waiting beyond delegateWaitDelay. With libcni's default, a killed shell-script delegate's child kept the
// pipe open and the call, and with it every later call of the container in braid's node daemon, never ended.
type delegateExec struct {
	stderr io.Writer
	version.PluginDecoder
	// netns, when set, is the network namespace the delegates run in, entered by nsenter(1) in the delegate's
	// process only. braid never sets it (its delegates run where it runs, in the host's namespace); tests use it
	// to run delegates in a test's namespace without locking the calling goroutine to a thread there.
	netns string
}

func newDelegateExec(stderr io.Writer) *delegateExec { return &delegateExec{stderr: stderr} }

var _ invoke.Exec = (*delegateExec)(nil)

func (e *delegateExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e *delegateExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	for try := 0; ; try++ {
		stdout, stderr := &boundedBuffer{max: maxDelegateStdout}, &boundedBuffer{max: maxDelegateStderr}
		c := exec.CommandContext(ctx, pluginPath)
		if e.netns != "" {
			c = exec.CommandContext(ctx, "nsenter", "--net="+e.netns, "--", pluginPath)
		}
		c.Env = environ
		c.Stdin = bytes.NewReader(stdinData)
		c.Stdout, c.Stderr = stdout, stderr
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
		c.WaitDelay = delegateWaitDelay
		err := c.Run()
		if e.stderr != nil && len(stderr.Bytes()) > 0 && err == nil {
			_, _ = e.stderr.Write(stderr.Bytes())
			if stderr.over {
				_, _ = fmt.Fprintf(e.stderr, "[braid: %s's stderr cut at %d KiB]\n", pluginPath, maxDelegateStderr>>10)
			}
		}
		if stdout.over { // neither a result nor an error message: not kept, not passed on
			return nil, &types.Error{Code: types.ErrInternal, Msg: fmt.Sprintf(
				"plugin %s printed more than %d MiB on stdout, which cannot be a CNI result (exit: %v); braid kept none of it",
				pluginPath, maxDelegateStdout>>20, exitStatus(err))}
		}
		if err == nil {
			return stdout.Bytes(), nil
		}
		// The plugin's file is being written (an installer copying it): wait a second and run it again, as
		// libcni does.
		if strings.Contains(err.Error(), "text file busy") && try < 5 && ctx.Err() == nil {
			time.Sleep(time.Second)
			continue
		}
		if ctx.Err() != nil {
			return nil, &types.Error{Code: types.ErrTryAgainLater, Msg: fmt.Sprintf(
				"plugin %s killed: the call ended before it answered (%v)", pluginPath, context.Cause(ctx))}
		}
		if errors.Is(err, exec.ErrWaitDelay) && c.ProcessState != nil && c.ProcessState.Success() {
			err = fmt.Errorf("its output still open %v after it exited (a process it started holds it)", delegateWaitDelay)
		}
		return nil, pluginErr(err, stdout.Bytes(), stderr.Bytes())
	}
}

// pluginErr is the delegate's CNI error from what it printed, as libcni makes it.
func pluginErr(err error, stdout, stderr []byte) error {
	emsg := types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
	default:
		if perr := json.Unmarshal(stdout, &emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return &emsg
}

func exitStatus(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}

// boundedBuffer keeps the first max bytes written to it and takes the rest without keeping it; over tells
// that something was left out. It has no ReadFrom (a bytes.Buffer's would let io.Copy go round the bound).
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *boundedBuffer) Bytes() []byte { return b.buf.Bytes() }
