package installer

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/braid-cni/braid/meta-plugin/internal/conf"
)

const masterConf = `{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"bridge","bridge":"cni0"},
	{"type":"portmap","capabilities":{"portMappings":true}},{"type":"bandwidth","capabilities":{"bandwidth":true,"other":false}}]}`

func TestBuildConf(t *testing.T) {
	master, err := libcni.ConfListFromBytes([]byte(masterConf))
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildConf("/etc/cni/net.d/10-cbr0.conflist", master, "/etc/cni/net.d/braid.d/braid.kubeconfig",
		map[string]any{"cniDir": "/var/lib/cni/braid", "namespaceIsolation": true})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatalf("braid's conf does not load: %v\n%s", err, b)
	}
	if list.Name != NetworkName || list.CNIVersion != "1.0.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "braid" {
		t.Fatalf("conf list = %+v", list)
	}
	if diff := cmp.Diff(map[string]bool{"portMappings": true, "bandwidth": true}, list.Plugins[0].Network.Capabilities); diff != "" {
		t.Errorf("capabilities (-want +got):\n%s", diff)
	}
	// What the runtime hands braid (the plugin conf with name and version injected) must parse.
	inj, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	c, err := conf.Parse(inj.Bytes)
	if err != nil {
		t.Fatalf("braid cannot read the conf the installer writes: %v", err)
	}
	if c.ClusterNetwork != "/etc/cni/net.d/10-cbr0.conflist" || c.Kubeconfig != "/etc/cni/net.d/braid.d/braid.kubeconfig" ||
		c.CNIDir != "/var/lib/cni/braid" || !c.NamespaceIsolation {
		t.Errorf("braid reads %+v", c)
	}
	// With the node daemon, the conf is braid-shim's and names the daemon's socket; a relative one is refused.
	b, err = BuildConf("/x", master, "", map[string]any{"daemonSocket": "/run/braid/braid.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if list, err = libcni.ConfListFromBytes(b); err != nil || list.Plugins[0].Network.Type != "braid-shim" ||
		!strings.Contains(string(list.Plugins[0].Bytes), `"daemonSocket":"/run/braid/braid.sock"`) {
		t.Errorf("daemon-mode conf: %v\n%s", err, b)
	}
	if _, err := BuildConf("/x", master, "", map[string]any{"daemonSocket": "run/braid.sock"}); err == nil || !strings.Contains(err.Error(), "daemonSocket") {
		t.Errorf("a relative daemonSocket was accepted: %v", err)
	}
	if _, err := BuildConf("/x", master, "", map[string]any{"logLevel": "loud"}); err == nil || !strings.Contains(err.Error(), "logLevel") {
		t.Errorf("a bad extra key was accepted: %v", err)
	}
	if got := HostPath("/host/etc/cni/net.d", "/etc/cni/net.d", "/host/etc/cni/net.d/braid.d/token"); got != "/etc/cni/net.d/braid.d/token" {
		t.Errorf("HostPath = %s", got)
	}
}

// eventually polls cond for up to 10 s; the installer reacts to file events, so this is normally immediate.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	// Like the kubelet's projected volumes and careful installers: write aside, then rename into place.
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "image", "braid")
	write(t, src, "#!/bin/sh\necho braid\n")
	sa := filepath.Join(root, "sa")
	write(t, filepath.Join(sa, "token"), "token-1")
	write(t, filepath.Join(sa, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	confDir := filepath.Join(root, "net.d")
	binDir := filepath.Join(root, "bin")
	c := Config{
		Binaries: []string{src}, BinDir: binDir, ConfDir: confDir,
		APIServer: "https://192.0.2.10:6443", CAFile: filepath.Join(sa, "ca.crt"), TokenFile: filepath.Join(sa, "token"),
		Extra:         map[string]any{"cniDir": filepath.Join(root, "cache")},
		CleanupOnExit: true, Resync: time.Hour, // only file events drive this test
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c) }()

	ours := filepath.Join(confDir, "00-braid.conflist")
	kc := filepath.Join(confDir, "braid.d", "braid.kubeconfig")
	eventually(t, "binary and kubeconfig", func() bool { return exists(filepath.Join(binDir, "braid")) && exists(kc) })
	if fi, err := os.Stat(filepath.Join(binDir, "braid")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed binary: %v %v", fi, err)
	}
	time.Sleep(100 * time.Millisecond)
	if exists(ours) {
		t.Fatal("braid's conf written before the cluster network's conf exists")
	}

	// The cluster network arrives: braid's conf appears, first in the directory, pointing at it.
	write(t, filepath.Join(confDir, "10-cbr0.conflist"), masterConf)
	eventually(t, "braid's conf", func() bool { return exists(ours) })
	files, err := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if filepath.Base(files[0]) != "00-braid.conflist" {
		t.Errorf("first conf in the dir is %s, want braid's", files[0])
	}
	b, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.Plugins[0]["clusterNetwork"] != filepath.Join(confDir, "10-cbr0.conflist") ||
		got.Plugins[0]["kubeconfig"] != kc {
		t.Fatalf("braid's conf = %s (%v)", b, err)
	}

	// The kubeconfig reads its token from a file that follows the ServiceAccount token's rotation.
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://192.0.2.10:6443" || cfg.BearerTokenFile == "" || len(cfg.CAData) == 0 {
		t.Errorf("kubeconfig gives host %s, token file %q, CA %d bytes", cfg.Host, cfg.BearerTokenFile, len(cfg.CAData))
	}
	if raw, _ := os.ReadFile(kc); strings.Contains(string(raw), "token-1") {
		t.Errorf("the kubeconfig embeds the token, which goes stale when it rotates:\n%s", raw)
	}
	readToken := func() string { b, _ := os.ReadFile(cfg.BearerTokenFile); return string(b) }
	if readToken() != "token-1" {
		t.Fatalf("token file %s holds %q", cfg.BearerTokenFile, readToken())
	}
	write(t, filepath.Join(sa, "token"), "token-2")
	eventually(t, "the rotated token", func() bool { return readToken() == "token-2" })

	// The cluster network's conf goes away: so does braid's (the node must not look ready); it comes back.
	if err := os.Remove(filepath.Join(confDir, "10-cbr0.conflist")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "braid's conf removed", func() bool { return !exists(ours) })
	write(t, filepath.Join(confDir, "10-cbr0.conflist"), masterConf)
	eventually(t, "braid's conf back", func() bool { return exists(ours) })

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if exists(ours) {
		t.Error("braid's conf left after exit with CleanupOnExit")
	}
	if !exists(filepath.Join(binDir, "braid")) {
		t.Error("binary removed on exit")
	}
}

