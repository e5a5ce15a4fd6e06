package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func serve(t *testing.T, h Handler) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "run", "braid.sock")
	l, err := Listen(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), l, h) }()
	t.Cleanup(func() {
		_ = l.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return socket
}

func TestCallCarriesTheRequestAndTheAnswer(t *testing.T) {
	var got Request
	socket := serve(t, func(_ context.Context, req Request) ([]byte, error) {
		got = req
		return []byte(`{"cniVersion":"1.0.0"}` + "\n"), nil
	})
	req := Request{Command: "ADD", ContainerID: "c1", Netns: "/run/netns/x", IfName: "eth0", Args: "K8S_POD_NAME=p",
		Path: "/opt/cni/bin", Stdin: []byte(`{"type":"braid-shim"}`)}
	out, hangUp, err := Call(context.Background(), socket, req)
	if err != nil {
		t.Fatal(err)
	}
	hangUp()
	if string(out) != `{"cniVersion":"1.0.0"}` {
		t.Errorf("answer = %q", out)
	}
	if got.Command != req.Command || got.ContainerID != "c1" || got.Netns != req.Netns || got.IfName != "eth0" ||
		got.Args != req.Args || got.Path != req.Path || string(got.Stdin) != string(req.Stdin) {
		t.Errorf("daemon got %+v, want %+v", got, req)
	}
}

func TestCallKeepsErrorCodes(t *testing.T) {
	socket := serve(t, func(_ context.Context, req Request) ([]byte, error) {
		if req.Command == "ADD" {
			return nil, types.NewError(101, "add: net-x: NAD not found", "details")
		}
		return nil, errors.New("disk on fire")
	})
	_, _, err := Call(context.Background(), socket, Request{Command: "ADD"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != 101 || te.Msg != "add: net-x: NAD not found" || te.Details != "details" {
		t.Errorf("ADD error = %#v, want code 101 with message and details", err)
	}
	_, _, err = Call(context.Background(), socket, Request{Command: "DEL"})
	if !errors.As(err, &te) || te.Code != types.ErrInternal || te.Msg != "disk on fire" {
		t.Errorf("DEL error = %#v, want code 999 with the message", err)
	}
}

func TestCallWithoutDaemonIsTryAgainLater(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "braid.sock")
	_, _, err := Call(context.Background(), socket, Request{Command: "ADD"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, socket) {
		t.Errorf("error = %v, want code 11 naming %s", err, socket)
	}
}

func TestSocketIsRootsOnly(t *testing.T) {
	socket := serve(t, func(context.Context, Request) ([]byte, error) { return nil, nil })
	for path, want := range map[string]os.FileMode{socket: 0o600, filepath.Dir(socket): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	// A socket left by a crashed daemon does not stop the next one.
	l, err := Listen(t.Context(), socket)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	_ = l.Close()
}

// Work registered with AfterReply runs only once the caller has its answer and hung up; a caller that does
// not hang up delays it by hangUpWait at most.
func TestAfterReplyRunsWhenTheCallerHangsUp(t *testing.T) {
	ran := make(chan time.Time, 1)
	socket := serve(t, func(ctx context.Context, _ Request) ([]byte, error) {
		if !AfterReply(ctx, func() { ran <- time.Now() }) {
			t.Error("AfterReply refused a call's context")
		}
		return nil, nil
	})
	_, hangUp, err := Call(context.Background(), socket, Request{Command: "ADD"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Fatal("the after-reply work ran while the caller still held the call")
	case <-time.After(300 * time.Millisecond):
	}
	hungUp := time.Now()
	hangUp()
	select {
	case at := <-ran:
		if at.Before(hungUp) {
			t.Error("the after-reply work ran before the caller hung up")
		}
	case <-time.After(hangUpWait / 2):
		t.Fatal("the after-reply work did not run when the caller hung up")
	}

	// A caller that never hangs up.
	start := time.Now()
	_, _, err = Call(context.Background(), socket, Request{Command: "ADD"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ran:
		if d := at.Sub(start); d < hangUpWait-100*time.Millisecond {
			t.Errorf("the after-reply work ran after %v, while the caller held the call", d)
		}
	case <-time.After(2 * hangUpWait):
		t.Fatal("the after-reply work did not run after hangUpWait")
	}
	if AfterReply(context.Background(), func() {}) {
		t.Error("AfterReply accepted a context that is no call's")
	}
}

// A call whose caller hangs up before the answer (braid-shim killed, or out of time) has its context ended
// with ErrHungUp, so that the daemon stops work nobody waits for; a caller that waits gets its answer.
func TestCallEndsWhenTheCallerHangsUp(t *testing.T) {
	ended := make(chan error, 1)
	socket := serve(t, func(ctx context.Context, req Request) ([]byte, error) {
		if req.Command == "CHECK" {
			time.Sleep(100 * time.Millisecond) // a caller that waits: the call must not end early
			return nil, context.Cause(ctx)
		}
		select {
		case <-ctx.Done():
			ended <- context.Cause(ctx)
		case <-time.After(5 * time.Second):
			ended <- errors.New("still running 5s after the caller hung up")
		}
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := Call(ctx, socket, Request{Command: "ADD"}); err == nil {
		t.Fatal("the call answered, want the caller to give up")
	}
	if err := <-ended; !errors.Is(err, ErrHungUp) {
		t.Errorf("call context ended with %v, want ErrHungUp", err)
	}
	_, hangUp, err := Call(t.Context(), socket, Request{Command: "CHECK", Stdin: []byte(`{"padding":"` + strings.Repeat("x", 4096) + `"}`)})
	if err != nil {
		t.Fatalf("a caller that waits: %v", err)
	}
	hangUp()
}

// A stopping daemon removes its socket, but not the socket of a daemon that replaced it meanwhile.
func TestCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "braid.sock")
	old, err := Listen(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	newer, err := Listen(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	_ = old.Close()
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("the old daemon's Close removed the new daemon's socket: %v", err)
	}
	go func() {
		_ = Serve(context.Background(), newer, func(context.Context, Request) ([]byte, error) { return nil, nil })
	}()
	if _, hangUp, err := Call(t.Context(), socket, Request{Command: "DEL"}); err != nil {
		t.Errorf("call to the new daemon: %v", err)
	} else {
		hangUp()
	}
	_ = newer.Close()
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after its daemon stopped: %v", err)
	}
}

// flakyListener fails its first accepts as a process out of file descriptors does.
type flakyListener struct {
	net.Listener
	fails int
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails > 0 {
		f.fails--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// Out of file descriptors for a moment (many calls at once), the daemon waits and accepts again, as net/http
// does. Before, Serve returned, and the daemon exited with every call in progress.
func TestServeOutlivesRunningOutOfFiles(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "run", "braid.sock")
	l, err := Listen(t.Context(), socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- Serve(context.Background(), &flakyListener{Listener: l, fails: 3}, func(context.Context, Request) ([]byte, error) {
			return []byte(`{}`), nil
		})
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, hangUp, err := Call(ctx, socket, Request{Command: "ADD"})
	if err != nil {
		t.Fatalf("call after the accept errors: %v", err)
	}
	hangUp()
	_ = l.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// A call that panics (a bug met by one pod's odd input) fails with a CNI error for its caller; the daemon,
// and with it every other pod's CNI on the node, keeps serving. Before, the panic ended the daemon.
func TestPanicInACallFailsOnlyThatCall(t *testing.T) {
	socket := serve(t, func(ctx context.Context, req Request) ([]byte, error) {
		switch req.Command {
		case "ADD":
			var m map[string]string
			m["boom"] = "x" //nolint:staticcheck // SA5000: a nil map on purpose, the runtime error a bug would raise
		case "DEL":
			AfterReply(ctx, func() { panic("after-reply work panicked") })
		}
		return []byte(`{}`), nil
	})
	_, _, err := Call(t.Context(), socket, Request{Command: "ADD", ContainerID: "c1"})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "panic") ||
		!strings.Contains(te.Msg, "ADD") || !strings.Contains(te.Msg, "c1") {
		t.Fatalf("ADD error = %#v, want code 999 naming the panic, the command and the container", err)
	}
	_, hangUp, err := Call(t.Context(), socket, Request{Command: "DEL"})
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	hangUp()
	_, hangUp, err = Call(t.Context(), socket, Request{Command: "CHECK"})
	if err != nil {
		t.Fatalf("a call after the panics: %v", err)
	}
	hangUp()
}

// A caller that connects and sends nothing (a shim stopped half way) is answered with an error and hung up
// on after requestWait, so that such callers do not pile up and hold the daemon's file descriptors.
func TestSilentCallerIsHungUpOn(t *testing.T) {
	socket := serve(t, func(context.Context, Request) ([]byte, error) { return nil, nil })
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var resp Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		t.Fatalf("no answer to a silent caller: %v", err)
	}
	if resp.Error == nil || !strings.Contains(resp.Error.Msg, "no request") {
		t.Errorf("answer = %+v, want an error saying no request came", resp)
	}
}

// A request larger than maxRequest is refused with an error saying so (not a JSON syntax error), and the
// daemon serves the next call.
func TestOversizedRequestIsRefusedNamingTheLimit(t *testing.T) {
	socket := serve(t, func(context.Context, Request) ([]byte, error) { return []byte(`{}`), nil })
	_, _, err := Call(t.Context(), socket, Request{Command: "ADD", Stdin: bytes.Repeat([]byte("x"), maxRequest)})
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure || !strings.Contains(te.Msg, "16 MiB") {
		t.Fatalf("error = %#v, want code %d naming the 16 MiB limit", err, types.ErrDecodingFailure)
	}
	_, hangUp, err := Call(t.Context(), socket, Request{Command: "ADD"})
	if err != nil {
		t.Fatalf("a call after the oversized one: %v", err)
	}
	hangUp()
}
