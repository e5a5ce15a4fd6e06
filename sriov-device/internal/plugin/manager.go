// Package plugin is braid-sriov-dp's kubelet device plugin: one gRPC server per configured resource,
// registered with the kubelet, that keeps the device list true (rescans on kernel events and on a resync
// period, reloads the config file when it changes, re-registers when the kubelet restarts) and hands
// functions to containers (Allocate, GetPreferredAllocation, device-info files).
package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/utils/clock"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

// KubeletSocketName is the kubelet's registration socket in the plugin directory.
const KubeletSocketName = "kubelet.sock"

// DefaultResync is the rescan period main uses: often enough that a link that went down without a kernel
// notification reaching us (a fake tree, a missed burst) shows within half a minute, cheap enough at 1024 VFs.
const DefaultResync = 30 * time.Second

// Options configure Run. Zero values take the defaults documented on each field.
type Options struct {
	// Root is where the host's filesystem is: sysfs, /dev/vfio, /proc/net are read under it. Default "/".
	Root string
	// ConfigFile is the resourceList config; required.
	ConfigFile string
	// PluginDir holds the kubelet's kubelet.sock and the plugin's sockets. Default
	// /var/lib/kubelet/device-plugins.
	PluginDir string
	// DevInfoDir receives the device-info files. Default /var/run/k8s.cni.cncf.io/devinfo/dp.
	DevInfoDir string
	// ResourcePrefix is the prefix of resources without resourcePrefix. Default braid.dev.
	ResourcePrefix string
	// Resync rescans periodically even without an event, since sysfs itself never notifies (link state files
	// change silently). 0 disables it.
	Resync time.Duration
	// Debounce coalesces bursts of events (a VF flood, a config written in several steps). Default 100ms.
	Debounce time.Duration
	// RegisterTimeout bounds one registration call. Default 10s.
	RegisterTimeout time.Duration
	// HostEvents wakes a rescan (netlink link and uevent notifications on a host); nil for none.
	HostEvents <-chan struct{}
	// Clock drives timers. Default the real clock.
	Clock clock.WithTicker
	// Logger receives the log. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.ConfigFile == "" {
		return errors.New("config file: required")
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.PluginDir == "" {
		o.PluginDir = pluginapi.DevicePluginPath
	}
	if o.DevInfoDir == "" {
		o.DevInfoDir = devinfo.DefaultDir
	}
	if o.ResourcePrefix == "" {
		o.ResourcePrefix = config.DefaultPrefix
	}
	if o.Debounce <= 0 {
		o.Debounce = 100 * time.Millisecond
	}
	if o.RegisterTimeout <= 0 {
		o.RegisterTimeout = 10 * time.Second
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var err error
	if o.ConfigFile, err = filepath.Abs(o.ConfigFile); err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if o.PluginDir, err = filepath.Abs(o.PluginDir); err != nil {
		return fmt.Errorf("plugin dir: %w", err)
	}
	return nil
}

// Run serves until ctx ends. It fails at once on a config it cannot use or a host without a PCI bus; later
// problems (a rejected config reload, a kubelet that is away, a function that cannot be read) are logged and
// waited out.
func Run(ctx context.Context, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	m := &manager{
		opts:       opts,
		log:        opts.Logger,
		scanner:    discover.NewScanner(opts.Root),
		store:      devinfo.NewStore(opts.DevInfoDir),
		kubelet:    filepath.Join(opts.PluginDir, KubeletSocketName),
		servers:    map[string]*resourceServer{},
		regResults: make(chan regResult),
		retries:    make(chan string),
	}
	return m.run(ctx)
}

type manager struct {
	opts    Options
	log     *slog.Logger
	scanner *discover.Scanner
	store   *devinfo.Store
	kubelet string

	cfg     config.Config
	cfgData []byte
	// servers are the running resource servers by full resource name; order is their config order.
	servers map[string]*resourceServer
	order   []string
	// reported is the last set of scan problems logged, to log each change once rather than every resync.
	reported string

	regResults chan regResult
	retries    chan string
}

type regResult struct {
	name string
	gen  int
	err  error
}

func (m *manager) run(ctx context.Context) error {
	data, err := os.ReadFile(m.opts.ConfigFile)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	cfg, err := config.Parse(data, m.opts.ResourcePrefix)
	if err != nil {
		return fmt.Errorf("config file %s: %w", m.opts.ConfigFile, err)
	}
	m.cfg, m.cfgData = cfg, data
	if err := os.MkdirAll(m.opts.PluginDir, 0o750); err != nil {
		return fmt.Errorf("plugin dir: %w", err)
	}

	// Watch before the first scan and registration, so that nothing that happens in between is missed.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching files: %w", err)
	}
	defer func() { _ = w.Close() }()
	configDir := filepath.Dir(m.opts.ConfigFile)
	for _, dir := range []string{m.opts.PluginDir, configDir} {
		if err := w.Add(dir); err != nil {
			return fmt.Errorf("watching %s: %w", dir, err)
		}
	}

	inv, err := m.scanner.Scan()
	if err != nil {
		return fmt.Errorf("scanning pci devices under %s: %w", m.opts.Root, err)
	}
	m.apply(ctx, inv)
	defer m.shutdown()
	m.log.Info("serving", "resources", m.order, "root", m.opts.Root, "pluginDir", m.opts.PluginDir,
		"config", m.opts.ConfigFile)

	var resync <-chan time.Time
	if m.opts.Resync > 0 {
		t := m.opts.Clock.NewTicker(m.opts.Resync)
		defer t.Stop()
		resync = t.C()
	}
	var rescanSoon, reloadSoon <-chan time.Time
	hostEvents := m.opts.HostEvents
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			if filepath.Dir(ev.Name) == m.opts.PluginDir {
				m.pluginDirEvent(ctx, ev)
			}
			// The config file may live in the plugin dir: check both.
			if filepath.Dir(ev.Name) == configDir && m.isConfigEvent(ev) && reloadSoon == nil {
				reloadSoon = m.opts.Clock.After(m.opts.Debounce)
			}
		case err, ok := <-w.Errors:
			if ok {
				m.log.Error("file watcher", "err", err)
			}
		case _, ok := <-hostEvents:
			if !ok {
				hostEvents = nil // the source is gone; the resync remains
				continue
			}
			if rescanSoon == nil {
				rescanSoon = m.opts.Clock.After(m.opts.Debounce)
			}
		case <-rescanSoon:
			rescanSoon = nil
			m.rescan(ctx)
		case <-resync:
			m.rescan(ctx)
		case <-reloadSoon:
			reloadSoon = nil
			m.reload(ctx)
		case r := <-m.regResults:
			m.registered(ctx, r)
		case name := <-m.retries:
			if s, ok := m.servers[name]; ok {
				m.register(ctx, s)
			}
		}
	}
}