// TestFindMasterPassesOverBraid: the cluster network is never braid itself. A braid conf under another name
// (type braid, or braid-shim with the node daemon; left by an older install, or written by hand) is passed
// over when the installer looks for the first conf; named with MasterConf, it is an error naming the file.
func TestFindMasterPassesOverBraid(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "00-braid.conflist"), `{"cniVersion":"1.0.0","name":"braid-cni-network","plugins":[{"type":"braid"}]}`)
	write(t, filepath.Join(dir, "01-braid-daemon.conflist"), `{"cniVersion":"1.0.0","name":"braid-cni-network","plugins":[{"type":"braid-shim"}]}`)
	write(t, filepath.Join(dir, "02-braid.conf"), `{"cniVersion":"1.0.0","name":"braid","type":"braid-shim"}`)
	write(t, filepath.Join(dir, "10-cbr0.conflist"), masterConf)
	c := Config{ConfDir: dir, ConfName: "00-braid.conflist", Log: slog.New(slog.DiscardHandler)}
	file, master, err := c.findMaster()
	if err != nil || master == nil || filepath.Base(file) != "10-cbr0.conflist" {
		t.Fatalf("findMaster = %s, %v, %v; want 10-cbr0.conflist", file, master, err)
	}
	c.MasterConf = "01-braid-daemon.conflist"
	if _, _, err := c.findMaster(); err == nil || !strings.Contains(err.Error(), "01-braid-daemon.conflist") ||
		!strings.Contains(err.Error(), `"braid-shim"`) {
		t.Fatalf("findMaster with braid-shim's conf as MasterConf = %v, want an error naming the file and the type", err)
	}
}

// TestRunWithoutKubeconfig: with no API server to write a kubeconfig for, the ServiceAccount token is not used,
// so a pod without one (automountServiceAccountToken: false, the default -token-file absent) still installs.
func TestRunWithoutKubeconfig(t *testing.T) {
	root := t.TempDir()
	confDir := filepath.Join(root, "net.d")
	write(t, filepath.Join(confDir, "10-cbr0.conflist"), masterConf)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{ConfDir: confDir, TokenFile: filepath.Join(root, "no-sa", "token"),
			CAFile: filepath.Join(root, "no-sa", "ca.crt"), Resync: time.Hour})
	}()
	ours := filepath.Join(confDir, "00-braid.conflist")
	deadline := time.Now().Add(10 * time.Second)
	for !exists(ours) && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("Run without an API server stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !exists(ours) {
		t.Fatal("braid's conf not written")
	}
	if b, _ := os.ReadFile(ours); strings.Contains(string(b), "kubeconfig") {
		t.Errorf("conf names a kubeconfig though none is written:\n%s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestFindMasterPassesOverMultus: swapping Multus for braid leaves Multus' conf (00-multus.conf, thin or thick;
// Multus keeps it on exit by default) before the cluster network's. The cluster network is never Multus: braid
// through Multus would attach every network twice, or fail with Multus' daemon gone. Named with MasterConf, it
// is an error naming the file.
func TestFindMasterPassesOverMultus(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "00-multus.conf"), `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",
		"kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[{"cniVersion":"0.3.1","name":"cbr0","type":"bridge"}]}`)
	write(t, filepath.Join(dir, "00-multus.conflist"), `{"cniVersion":"1.0.0","name":"multus-cni-network","plugins":[{"type":"multus-shim"}]}`)
	write(t, filepath.Join(dir, "10-cbr0.conflist"), masterConf)
	c := Config{ConfDir: dir, ConfName: "00-braid.conflist", Log: slog.New(slog.DiscardHandler)}
	file, master, err := c.findMaster()
	if err != nil || master == nil || filepath.Base(file) != "10-cbr0.conflist" {
		t.Fatalf("findMaster = %s, %v, %v; want 10-cbr0.conflist", file, master, err)
	}
	c.MasterConf = "00-multus.conf"
	if _, _, err := c.findMaster(); err == nil || !strings.Contains(err.Error(), "00-multus.conf") ||
		!strings.Contains(err.Error(), `"multus"`) {
		t.Fatalf("findMaster with Multus' conf as MasterConf = %v, want an error naming the file and the type", err)
	}
}

