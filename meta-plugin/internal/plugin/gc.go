package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
)

// GC (CNI 1.1) removes every attachment of containers that are not in the runtime's list of valid
// attachments of braid's network, then collects each delegate network with libcni: stale cached attachments
// are deleted, and the network's plugins get the attachments that stay valid.
//
// The runtime's list names containers braid may not know: pods a previous meta-plugin (Multus) attached
// before braid replaced it. The cluster network's valid attachments are the runtime's own (braid attaches it
// on the runtime's interface), so its plugins hear of them all. A NAD's attachments of such a pod cannot be
// known, so while the runtime lists one, NAD networks get no plugin GC, which would free what the pod uses.
func (p *Plugin) GC(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	if c.ValidAttachments == nil {
		// Without the list every attachment would count as stale; an empty list is the runtime saying so.
		return fmt.Errorf("GC without cni.dev/valid-attachments: refusing to remove every attachment: %w", conf.ErrInvalid)
	}
	valid := map[string]bool{}
	for _, va := range c.ValidAttachments {
		valid[va.ContainerID] = true
	}
	keep := gcKeep{}
	masters := map[string]bool{} // names of the cluster network, now and in records
	recorded, errs := p.gcContainers(ctx, c, args, log, valid, keep, masters)
	var unknown []string // valid containers braid has no record of
	for id := range valid {
		if !recorded[id] {
			unknown = append(unknown, id)
		}
	}
	slices.Sort(unknown)

	e, err := p.newEnv(c, args, log)
	if err != nil {
		return err
	}
	cached, err := e.cni.GetCachedAttachments("")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	youngRecords(recordStore(c), cached, valid, log)
	confs := gcConfs{} // network name -> the confs it was added with (two NADs' confs may carry one name)
	for _, ca := range cached {
		if valid[ca.ContainerID] {
			keep.add(ca.Network, ca.ContainerID, ca.IfName)
		}
		if list, err := cachedConf(ca); err == nil {
			confs.add(list)
		}
	}
	if kube, err := p.kube(e); err == nil {
		if m, err := newResolver(e, kube).master(ctx, nil); err == nil {
			masters[m.list.Name] = true
			confs.add(m.list)
		}
	}
	for name := range masters {
		for _, va := range c.ValidAttachments {
			keep.add(name, va.ContainerID, va.IfName)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(confs)) {
		// Each stale attachment goes with the conf it was added with; one whose DEL failed stays, its resources
		// kept from the plugins' GC too, for the next GC to try again.
		failed, delErrs := deleteStale(ctx, e, n, cached, valid)
		errs = append(errs, delErrs...)
		if !masters[n] && len(unknown) > 0 {
			log.Warn("network's plugins not garbage-collected: running containers braid did not attach may use it",
				"network", n, "containers", unknown)
			continue
		}
		keepYoungRecords(recordStore(c), keep, valid, log)
		for _, a := range failed {
			keep.add(n, a.ContainerID, a.IfName)
		}
		for _, list := range confs[n] {
			if err := p.pluginsGC(ctx, e, list, keep[n]); err != nil {
				errs = append(errs, fmt.Errorf("gc network %s: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// pluginsGC tells the plugins of list which of the network's attachments stay valid (CNI 1.1 GC). It runs
// libcni's GCNetworkList with a cache directory that holds no attachments: given braid's, GCNetworkList reads
// the cache once more and deletes every attachment of the network not in valid, and by then that includes the
// attachments of a container whose ADD ran after GC read the cache (deleteStale has deleted the stale ones,
// each with its own conf).
func (p *Plugin) pluginsGC(ctx context.Context, e *env, list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	cni := libcni.NewCNIConfigWithCacheDir(e.cni.Path, filepath.Join(e.c.CNIDir, "no-attachments"), p.deps.Exec)
	return cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
}

// gcConfs is the distinct confs of each network name.
type gcConfs map[string][]*libcni.NetworkConfigList

func (g gcConfs) add(list *libcni.NetworkConfigList) {
	if !slices.ContainsFunc(g[list.Name], func(l *libcni.NetworkConfigList) bool { return bytes.Equal(l.Bytes, list.Bytes) }) {
		g[list.Name] = append(g[list.Name], list)
	}
}

// gcContainers goes through braid's records: containers that are not valid are removed as DEL removes them;
// the attachments of valid ones are kept, and the names of the cluster network noted. It returns the
// containers it has records of.
func (p *Plugin) gcContainers(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger, valid map[string]bool,
	keep gcKeep, masters map[string]bool) (map[string]bool, []error) {
	recorded := map[string]bool{}
	store := recordStore(c)
	cutoff := time.Now().Add(-gcGrace)
	var errs []error
	if err := store.RemoveLeftovers(cutoff); err != nil {
		errs = append(errs, err)
	}
	ids, err := store.List()
	if err != nil {
		return recorded, append(errs, err)
	}
	for _, id := range ids {
		gcArgs := *args
		gcArgs.ContainerID = id
		e, err := p.newEnv(c, &gcArgs, log)
		if err != nil {
			return recorded, append(errs, err)
		}
		rec, err := e.rec.Load(id)
		switch {
		case err != nil && valid[id]:
			errs = append(errs, err)
			continue
		case err != nil:
			// An unreadable record of a stale container goes as DEL copes with one: rebuilt from libcni's
			// cache (which knows the netns and CNI_ARGS) and the pod, and removed once all is deleted.
			log.Warn("attachment record unreadable; removing the container from the caches", "gc", id, "err", err)
			p.argsFromCache(ctx, e, &gcArgs)
			if err := p.gcDel(ctx, c, &gcArgs, log.With("gc", id)); err != nil {
				errs = append(errs, fmt.Errorf("gc container %s: %w", id, err))
			}
			continue
		case rec == nil:
			continue // deleted meanwhile
		}
		recorded[id] = true
		if at, recent := addedSince(store, id, cutoff); !valid[id] && recent {
			log.Info("container not in the valid list left for a later GC: its record is recent", "gc", id, "written", at)
			valid[id] = true
		}
		for _, ca := range rec.Attachments {
			if list, err := libcni.ConfListFromBytes(ca.Config); err == nil {
				if ca.Master {
					masters[list.Name] = true
				}
				if valid[id] {
					keep.add(list.Name, id, ca.IfName)
				}
			}
		}
		if valid[id] {
			continue
		}
		gcArgs.Netns, gcArgs.Args = rec.NetNS, rec.CNIArgs
		if len(rec.Attachments) > 0 && rec.Attachments[0].Master {
			gcArgs.IfName = rec.Attachments[0].IfName
		}
		if err := p.gcDel(ctx, c, &gcArgs, log.With("gc", id)); err != nil {
			errs = append(errs, fmt.Errorf("gc container %s: %w", id, err))
		}
	}
	return recorded, errs
}

// youngRecords makes valid the cached containers that got a record younger than gcGrace after gcContainers
// listed the records: their ADD ran meanwhile (it saves the record before any network runs, so a cached
// attachment read here has its record by now), and they are as young as those gcContainers keeps.
func youngRecords(store cache.Store, cached []*libcni.NetworkAttachment, valid map[string]bool, log *slog.Logger) {
	cutoff := time.Now().Add(-gcGrace)
	for _, ca := range cached {
		id := ca.ContainerID
		if valid[id] {
			continue
		}
		if at, recent := addedSince(store, id, cutoff); recent {
			log.Info("container added during GC left for a later GC", "gc", id, "written", at)
			valid[id] = true
		}
	}
}

// keepYoungRecords makes valid, and keeps every attachment of, the containers with a record younger than gcGrace
// that are not valid yet. Their ADD may be running: it saves the record before the first plugin runs, and
// libcni caches a network's result only once its plugins are done, so for now only the record knows what the
// plugins are setting up, which their GC must not free. It runs just before the plugins' GC, to leave as short
// a window as it can.
func keepYoungRecords(store cache.Store, keep gcKeep, valid map[string]bool, log *slog.Logger) {
	ids, err := store.List()
	if err != nil {
		log.Warn("attachment records unreadable; containers added during GC may be missing from the plugins' GC", "err", err)
		return
	}
	cutoff := time.Now().Add(-gcGrace)
	for _, id := range ids {
		if valid[id] {
			continue
		}
		at, recent := addedSince(store, id, cutoff)
		if !recent {
			continue
		}
		rec, err := store.Load(id)
		if err != nil || rec == nil {
			continue // half a record is never seen (Save renames); a deleted one was deleted by its DEL
		}
		log.Info("container added during GC left for a later GC", "gc", id, "written", at)
		valid[id] = true
		for _, ca := range rec.Attachments {
			if list, err := libcni.ConfListFromBytes(ca.Config); err == nil {
				keep.add(list.Name, id, ca.IfName)
			}
		}
	}
}

// addedSince reports whether container id's record was written after cutoff, and when: its ADD may be
// running, after the runtime took its list, so it is valid for this GC and stale for a later one.
func addedSince(store cache.Store, id string, cutoff time.Time) (time.Time, bool) {
	at, err := store.Written(id)
	return at, err == nil && at.After(cutoff)
}

// gcKeep is the valid attachments of each network, by network name, without repeats.
type gcKeep map[string][]types.GCAttachment

func (k gcKeep) add(network, containerID, ifName string) {
	a := types.GCAttachment{ContainerID: containerID, IfName: ifName}
	if !slices.Contains(k[network], a) {
		k[network] = append(k[network], a)
	}
}

// deleteStale deletes the cached attachments of the network that are not valid, each with the conf it was added
// with (as libcni's GC does with one conf for them all), and the device-info copy braid made for each (as DEL
// does), and returns those whose DEL failed.
func deleteStale(ctx context.Context, e *env, network string, cached []*libcni.NetworkAttachment,
	valid map[string]bool) ([]*libcni.NetworkAttachment, []error) {
	var failed []*libcni.NetworkAttachment
	var errs []error
	for _, ca := range cached {
		if ca.Network != network || valid[ca.ContainerID] {
			continue
		}
		list, err := cachedConf(ca)
		if err == nil {
			rt := &libcni.RuntimeConf{ContainerID: ca.ContainerID, NetNS: ca.NetNS, IfName: ca.IfName, Args: ca.CniArgs, CapabilityArgs: ca.CapabilityArgs}
			err = e.cni.DelNetworkList(ctx, list, rt)
		}
		if err != nil {
			failed = append(failed, ca)
			errs = append(errs, fmt.Errorf("gc network %s: delete stale attachment %s %s: %w", network, ca.ContainerID, ca.IfName, err))
			continue
		}
		// plan gives every extra network this path; the cluster network's attachment has none, which is fine.
		if err := e.dev.Remove(e.dev.CNIPath(ca.Network, ca.ContainerID, ca.IfName)); err != nil {
			errs = append(errs, fmt.Errorf("gc network %s: stale attachment %s %s: %w", network, ca.ContainerID, ca.IfName, err))
		}
	}
	return failed, errs
}

// cachedConf is the conf a cached attachment was added with (a conf list, or a single plugin's conf as an
// older libcni cached it, named by the network when it has no name).
func cachedConf(ca *libcni.NetworkAttachment) (*libcni.NetworkConfigList, error) {
	return delegate.FromBytes(ca.Config, ca.Network, fmt.Sprintf("cached conf of %s %s", ca.ContainerID, ca.IfName))
}

// gcDel removes a stale container as DEL does, once no call of the container runs (see serialized).
func (p *Plugin) gcDel(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	return p.serialized(ctx, "DEL", args.ContainerID, func() error { return p.Del(ctx, c, args, log) })
}

// gcGrace is how old a container's record must be for GC to remove the container: the runtime's list of valid
// attachments is taken before GC runs, so a container whose ADD runs meanwhile is missing from it. An ADD
// ends within the runtime's timeout (braid-shim's is 110 s).
const gcGrace = 2 * time.Minute
