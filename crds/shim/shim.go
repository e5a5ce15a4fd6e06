// Package shim is the wire to braid's node daemon (`braid daemon`), which keeps its node's pods and the NADs
// in watch caches and one long-lived API connection. Its callers are braid-shim, the small binary a container
// runtime runs for `"type": "braid-shim"`, which forwards the CNI call (its CNI_* environment and its stdin)
// and prints what the daemon answers; and braid-ipam, which asks for its pod's address assignment
// (CommandPodAnnotation) instead of reading and watching the API server on every call. One request and one
// answer per connection, as JSON over a unix socket. The package imports little, so that callers start fast.
package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// DefaultSocket is where the daemon listens unless its conf says otherwise (`daemonSocket`).
const DefaultSocket = "/run/braid/braid.sock"

// maxRequest bounds a request: a conf with inline delegates and a GC list stays far below.
const maxRequest = 16 << 20

// Request is one CNI call, as the runtime made it to the shim.
type Request struct {
	Command     string `json:"command"`
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns"`
	IfName      string `json:"ifName"`
	Args        string `json:"args"`
	Path        string `json:"path"`
	Stdin       []byte `json:"stdin"`
}

// Response is the daemon's answer: what the plugin prints on success (ADD's result), or its CNI error.
type Response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *types.Error    `json:"error,omitempty"`
}

// Handler runs one call and returns what the plugin prints, or an error (a *types.Error keeps its code).
type Handler func(ctx context.Context, req Request) ([]byte, error)

// Listen opens the daemon's socket, readable and writable by root only, in a directory only root may enter.
// A socket left by a previous daemon is replaced.
func Listen(ctx context.Context, socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Chmod(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("old socket: %w", err)
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		_ = l.Close()
		return nil, fmt.Errorf("listen on %s: not a unix listener", socket)
	}
	ul.SetUnlinkOnClose(false) // Close removes the socket only while it is still this one (see ownSocket)
	if err := os.Chmod(socket, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	fi, err := os.Stat(socket)
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	return &ownSocket{UnixListener: ul, path: socket, file: fi}, nil
}

// ownSocket removes its socket file on Close unless another daemon has replaced it meanwhile (a new daemon
// that started while this one was still draining must keep its socket).
type ownSocket struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

func (o *ownSocket) Close() error {
	err := o.UnixListener.Close()
	if cur, statErr := os.Stat(o.path); statErr == nil && os.SameFile(cur, o.file) {
		_ = os.Remove(o.path)
	}
	return err
}

// Serve answers calls on l until l is closed: one call per connection, its Request as JSON from the shim and
// the Response as JSON back. (No HTTP: the shim stays small and starts fast.) It returns when l is closed,
// after the calls in progress have answered. Calls get ctx's values but not its end: a call that started
// finishes, so that the runtime never sees half an ADD. A call's context ends (with cause ErrHungUp) when its
// caller hangs up before the answer.
func Serve(ctx context.Context, l net.Listener, h Handler) error {
	ctx = context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	var pause time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !acceptAgain(err) {
				return fmt.Errorf("accept: %w", err)
			}
			// Out of file descriptors for a moment, say: wait and accept again, as net/http does.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			time.Sleep(pause)
			continue
		}
		pause = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, conn, h)
		}()
	}
}

func serveConn(ctx context.Context, conn net.Conn, h Handler) {
	var req Request
	// The caller sends its request as soon as it is connected; one that does not (stopped half way) is not
	// waited for beyond requestWait, or such callers would pile up, each holding a file descriptor.
	_ = conn.SetReadDeadline(time.Now().Add(requestWait))
	in := &io.LimitedReader{R: conn, N: maxRequest}
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		msg := "braid daemon: undecodable request: " + err.Error()
		switch {
		case in.N == 0:
			msg = fmt.Sprintf("braid daemon: request larger than %d MiB (the conf with its delegates, the CNI_ARGS and the GC list must stay below)", maxRequest>>20)
		case errors.Is(err, os.ErrDeadlineExceeded):
			msg = fmt.Sprintf("braid daemon: no request within %v of connecting", requestWait)
		}
		resp := Response{Error: types.NewError(types.ErrDecodingFailure, msg, "")}
		_ = conn.SetWriteDeadline(time.Now().Add(requestWait))
		_ = json.NewEncoder(conn).Encode(resp)
		_ = conn.Close()
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	after := &afterReply{}
	ctx, cancel := context.WithCancelCause(context.WithValue(ctx, afterReplyKey{}, after))
	defer cancel(nil)
	// The caller sends nothing after its request, so one read of conn lasts until the caller hangs up (or
	// conn is closed here). A hang-up before the answer ends the call's context: nobody is left to read the
	// answer, and the runtime's next call of the container (its DEL after a timed-out ADD) should not wait
	// for work it gave up on. After the answer, it is the moment after-reply work waits for.
	var answered atomic.Bool
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		_, _ = io.Copy(io.Discard, conn)
		if !answered.Load() {
			cancel(ErrHungUp)
		}
	}()
	var resp Response
	out, err := handle(ctx, h, req)
	answered.Store(true)
	switch {
	case err != nil:
		resp.Error = asCNI(err)
	case len(bytes.TrimSpace(out)) > 0:
		resp.Result = out
	}
	_ = json.NewEncoder(conn).Encode(resp)
	if after.pending() {
		// braid-shim hangs up when it exits, its answer printed; hangUpWait bounds the wait.
		_ = conn.SetReadDeadline(time.Now().Add(hangUpWait))
		<-hungUp
	}
	_ = conn.Close()
	<-hungUp
	after.run(req)
}

