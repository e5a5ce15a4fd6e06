package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
)

// onDisk finds the conf named name in confDir: conflists first, then confs (NPWG spec 3.4.1). With skipSelf,
// braid's own conf (which may carry any name) is passed over.
func (r *resolver) onDisk(name string, skipSelf bool) (*libcni.NetworkConfigList, error) {
	for _, exts := range [][]string{{".conflist"}, {".conf", ".json"}} {
		files, err := libcni.ConfFiles(r.e.c.ConfDir, exts)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", r.e.c.ConfDir, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // a file that vanished or cannot be read is not the one we look for
			}
			list, err := delegate.FromBytes(b, "", f)
			if err == nil && list.Name == name && (!skipSelf || braidIn(list) == "") {
				return list, nil
			}
		}
	}
	return nil, fmt.Errorf("no spec.config and no conf named %q in %s: %w", name, r.e.c.ConfDir, errNetwork)
}

// namedNetwork resolves a network braid's conf names by name (clusterNetwork, defaultNetworks[i]) as Multus
// does: the NAD ref, else the conf in confDir whose CNI name is the name as written, never braid's own. It
// returns the network's name for records and network-status: ref's, or the conf's.
func (r *resolver) namedNetwork(ctx context.Context, field, written string, ref conf.NetRef) (*libcni.NetworkConfigList, string, string, error) {
	list, resource, err := r.nadList(ctx, field, ref.Namespace, ref.Name)
	var missing *nadNotFound
	if !errors.As(err, &missing) {
		return list, resource, ref.String(), err
	}
	list, derr := r.onDisk(written, true)
	if derr != nil {
		return nil, "", "", fmt.Errorf("%s: %q is neither a network-attachment-definition (%s not found) nor the name of "+
			"a conf in %s (confDir); create one of them: %w", field, written, ref, r.e.c.ConfDir, errNetwork)
	}
	r.e.log.Debug("no network-attachment-definition; using the conf of that name in confDir", "field", field, "network", written)
	return list, "", list.Name, nil
}

// master resolves the cluster network: the pod's default-network override, else the conf's clusterNetwork
// (NAD, file or directory) or inline delegate.
func (r *resolver) master(ctx context.Context, pod *corev1.Pod) (*attachment, error) {
	c := r.e.c
	a := &attachment{Attachment: cache.Attachment{IfName: r.e.args.IfName, Master: true}, field: "clusterNetwork"}
	var err error
	switch {
	case pod != nil && pod.Annotations[selection.DefaultNetworkAnnotation] != "" && !c.IsSystemNamespace(pod.Namespace):
		// As in Multus, a bare name is the Multus namespace's, and namespace isolation, which guards the pod's
		// own selections, does not apply: the cluster network is the administrator's.
		a.field = "default-network"
		el, perr := selection.ParseDefaultNetwork(pod.Annotations[selection.DefaultNetworkAnnotation], c.ClusterNetworkNamespace)
		if perr != nil {
			return nil, perr
		}
		a.Network = el.Ref()
		a.list, a.resource, err = r.nadList(ctx, a.field, el.Namespace, el.Name)
	case c.ClusterNAD != nil:
		a.list, a.resource, a.Network, err = r.namedNetwork(ctx, a.field, c.ClusterNetwork, *c.ClusterNAD)
	case len(c.Delegates) > 0:
		a.field = "delegates[0]"
		a.list, err = delegate.FromBytes(c.FirstDelegate(), "", a.field)
	default:
		a.list, err = masterFromPath(c.ClusterNetwork)
	}
	if err != nil {
		return nil, err
	}
	if a.Network == "" {
		a.Network = a.list.Name
	}
	a.Config = a.list.Bytes
	a.CapabilityArgs = c.RuntimeConfig
	return a, nil
}

// masterFromPath loads the cluster network from a conf file, or from the first conf of a directory that is
// not braid's own (so braid's conf may live in the same directory).
func masterFromPath(p string) (*libcni.NetworkConfigList, error) {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cluster network %s does not exist (yet): %w", p, errTryAgain)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster network %s: %w", p, err)
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("cluster network: %w", err)
		}
		list, err := delegate.FromBytes(b, "", p)
		if err != nil {
			return nil, err
		}
		if self := braidIn(list); self != "" {
			return nil, fmt.Errorf("cluster network %s is braid's own conf (%s), which would call itself without end; "+
				"clusterNetwork must name the cluster network's conf: %w", p, self, delegate.ErrConfig)
		}
		return list, nil
	}
	files, err := libcni.ConfFiles(p, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("cluster network directory %s: %w", p, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// Like the runtime, skip files that do not load; and, as Multus skips its own, never pick braid's conf
		// (00-braid.conflist, of type braid or, with the node daemon, braid-shim).
		if list, err := delegate.FromBytes(b, "", f); err == nil && braidIn(list) == "" {
			return list, nil
		}
	}
	return nil, fmt.Errorf("no cluster network conf in %s yet: %w", p, errTryAgain)
}

// braidIn names the plugin of list that is braid itself (type braid, or braid-shim, which hands the call to
// braid's node daemon), or returns "" when there is none.
func braidIn(list *libcni.NetworkConfigList) string {
	i, t := delegate.FindType(list, conf.IsBraid)
	if i < 0 {
		return ""
	}
	return fmt.Sprintf("plugins[%d] is of type %q", i, t)
}
