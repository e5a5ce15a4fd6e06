package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/fsnotify/fsnotify"

	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
)

// Config says where things are. Paths are as the installer's container sees them; Host* say where the same
// directories are on the host, which is what goes into the files the runtime and braid read.
type Config struct {
	// Binaries are copied into BinDir.
	Binaries []string
	BinDir   string
	// ConfDir is the runtime's CNI conf dir; HostConfDir is the same directory seen from the host.
	ConfDir     string
	HostConfDir string
	// ConfName is braid's conf file; it must sort first in ConfDir.
	ConfName string
	// MasterConf names the cluster network's conf file in ConfDir; empty means the first conf that is not
	// braid's.
	MasterConf string
	// Extra are further keys for braid's plugin conf.
	Extra map[string]any

	// APIServer, CAFile and TokenFile are how braid reaches the API server: the ServiceAccount's, as mounted
	// into the installer's pod. An empty APIServer writes no kubeconfig.
	APIServer string
	CAFile    string
	TokenFile string

	// CleanupOnExit removes braid's conf when Run returns, so that the node stops using braid.
	CleanupOnExit bool
	// Resync is how often the installer re-reads the token and the confs even without file events.
	Resync time.Duration
	Log    *slog.Logger
}

// credDir holds braid's kubeconfig and token, inside the conf dir (which the DaemonSet mounts anyway).
func (c *Config) credDir() string { return filepath.Join(c.ConfDir, "braid.d") }

// File modes on the host. Everything braid writes there but its binaries is for root only, as Multus does:
// the token is a credential, and the conf names the kubeconfig and the cluster network's conf.
const (
	confMode    os.FileMode = 0o600
	credDirMode os.FileMode = 0o700
	binaryMode  os.FileMode = 0o755
)

func (c *Config) host(p string) string { return HostPath(c.ConfDir, c.HostConfDir, p) }

