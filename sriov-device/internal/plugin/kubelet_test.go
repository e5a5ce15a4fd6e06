package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is the kubelet's device manager as a device plugin sees it, built from the real API types: the
// Registration service on <dir>/kubelet.sock, which on Register dials the plugin's endpoint in the same
// directory, asks for its options and follows its ListAndWatch stream. Like the kubelet, it empties the
// directory when it starts.
type fakeKubelet struct {
	t   *testing.T
	dir string

	mu        sync.Mutex
	srv       *grpc.Server
	endpoints map[string]*endpoint // by resource name, the latest registration
	// registered receives every accepted registration.
	registered chan *pluginapi.RegisterRequest
}

// endpoint is one registered plugin: a client and the device lists its ListAndWatch stream delivered.
type endpoint struct {
	resource string
	conn     *grpc.ClientConn
	client   pluginapi.DevicePluginClient
	options  *pluginapi.DevicePluginOptions
	lists    chan []*pluginapi.Device
	// ended is closed when the ListAndWatch stream ends.
	ended  chan struct{}
	cancel context.CancelFunc
}

func startKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{t: t, dir: dir, endpoints: map[string]*endpoint{},
		registered: make(chan *pluginapi.RegisterRequest, 64)}
	k.start()
	t.Cleanup(k.stop)
	return k
}

func (k *fakeKubelet) start() {
	k.t.Helper()
	// The kubelet's device manager removes everything in its directory when it starts.
	entries, _ := os.ReadDir(k.dir)
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(k.dir, e.Name())); err != nil {
			k.t.Fatal(err)
		}
	}
	l, err := net.Listen("unix", filepath.Join(k.dir, "kubelet.sock"))
	if err != nil {
		k.t.Fatal(err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterRegistrationServer(srv, registration{k: k})
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// stop stops the kubelet: its socket goes away and so do its connections to the plugins.
func (k *fakeKubelet) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		k.srv.Stop()
		k.srv = nil
	}
	for _, ep := range k.endpoints {
		ep.cancel()
		ep.conn.Close()
	}
	k.endpoints = map[string]*endpoint{}
}

func (k *fakeKubelet) restart() {
	k.stop()
	k.start()
}

type registration struct {
	pluginapi.UnimplementedRegistrationServer
	k *fakeKubelet
}

// Register validates a request the way the kubelet does and connects to the plugin.
func (r registration) Register(reqCtx context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k := r.k
	if req.GetVersion() != pluginapi.Version {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported version %q", req.GetVersion())
	}
	prefix, name, ok := strings.Cut(req.GetResourceName(), "/")
	if !ok || prefix == "" || name == "" || strings.HasSuffix(prefix, "kubernetes.io") {
		return nil, status.Errorf(codes.InvalidArgument, "invalid extended resource name %q", req.GetResourceName())
	}
	if filepath.Base(req.GetEndpoint()) != req.GetEndpoint() {
		return nil, status.Errorf(codes.InvalidArgument, "endpoint %q is not a file name", req.GetEndpoint())
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, req.GetEndpoint()),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	// The stream outlives the Register call, as the kubelet's does.
	ctx, cancel := context.WithCancel(context.WithoutCancel(reqCtx))
	ep := &endpoint{resource: req.GetResourceName(), conn: conn, client: pluginapi.NewDevicePluginClient(conn),
		lists: make(chan []*pluginapi.Device, 64), ended: make(chan struct{}), cancel: cancel}
	opts, err := ep.client.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil {
		cancel()
		conn.Close()
		return nil, status.Errorf(codes.Unavailable, "plugin options: %v", err)
	}
	ep.options = opts
	stream, err := ep.client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		cancel()
		conn.Close()
		return nil, status.Errorf(codes.Unavailable, "ListAndWatch: %v", err)
	}
	go func() {
		defer close(ep.ended)
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			ep.lists <- resp.GetDevices()
		}
	}()
	k.mu.Lock()
	if old, ok := k.endpoints[ep.resource]; ok {
		old.cancel()
		old.conn.Close()
	}
	k.endpoints[ep.resource] = ep
	k.mu.Unlock()
	k.registered <- req
	return &pluginapi.Empty{}, nil
}

// waitRegistered waits for registrations of exactly these resources, in any order.
func (k *fakeKubelet) waitRegistered(t *testing.T, resources ...string) map[string]*pluginapi.RegisterRequest {
	t.Helper()
	got := map[string]*pluginapi.RegisterRequest{}
	deadline := time.After(15 * time.Second)
	for len(got) < len(resources) {
		select {
		case req := <-k.registered:
			got[req.GetResourceName()] = req
		case <-deadline:
			t.Fatalf("registered %v, want %v", keys(got), resources)
		}
	}
	for _, r := range resources {
		if _, ok := got[r]; !ok {
			t.Fatalf("registered %v, want %v", keys(got), resources)
		}
	}
	return got
}

// noRegistration checks that nothing registers for a while.
func (k *fakeKubelet) noRegistration(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case req := <-k.registered:
		t.Fatalf("unexpected registration of %s", req.GetResourceName())
	case <-time.After(d):
	}
}

func (k *fakeKubelet) endpoint(t *testing.T, resource string) *endpoint {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	ep, ok := k.endpoints[resource]
	if !ok {
		t.Fatalf("%s is not registered", resource)
	}
	return ep
}

// waitList waits until the plugin sends a device list that satisfies ok, and returns it.
func (ep *endpoint) waitList(t *testing.T, what string, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	t.Helper()
	deadline := time.After(15 * time.Second)
	var last []*pluginapi.Device
	for {
		select {
		case list := <-ep.lists:
			if ok(list) {
				return list
			}
			last = list
		case <-ep.ended:
			t.Fatalf("%s: ListAndWatch of %s ended; last list %s", what, ep.resource, describe(last))
		case <-deadline:
			t.Fatalf("%s: no such list from %s; last list %s", what, ep.resource, describe(last))
		}
	}
}

func describe(list []*pluginapi.Device) string {
	var parts []string
	for _, d := range list {
		parts = append(parts, fmt.Sprintf("%s=%s", d.GetID(), d.GetHealth()))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// socketGone reports whether the plugin removed its socket.
func socketGone(path string) error {
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s: %w", path, errors.New("still there"))
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
