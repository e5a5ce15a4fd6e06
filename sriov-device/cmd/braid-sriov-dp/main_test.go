package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

// TestMain lets the test binary run as braid-sriov-dp itself, so that the tests below exercise the real flag
// parsing, wiring and signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("BRAID_SRIOV_DP_AS_MAIN") == "1" {
		os.Args = append([]string{"braid-sriov-dp"}, strings.Fields(os.Getenv("BRAID_SRIOV_DP_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

func command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BRAID_SRIOV_DP_AS_MAIN=1", "BRAID_SRIOV_DP_ARGS="+strings.Join(args, " "))
	return cmd
}

// registrar is the kubelet's Registration service, recording what registers.
type registrar struct {
	pluginapi.UnimplementedRegistrationServer
	got chan *pluginapi.RegisterRequest
}

func (r registrar) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	r.got <- req
	return &pluginapi.Empty{}, nil
}

func TestFlagsWireThePlugin(t *testing.T) {
	base := t.TempDir()
	tree, err := pcitree.Standard(filepath.Join(base, "host"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(base, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"resourceList": [{"resourceName": "vf", "selectors": {"drivers": ["iavf"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	pluginDir := filepath.Join(base, "dp")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(pluginDir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	reg := registrar{got: make(chan *pluginapi.RegisterRequest, 4)}
	pluginapi.RegisterRegistrationServer(srv, reg)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	cmd := command("--root", tree.Root, "--config", cfg, "--plugin-dir", pluginDir,
		"--devinfo-dir", filepath.Join(base, "devinfo"), "--resource-prefix", "example.org", "--resync", "0",
		"--host-events=false", "--log-level", "debug")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-reg.got:
		if req.GetResourceName() != "example.org/vf" || req.GetEndpoint() != "braid-sriov-example.org_vf.sock" {
			t.Errorf("registered %v", req)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("no registration; log:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v; log:\n%s", err, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(pluginDir, "braid-sriov-example.org_vf.sock")); !os.IsNotExist(err) {
		t.Errorf("socket left behind after SIGTERM: %v", err)
	}
}

func TestBadInputExitCodes(t *testing.T) {
	base := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"bad log level", []string{"--log-level", "loud"}, 2, "--log-level"},
		{"missing config", []string{"--config", filepath.Join(base, "none.json"), "--host-events=false"}, 1, "config file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := command(tt.args...).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tt.code || !strings.Contains(string(out), tt.says) {
				t.Errorf("exit %v, output %q; want code %d mentioning %q", err, out, tt.code, tt.says)
			}
		})
	}
}
