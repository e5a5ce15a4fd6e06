package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/braid-cni/braid/deploy/local/demo"
)

const (
	// libcniCache is where containerd's libcni keeps its result cache (libcni's default cache dir).
	libcniCache = "/var/lib/cni/results"
	// loopbackNetwork is the network containerd sets up lo with, besides the confs in its conf dir.
	loopbackNetwork = "cni-loopback"
)

// containerID finds a runtime container ID in a file name or content.
var containerID = regexp.MustCompile(`[0-9a-f]{64}`)

// Node reads what the node of the local cluster holds, outside the API server.
type Node struct {
	Run demo.Runner
	// Crictl and CrictlConfig reach the cluster's containerd.
	Crictl, CrictlConfig string
	// State is the local cluster's state dir (.cache/cluster): braid's cniDir is State/braid, its device-info
	// dir State/devinfo (deploy/local/demo.sh), the CNI confs State/cni/net.d, host-local's data State/cni/ipam.
	State string
}

func (n Node) crictl(ctx context.Context, args ...string) ([]byte, error) {
	return n.Run(ctx, n.Crictl, append([]string{"--config", n.CrictlConfig}, args...)...)
}

// Sandboxes lists the runtime's ready pod sandboxes and, for each, the host side of its eth0 veth.
func (n Node) Sandboxes(ctx context.Context) ([]Sandbox, error) {
	out, err := n.crictl(ctx, "pods", "--state", "ready", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			ID       string `json:"id"`
			Metadata struct {
				Name, Namespace, UID string
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("crictl pods -o json: %w", err)
	}
	var res []Sandbox
	for _, it := range list.Items {
		sb := Sandbox{ID: it.ID, PodKey: it.Metadata.Namespace + "/" + it.Metadata.Name, PodUID: it.Metadata.UID}
		sb.Eth0Peer, err = n.eth0Peer(ctx, it.ID)
		if err != nil {
			return nil, err
		}
		res = append(res, sb)
	}
	return res, nil
}

// eth0Peer is the host-side ifindex of the sandbox's eth0 (its peer's link index); 0 when the sandbox has
// no network namespace or no eth0 of its own (host network).
func (n Node) eth0Peer(ctx context.Context, id string) (int, error) {
	out, err := n.crictl(ctx, "inspectp", "-o", "go-template", "--template", "{{.info.pid}}", id)
	if err != nil {
		return 0, err
	}
	pid := strings.TrimSpace(string(out))
	if !ownNetNS(pid) {
		return 0, nil
	}
	if out, err = n.Run(ctx, "nsenter", "-t", pid, "-n", "ip", "-j", "link", "show"); err != nil {
		return 0, err
	}
	var links []struct {
		Ifname    string `json:"ifname"`
		LinkIndex int    `json:"link_index"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return 0, fmt.Errorf("sandbox %.12s: ip -j link: %w", id, err)
	}
	for _, l := range links {
		if l.Ifname == "eth0" {
			return l.LinkIndex, nil
		}
	}
	return 0, nil
}

// ownNetNS reports whether process pid lives in a network namespace other than this process's.
func ownNetNS(pid string) bool {
	ns, err := os.Readlink("/proc/" + pid + "/ns/net")
	self, serr := os.Readlink("/proc/self/ns/net")
	return err == nil && serr == nil && ns != self
}

// CacheFiles lists the files kept per container: braid's attachment records and libcni result cache (in
// braid's cniDir), its device-info files, the runtime's libcni cache for the cluster's networks, and the
// cluster network's host-local allocations (files named after the address, holding the container ID).
func (n Node) CacheFiles() ([]CacheFile, error) {
	var out []CacheFile
	for _, dir := range []string{filepath.Join(n.State, "braid", "attachments"), filepath.Join(n.State, "braid", "results"),
		filepath.Join(n.State, "devinfo", "cni")} {
		files, err := named(dir, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, files...)
	}
	// Other tests on this machine may use libcni's default cache too: only the cluster's networks count.
	nets, err := n.networks()
	if err != nil {
		return nil, err
	}
	nets = append(nets, loopbackNetwork)
	files, err := named(libcniCache, func(name string) bool {
		for _, net := range nets {
			if strings.HasPrefix(name, net+"-") {
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	out = append(out, files...)
	held, err := hostLocal(filepath.Join(n.State, "cni", "ipam"))
	return append(out, held...), err
}

// named lists the files of dir whose name holds a container ID (and that keep passes); no dir is no files.
func named(dir string, keep func(string) bool) ([]CacheFile, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []CacheFile
	for _, e := range entries {
		id := containerID.FindString(e.Name())
		if id != "" && !e.IsDir() && (keep == nil || keep(e.Name())) {
			out = append(out, CacheFile{Path: filepath.Join(dir, e.Name()), ContainerID: id})
		}
	}
	return out, nil
}

// hostLocal lists host-local's allocations under dir/<network>/<address>: the file's first line is the
// container ID.
func hostLocal(dir string) ([]CacheFile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*"))
	if err != nil {
		return nil, err
	}
	var out []CacheFile
	for _, p := range paths {
		base := filepath.Base(p)
		if base == "lock" || strings.HasPrefix(base, "last_reserved_ip") {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan()
		_ = f.Close()
		if id := containerID.FindString(sc.Text()); id != "" {
			out = append(out, CacheFile{Path: p, ContainerID: id})
		}
	}
	return out, nil
}

// networks are the names of the CNI networks the runtime runs (the confs in State/cni/net.d).
func (n Node) networks() ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(n.State, "cni", "net.d", "*.conf*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var conf struct{ Name string }
		if err := json.Unmarshal(b, &conf); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if conf.Name != "" {
			out = append(out, conf.Name)
		}
	}
	return out, nil
}

// Links lists the interfaces of the host's network namespace (this process's).
func Links() ([]Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Link
	for _, l := range links {
		a := l.Attrs()
		link := Link{Name: a.Name, Index: a.Index, Kind: l.Type(), Master: names[a.MasterIndex]}
		// A veth's parent index is its peer's, in another namespace: only stacked links name a local parent.
		if k := link.Kind; k == "macvlan" || k == "ipvlan" || k == "vlan" {
			link.Parent = names[a.ParentIndex]
		}
		out = append(out, link)
	}
	return out, nil
}