// isConfigEvent reports whether a change in the config file's directory may have changed the config: the file
// itself, or the "..data" link a Kubernetes ConfigMap volume swaps to update all its files at once.
func (m *manager) isConfigEvent(ev fsnotify.Event) bool {
	base := filepath.Base(ev.Name)
	return base == filepath.Base(m.opts.ConfigFile) || base == "..data"
}

// pluginDirEvent reacts to the kubelet (re)creating its socket, and to one of our sockets being removed (the
// kubelet empties the directory when it starts).
func (m *manager) pluginDirEvent(ctx context.Context, ev fsnotify.Event) {
	if ev.Name == m.kubelet {
		if ev.Has(fsnotify.Create) {
			m.log.Info("kubelet socket created: registering", "socket", m.kubelet)
			for _, name := range m.order {
				m.ensureServing(ctx, m.servers[name])
			}
		}
		return
	}
	if !ev.Has(fsnotify.Remove) && !ev.Has(fsnotify.Rename) {
		return
	}
	for _, name := range m.order {
		if s := m.servers[name]; s.socket == ev.Name {
			m.ensureServing(ctx, s)
			return
		}
	}
}

// ensureServing restarts a server whose socket is gone, and registers it with the kubelet unless it already is
// registered with the running one.
func (m *manager) ensureServing(ctx context.Context, s *resourceServer) {
	if _, err := os.Stat(s.socket); err != nil {
		m.log.Warn("socket gone: restarting server", "resource", s.name, "socket", s.socket)
		s.stop()
		if err := s.start(ctx); err != nil {
			m.log.Error("restarting device plugin server", "resource", s.name, "err", err)
			return
		}
		s.kubeletSeen, s.attempts = nil, 0
	}
	m.register(ctx, s)
}

// reload applies the config file if it changed and is valid; an invalid config is logged and the running one
// kept.
func (m *manager) reload(ctx context.Context) {
	data, err := os.ReadFile(m.opts.ConfigFile)
	if err != nil {
		m.log.Error("config reload: keeping the running config", "config", m.opts.ConfigFile, "err", err)
		return
	}
	if bytes.Equal(data, m.cfgData) {
		return
	}
	cfg, err := config.Parse(data, m.opts.ResourcePrefix)
	if err != nil {
		m.log.Error("config reload rejected: keeping the running config", "config", m.opts.ConfigFile,
			"err", err)
		return
	}
	m.cfg, m.cfgData = cfg, data
	m.log.Info("config reloaded", "config", m.opts.ConfigFile, "resources", len(cfg.Resources))
	m.rescan(ctx)
}

func (m *manager) rescan(ctx context.Context) {
	inv, err := m.scanner.Scan()
	if err != nil {
		m.log.Error("rescan failed: keeping the last device lists", "err", err)
		return
	}
	m.apply(ctx, inv)
}