// TestConfNameTheRuntimeUses: the runtime uses the first conf of the dir, and reads a conf list only from a
// .conflist file (containerd and CRI-O load a .conf as a single plugin, which braid's list is not). A ConfName
// the runtime would not load, or that sorts after the cluster network's conf, leaves the node without braid
// and no word about it: the installer says so, naming the conf name, and writes nothing.
func TestConfNameTheRuntimeUses(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"00-braid.conf", ".conflist"},
		{"00-braid", ".conflist"},
		{"braid.d/00-braid.conflist", "file name"},
		{"braid.conflist", "10-cbr0.conflist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			confDir := t.TempDir()
			write(t, filepath.Join(confDir, "10-cbr0.conflist"), masterConf)
			c := Config{ConfDir: confDir, ConfName: tc.name, Resync: time.Hour}
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			var logs strings.Builder
			c.Log = slog.New(slog.NewTextHandler(&logs, nil))
			err := Run(ctx, c)
			msg := logs.String()
			if err != nil {
				msg = err.Error()
			}
			if !strings.Contains(msg, "conf name") || !strings.Contains(msg, tc.name) || !strings.Contains(msg, tc.want) {
				t.Errorf("Run with ConfName %q: err %v, log:\n%s\nwant the name and %q", tc.name, err, logs.String(), tc.want)
			}
			if exists(filepath.Join(confDir, tc.name)) {
				t.Errorf("a conf the runtime would not use was written: %s", tc.name)
			}
		})
	}
}

// TestHalfWrittenMasterKeepsTheConf: cluster network installers (flannel's cp, calico's install) rewrite their
// conf in place, so the installer sees it empty or half written for a moment. braid's conf must then stay as it
// is: not removed (new pods would bypass braid) and not pointed at the next conf of the dir (new pods would get
// the wrong cluster network).
func TestHalfWrittenMasterKeepsTheConf(t *testing.T) {
	confDir := t.TempDir()
	master := filepath.Join(confDir, "10-cbr0.conflist")
	write(t, master, masterConf)
	write(t, filepath.Join(confDir, "99-other.conflist"), `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"loopback"}]}`)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{ConfDir: confDir, Resync: time.Hour}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	ours := filepath.Join(confDir, "00-braid.conflist")
	clusterNetwork := func() string {
		b, err := os.ReadFile(ours)
		if err != nil {
			return err.Error()
		}
		var got struct {
			Plugins []map[string]any `json:"plugins"`
		}
		_ = json.Unmarshal(b, &got)
		if len(got.Plugins) == 0 {
			return string(b)
		}
		s, _ := got.Plugins[0]["clusterNetwork"].(string)
		return s
	}
	eventually(t, "braid's conf", func() bool { return clusterNetwork() == master })
	for _, partial := range []string{"", masterConf[:40]} {
		if err := os.WriteFile(master, []byte(partial), 0o644); err != nil { // in place, as cp does
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if got := clusterNetwork(); got != master {
			t.Errorf("with the cluster network's conf %q, braid's conf has clusterNetwork %s, want %s", partial, got, master)
		}
	}
}

// TestWriteRemovesInterruptedWrites: the temporary copies an installer killed before its rename left (each a
// whole binary) are removed by the next write of the same file, also when its content is current; other
// files, even of similar names, stay.
func TestWriteRemovesInterruptedWrites(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "braid"), "current")
	for _, name := range []string{".braid.123456", ".braid.987", ".braid-ipam.555", ".braid.kubeconfig.42", "braid.1", ".braid.x1"} {
		write(t, filepath.Join(dir, name), "left")
	}
	if _, err := writeIfChanged(filepath.Join(dir, "braid"), []byte("current"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{".braid-ipam.555", ".braid.kubeconfig.42", ".braid.x1", "braid", "braid.1"}
	if !slices.Equal(names, want) {
		t.Errorf("files after writing braid: %v, want %v", names, want)
	}
}