// handle runs one call; a panic in it (a bug one pod's input ran into) becomes the call's error, so that it
// fails that call only and not the daemon, which serves every pod's calls on the node.
func handle(ctx context.Context, h Handler, req Request) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicked(req, r)
		}
	}()
	return h(ctx, req)
}

// panicked reports a recovered panic on the daemon's stderr, with its stack, and returns it as the call's
// error.
func panicked(req Request, r any) error {
	err := fmt.Errorf("braid daemon: internal error: panic in %s of container %s: %v", req.Command, req.ContainerID, r)
	fmt.Fprintf(os.Stderr, "%v\n%s", err, debug.Stack())
	return err
}

// acceptAgain: the accept failed for a reason that passes (the process or the system out of file
// descriptors, a connection aborted before it was accepted).
func acceptAgain(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// ErrHungUp is the cause of a call's context ending because its caller hung up before the answer.
var ErrHungUp = errors.New("the caller hung up before the answer (the runtime gave up on the call)")

// hangUpWait bounds how long after-reply work waits for the caller to hang up.
const hangUpWait = 2 * time.Second

// requestWait bounds how long the daemon waits for a caller's request after it connected.
const requestWait = 10 * time.Second

type afterReplyKey struct{}

type afterReply struct {
	mu  sync.Mutex
	fns []func()
}

func (a *afterReply) pending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.fns) > 0
}

func (a *afterReply) run(req Request) {
	a.mu.Lock()
	fns := a.fns
	a.fns = nil
	a.mu.Unlock()
	for _, f := range fns {
		func() {
			defer func() {
				if r := recover(); r != nil {
					_ = panicked(req, r)
				}
			}()
			f()
		}()
	}
}

// AfterReply arranges for f to run once the caller of the call whose context is ctx has its answer and hung
// up (see Call), so that work the runtime does not wait for (such as the network-status write) does not
// compete with the answer on its way to the runtime.
// It reports false, and does not keep f, when ctx is not a call's context.
func AfterReply(ctx context.Context, f func()) bool {
	a, ok := ctx.Value(afterReplyKey{}).(*afterReply)
	if !ok {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fns = append(a.fns, f)
	return true
}

// Call sends req to the daemon at socket and returns what the shim must print, or the call's CNI error.
// A daemon that cannot be reached is CNI code 11, try again later: the runtime retries the call.
// On success the call stays open until hangUp: the daemon starts the call's after-reply work when the caller
// hangs up, that is once the runtime has the answer. braid-shim leaves that to its exit, which closes the
// connection after the answer is printed (and waited for by the runtime).
func Call(ctx context.Context, socket string, req Request) (result []byte, hangUp func(), err error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, nil, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("braid daemon not reachable at %s (is braid's DaemonSet pod running on this node?): %v", socket, err), "")
	}
	hangUp = func() { _ = conn.Close() }
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		// The daemon may have refused the request before reading all of it (one larger than maxRequest):
		// its answer says why, and is more use to the runtime than the broken pipe.
		var resp Response
		if json.NewDecoder(conn).Decode(&resp) == nil && resp.Error != nil {
			hangUp()
			return nil, nil, resp.Error
		}
		hangUp()
		return nil, nil, types.NewError(types.ErrTryAgainLater, "braid daemon: sending the call: "+err.Error(), "")
	}
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		hangUp()
		// The daemon went away in the middle of the call (a restart): what it did is unknown, and the
		// runtime's retry (or DEL) sorts it out, as after a crashed plugin.
		return nil, nil, types.NewError(types.ErrTryAgainLater, "braid daemon: no answer: "+err.Error(), "")
	}
	if resp.Error != nil {
		hangUp()
		return nil, nil, resp.Error
	}
	return resp.Result, hangUp, nil
}

// asCNI gives an error a CNI code; one without is internal (999).
func asCNI(err error) *types.Error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}