// apply makes the servers match the config and an inventory: it stops servers of resources that are gone,
// updates the device lists of the others and starts (and registers) servers of new resources.
func (m *manager) apply(ctx context.Context, inv discover.Inventory) {
	m.report(inv)
	pools, conflicts := pool.Build(m.cfg, inv)
	for _, c := range conflicts {
		m.log.Warn(c.String())
	}
	wanted := map[string]bool{}
	for _, p := range pools {
		wanted[p.Resource.FullName()] = true
	}
	for _, name := range m.order {
		if !wanted[name] {
			m.servers[name].stop()
			delete(m.servers, name)
			m.log.Info("resource removed", "resource", name)
		}
	}
	m.order = m.order[:0]
	for _, p := range pools {
		name := p.Resource.FullName()
		m.order = append(m.order, name)
		if s, ok := m.servers[name]; ok {
			if s.update(p) {
				total, healthy := s.counts()
				m.log.Info("device list changed", "resource", name, "devices", total, "healthy", healthy,
					"unhealthy", unhealthy(p.Devices))
			}
			continue
		}
		s := newResourceServer(p, filepath.Join(m.opts.PluginDir, socketName(name)), m.store, m.log)
		if err := s.start(ctx); err != nil {
			m.log.Error("starting device plugin server", "resource", name, "err", err)
			continue
		}
		m.servers[name] = s
		total, healthy := s.counts()
		m.log.Info("resource serving", "resource", name, "socket", s.socket, "devices", total, "healthy", healthy)
		m.register(ctx, s)
	}
	// A server that failed to start is not in servers; keep order consistent with servers.
	m.order = slices.DeleteFunc(m.order, func(name string) bool { _, ok := m.servers[name]; return !ok })
}

// report logs the problems of a scan when they differ from the last ones logged.
func (m *manager) report(inv discover.Inventory) {
	var lines []string
	if inv.Degraded != nil {
		lines = append(lines, inv.Degraded.Error())
	}
	for _, p := range inv.Problems {
		lines = append(lines, p.Error())
	}
	text := strings.Join(lines, "\n")
	if text == m.reported {
		return
	}
	m.reported = text
	for _, l := range lines {
		m.log.Warn("discovery", "problem", l)
	}
}

// register registers a server with the kubelet in the background, if the kubelet is there and the server is
// not registered (or registering) with this kubelet socket already; when the kubelet is not there, its socket's
// creation will trigger the registration.
func (m *manager) register(ctx context.Context, s *resourceServer) {
	kubelet, err := os.Stat(m.kubelet)
	if err != nil {
		m.log.Info("kubelet not running yet: will register when its socket appears", "resource", s.name,
			"socket", m.kubelet)
		return
	}
	if sameFile(kubelet, s.kubeletSeen) {
		return
	}
	s.kubeletSeen = kubelet
	s.gen++
	gen, name, endpoint := s.gen, s.name, filepath.Base(s.socket)
	go func() {
		err := registerWithKubelet(ctx, m.kubelet, endpoint, name, m.opts.RegisterTimeout)
		select {
		case m.regResults <- regResult{name: name, gen: gen, err: err}:
		case <-ctx.Done():
		}
	}()
}

// sameFile tells a kubelet socket from the one a restarted kubelet creates at the same path (which may reuse
// the inode number, hence the modification time too).
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime())
}

// registered handles the outcome of a registration: a failure is retried with an exponential backoff (0.5s to
// 30s), unless a newer registration of the same server made it moot.
func (m *manager) registered(ctx context.Context, r regResult) {
	s, ok := m.servers[r.name]
	if !ok || r.gen != s.gen {
		return
	}
	if r.err == nil {
		s.attempts = 0
		m.log.Info("registered with the kubelet", "resource", r.name)
		return
	}
	delay := min(500*time.Millisecond<<min(s.attempts, 6), 30*time.Second)
	s.attempts++
	s.kubeletSeen = nil // so that the retry registers again
	m.log.Warn("registration with the kubelet failed: retrying", "resource", r.name, "in", delay, "err", r.err)
	after := m.opts.Clock.After(delay)
	go func() {
		select {
		case <-after:
			select {
			case m.retries <- r.name:
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
}

// shutdown stops every server (which removes their sockets).
func (m *manager) shutdown() {
	for _, name := range m.order {
		m.servers[name].stop()
	}
	m.log.Info("stopped")
}

// registerWithKubelet calls the kubelet's Registration service.
func registerWithKubelet(ctx context.Context, kubeletSocket, endpoint, resource string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+kubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", kubeletSocket, err)
	}
	defer func() { _ = conn.Close() }()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	if err != nil {
		return fmt.Errorf("registering %s at %s: %w", resource, kubeletSocket, err)
	}
	return nil
}

// socketName is the socket of a resource in the plugin directory: "braid.dev/x710" gives
// "braid-sriov-braid.dev_x710.sock".
func socketName(resource string) string {
	return "braid-sriov-" + strings.ReplaceAll(resource, "/", "_") + ".sock"
}

func unhealthy(devs []pool.Device) []string {
	var out []string
	for _, d := range devs {
		if !d.Healthy {
			out = append(out, d.Address+": "+d.Reason)
		}
	}
	return out
}
