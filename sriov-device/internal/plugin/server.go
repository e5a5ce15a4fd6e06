package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

// resourceServer is the kubelet device-plugin gRPC service of one resource, on its own unix socket.
//
// The manager goroutine owns the lifecycle (start, stop, update); the gRPC handlers only read the published
// state, which update replaces wholesale under mu and never mutates in place.
type resourceServer struct {
	pluginapi.UnimplementedDevicePluginServer

	name   string // the full resource name
	socket string
	store  *devinfo.Store
	log    *slog.Logger

	mu       sync.RWMutex
	resource config.Resource
	devices  []pool.Device
	byID     map[string]pool.Device
	list     []*pluginapi.Device
	// changed is closed, and replaced, whenever list changes, to wake every ListAndWatch stream.
	changed chan struct{}

	grpc     *grpc.Server
	listener net.Listener
	// gen counts (re)starts and registrations, so that a late registration result of an earlier one is ignored.
	gen int
	// attempts counts failed registrations in a row, for the retry backoff.
	attempts int
	// kubeletSeen is the kubelet socket the server last registered (or is registering) with.
	kubeletSeen os.FileInfo
}

func newResourceServer(p pool.Pool, socket string, store *devinfo.Store, log *slog.Logger) *resourceServer {
	s := &resourceServer{
		name:    p.Resource.FullName(),
		socket:  socket,
		store:   store,
		log:     log.With("resource", p.Resource.FullName()),
		changed: make(chan struct{}),
	}
	s.update(p)
	return s
}

// update publishes a new device list; it reports whether what the kubelet sees changed.
func (s *resourceServer) update(p pool.Pool) bool {
	list := apiDevices(p.Resource, p.Devices)
	byID := make(map[string]pool.Device, len(p.Devices))
	for _, d := range p.Devices {
		byID[d.Address] = d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resource = p.Resource
	s.devices = p.Devices
	s.byID = byID
	if s.list != nil && sameDevices(s.list, list) {
		return false
	}
	s.list = list
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}

// counts returns how many devices the resource has, and how many of them are healthy.
func (s *resourceServer) counts() (total, healthy int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, d := range s.devices {
		if d.Healthy {
			healthy++
		}
	}
	return len(s.devices), healthy
}

// start listens on the socket (replacing a stale file) and serves in the background.
func (s *resourceServer) start(ctx context.Context) error {
	if err := removeSocket(s.socket); err != nil {
		return fmt.Errorf("resource %s: %w", s.name, err)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", s.socket)
	if err != nil {
		return fmt.Errorf("resource %s: %w", s.name, err)
	}
	// stop removes the file itself: a listener closed late (gRPC closes it when Serve starts after Stop) must
	// not unlink the socket of the server that replaced it at the same path.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, s)
	s.grpc, s.listener = srv, l
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("device plugin server failed", "socket", s.socket, "err", err)
		}
	}()
	return nil
}

// stop ends the server and every stream, and removes the socket.
func (s *resourceServer) stop() {
	if s.grpc == nil {
		return
	}
	s.grpc.Stop()
	_ = s.listener.Close() // in case Serve had not started: Stop only closes the listeners it serves
	if err := removeSocket(s.socket); err != nil {
		s.log.Error("removing socket", "err", err)
	}
	s.grpc, s.listener = nil, nil
}

func removeSocket(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing socket: %w", err)
	}
	return nil
}

// GetDevicePluginOptions tells the kubelet that GetPreferredAllocation is worth calling.
func (s *resourceServer) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list, then every change of it, until the kubelet goes away or the server
// stops.
func (s *resourceServer) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		s.mu.RLock()
		list, changed := s.list, s.changed
		s.mu.RUnlock()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: list}); err != nil {
			return fmt.Errorf("resource %s: sending device list: %w", s.name, err)
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// GetPreferredAllocation prefers devices on one PF and one NUMA node (see pool.Prefer).
func (s *resourceServer) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	s.mu.RLock()
	devices := s.devices
	s.mu.RUnlock()
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.GetContainerRequests() {
		ids := pool.Prefer(devices, cr.GetAvailableDeviceIDs(), cr.GetMustIncludeDeviceIDs(), int(cr.GetAllocationSize()))
		resp.ContainerResponses = append(resp.ContainerResponses,
			&pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// Allocate returns the environment and device nodes of each container and writes the device-info file of
// every allocated device before answering, so that the CNI side finds it when the pod's network is set up.
func (s *resourceServer) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	s.mu.RLock()
	resource, byID := s.resource, s.byID
	s.mu.RUnlock()
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.GetContainerRequests() {
		devs := make([]pool.Device, 0, len(cr.GetDevicesIds()))
		for _, id := range cr.GetDevicesIds() {
			d, ok := byID[id]
			if !ok {
				return nil, status.Errorf(codes.InvalidArgument, "resource %s has no device %q", s.name, id)
			}
			devs = append(devs, d)
		}
		cresp, err := containerResponse(resource, devs)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		for _, d := range devs {
			if err := s.store.Write(s.name, d.Address, deviceInfo(d)); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cresp)
	}
	return resp, nil
}

// PreStartContainer is not needed (GetDevicePluginOptions does not ask for it).
func (s *resourceServer) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// sameDevices compares what the kubelet sees of two device lists.
func sameDevices(a, b []*pluginapi.Device) bool {
	return slices.EqualFunc(a, b, func(x, y *pluginapi.Device) bool {
		return x.GetID() == y.GetID() && x.GetHealth() == y.GetHealth() &&
			slices.EqualFunc(x.GetTopology().GetNodes(), y.GetTopology().GetNodes(),
				func(m, n *pluginapi.NUMANode) bool { return m.GetID() == n.GetID() })
	})
}
