package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/meta-plugin/internal/conf"
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
	lists := map[string]*libcni.NetworkConfigList{}
	for _, ca := range cached {
		if valid[ca.ContainerID] {
			keep.add(ca.Network, ca.ContainerID, ca.IfName)
		}
		if _, ok := lists[ca.Network]; !ok {
			if list, err := libcni.ConfListFromBytes(ca.Config); err == nil {
				lists[ca.Network] = list
			}
		}
	}
	if kube, err := p.kube(e); err == nil {
		if m, err := newResolver(e, kube).master(ctx, nil); err == nil {
			masters[m.list.Name] = true
			if _, ok := lists[m.list.Name]; !ok {
				lists[m.list.Name] = m.list
			}
		}
	}
	for name := range masters {
		for _, va := range c.ValidAttachments {
			keep.add(name, va.ContainerID, va.IfName)
		}
	}
	names := make([]string, 0, len(lists))
	for n := range lists {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !masters[n] && len(unknown) > 0 {
			log.Warn("network's plugins not garbage-collected: running containers braid did not attach may use it",
				"network", n, "containers", unknown)
			errs = append(errs, deleteStale(ctx, e.cni, lists[n], cached, valid)...)
			continue
		}
		if err := e.cni.GCNetworkList(ctx, lists[n], &libcni.GCArgs{ValidAttachments: keep[n]}); err != nil {
			errs = append(errs, fmt.Errorf("gc network %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
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
		if at, err := store.Written(id); !valid[id] && err == nil && at.After(cutoff) {
			// Its ADD may be running, after the runtime took its list: valid for this GC, stale for a later one.
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

// gcKeep is the valid attachments of each network, by network name, without repeats.
type gcKeep map[string][]types.GCAttachment

func (k gcKeep) add(network, containerID, ifName string) {
	a := types.GCAttachment{ContainerID: containerID, IfName: ifName}
	if !slices.Contains(k[network], a) {
		k[network] = append(k[network], a)
	}
}

// deleteStale is the first half of libcni's GC of a network: a DEL of each cached attachment of a container
// that is not valid.
func deleteStale(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, cached []*libcni.NetworkAttachment,
	valid map[string]bool) []error {
	var errs []error
	for _, ca := range cached {
		if ca.Network != list.Name || valid[ca.ContainerID] {
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: ca.ContainerID, NetNS: ca.NetNS, IfName: ca.IfName, Args: ca.CniArgs, CapabilityArgs: ca.CapabilityArgs}
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("gc network %s: delete stale attachment %s %s: %w", list.Name, ca.ContainerID, ca.IfName, err))
		}
	}
	return errs
}

// gcDel removes a stale container as DEL does, once no call of the container runs (see serialized).
func (p *Plugin) gcDel(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	return p.serialized(ctx, "DEL", args.ContainerID, func() error { return p.Del(ctx, c, args, log) })
}

// gcGrace is how old a container's record must be for GC to remove the container: the runtime's list of valid
// attachments is taken before GC runs, so a container whose ADD runs meanwhile is missing from it. An ADD
// ends within the runtime's timeout (braid-shim's is 110 s).
const gcGrace = 2 * time.Minute