// Run installs braid and keeps its conf and credentials current until ctx ends.
func Run(ctx context.Context, c Config) (err error) {
	if c.ConfName == "" {
		c.ConfName = "00-braid.conflist"
	}
	if c.ConfName != filepath.Base(c.ConfName) || filepath.Ext(c.ConfName) != ".conflist" {
		// Runtimes read a conf list only from a .conflist file (a .conf is one plugin's conf), and only from the
		// conf dir itself.
		return fmt.Errorf("conf name %q: must be a file name ending in .conflist (braid's conf is a conf list)", c.ConfName)
	}
	if c.HostConfDir == "" {
		c.HostConfDir = c.ConfDir
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, b := range c.Binaries {
		if err := copyFile(b, filepath.Join(c.BinDir, filepath.Base(b)), binaryMode); err != nil {
			return err
		}
		c.Log.Info("installed binary", "path", filepath.Join(c.BinDir, filepath.Base(b)))
	}
	if c.CleanupOnExit {
		defer func() {
			if rmErr := removeIfExists(filepath.Join(c.ConfDir, c.ConfName)); rmErr != nil {
				err = errors.Join(err, rmErr)
			} else {
				c.Log.Info("removed braid's conf on exit")
			}
		}()
	}

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer func() { _ = w.Close() }()
	if err := os.MkdirAll(c.ConfDir, 0o755); err != nil {
		return fmt.Errorf("conf dir: %w", err)
	}
	if err := w.Add(c.ConfDir); err != nil {
		return fmt.Errorf("watch %s: %w", c.ConfDir, err)
	}
	if c.APIServer != "" && c.TokenFile != "" {
		// Without an API server no kubeconfig is written and the token is not read (the pod may have none).
		// Projected tokens are replaced by swapping a symlink in their directory, so watch the directory.
		if err := w.Add(filepath.Dir(c.TokenFile)); err != nil {
			return fmt.Errorf("watch %s: %w", filepath.Dir(c.TokenFile), err)
		}
	}
	tick := time.NewTicker(c.Resync)
	defer tick.Stop()
	for {
		if err := c.sync(); err != nil {
			// Log and carry on: the next event or resync retries, and the DaemonSet must not crash-loop on a
			// transient problem (a half-written master conf, say).
			c.Log.Error("sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case ev := <-w.Events:
			c.Log.Debug("file event", "event", ev.String())
		case werr := <-w.Errors:
			c.Log.Warn("watch", "err", werr)
		}
	}
}

// sync brings credentials and braid's conf in line with the token, the CA and the master conf.
func (c *Config) sync() error {
	var kubeconfig string
	if c.APIServer != "" {
		var err error
		if kubeconfig, err = c.syncCredentials(); err != nil {
			return err
		}
	}
	ours := filepath.Join(c.ConfDir, c.ConfName)
	file, master, err := c.findMaster()
	if err != nil {
		return err
	}
	if master == nil {
		// Without the cluster network the node must not look ready for pods (NPWG spec 6.1).
		if err := removeIfExists(ours); err != nil {
			return err
		}
		c.Log.Info("waiting for the cluster network's conf", "dir", c.ConfDir)
		return nil
	}
	if filepath.Base(file) < c.ConfName {
		// The runtime uses the first conf of the dir: braid's would never run.
		return fmt.Errorf("conf name %q sorts after the cluster network's conf %s, and the runtime uses the first "+
			"conf: choose a name that sorts first (00-braid.conflist)", c.ConfName, filepath.Base(file))
	}
	b, err := BuildConf(c.host(file), master, kubeconfig, c.Extra)
	if err != nil {
		return err
	}
	changed, err := writeIfChanged(ours, b, confMode)
	if changed {
		c.Log.Info("wrote braid's conf", "path", ours, "clusterNetwork", file)
	}
	return err
}

// syncCredentials writes the token file and the kubeconfig when they differ from the source; it returns the
// kubeconfig's host path.
func (c *Config) syncCredentials() (string, error) {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("service account token: %w", err)
	}
	var ca []byte
	if c.CAFile != "" {
		if ca, err = os.ReadFile(c.CAFile); err != nil {
			return "", fmt.Errorf("service account CA: %w", err)
		}
	}
	dir := c.credDir()
	// MkdirAll leaves an existing directory's mode, and the umask may narrow a new one's.
	if err := errors.Join(os.MkdirAll(dir, credDirMode), ensureMode(dir, credDirMode)); err != nil {
		return "", fmt.Errorf("credentials dir: %w", err)
	}
	tokenPath := filepath.Join(dir, "token")
	if changed, err := writeIfChanged(tokenPath, token, confMode); err != nil {
		return "", err
	} else if changed {
		c.Log.Info("wrote service account token", "path", tokenPath)
	}
	kc, err := Kubeconfig(c.APIServer, ca, c.host(tokenPath))
	if err != nil {
		return "", err
	}
	kcPath := filepath.Join(dir, "braid.kubeconfig")
	if _, err := writeIfChanged(kcPath, kc, confMode); err != nil {
		return "", err
	}
	return c.host(kcPath), nil
}

// findMaster returns the cluster network's conf file and its content, or nil when there is none yet.
func (c *Config) findMaster() (string, *libcni.NetworkConfigList, error) {
	var files []string
	if c.MasterConf != "" {
		files = []string{filepath.Join(c.ConfDir, c.MasterConf)}
	} else {
		var err error
		if files, err = libcni.ConfFiles(c.ConfDir, []string{".conf", ".conflist", ".json"}); err != nil {
			return "", nil, fmt.Errorf("read %s: %w", c.ConfDir, err)
		}
	}
	for _, f := range files {
		if filepath.Base(f) == c.ConfName {
			continue
		}
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("cluster network conf: %w", err)
		}
		list, err := delegate.FromBytes(b, "", f)
		if err != nil {
			// Most likely the cluster network's conf in the middle of a rewrite in place: braid's conf stays as
			// it is until the file loads, rather than going (pods would bypass braid) or pointing at a later
			// conf (pods would get the wrong cluster network). The runtime would not load the dir either.
			return "", nil, fmt.Errorf("conf %s does not load (half written?); braid's conf is left as it is: %w", f, err)
		}
		if i, t := delegate.FindType(list, conf.IsBraid); i >= 0 {
			if c.MasterConf != "" {
				return "", nil, fmt.Errorf("cluster network conf %s is braid's own (plugins[%d] is of type %q), which would "+
					"call itself without end: name the cluster network's conf instead", f, i, t)
			}
			continue // braid's conf (type braid, or braid-shim with the node daemon) under another name
		}
		if i, t := delegate.FindType(list, isMultus); i >= 0 {
			if c.MasterConf != "" {
				return "", nil, fmt.Errorf("cluster network conf %s is Multus' (plugins[%d] is of type %q), which braid "+
					"replaces: name the cluster network's conf instead", f, i, t)
			}
			// Left by the Multus that braid replaces (Multus keeps its conf on exit by default): through it, every
			// pod would get its networks twice, or none once Multus' daemon is gone.
			c.Log.Warn("Multus' conf passed over; remove it once braid runs", "file", f, "type", t)
			continue
		}
		return f, list, nil
	}
	return "", nil, nil
}

// isMultus matches the plugin types of Multus' own confs (thin and thick).
func isMultus(pluginType string) bool { return pluginType == "multus" || pluginType == "multus-shim" }

// writeIfChanged replaces path atomically (temporary file and rename) when its content differs, so that the
// runtime never reads half a conf and braid never half a token. The file gets mode even when its content is
// current (written by an older braid, or changed by hand).
func writeIfChanged(path string, b []byte, mode os.FileMode) (bool, error) {
	removeInterruptedWrites(path)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		if err := ensureMode(path, mode); err != nil {
			return false, fmt.Errorf("write %s: %w", path, err)
		}
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		_ = os.Remove(tmp.Name())
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// removeInterruptedWrites removes the temporary files of writes of path that never reached their rename: the
// installer was killed in between (OOM-killed while copying the 40 MB braid-ipam, say). Each one is a whole
// copy, and a crash-looping installer would otherwise fill the host's disk with them. The installer is the only
// writer of its files on a node, so none of them belongs to a write in progress.
func removeInterruptedWrites(path string) {
	dir, prefix := filepath.Dir(path), "."+filepath.Base(path)+"."
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if ok && rest != "" && strings.Trim(rest, "0123456789") == "" { // os.CreateTemp's random part
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// ensureMode sets path's permission bits when they differ; only then, because a chmod is a file event for
// the installer's own watch.
func ensureMode(path string, mode os.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() == mode {
		return nil
	}
	return os.Chmod(path, mode)
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	// Rename over the old binary rather than writing into it: a runtime may be executing it right now.
	if _, err := writeIfChanged(dst, b, mode); err != nil {
		return fmt.Errorf("install %s: %w", src, err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}
