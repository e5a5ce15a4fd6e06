// Package installer is the entry point of braid's node DaemonSet (`braid install`): it copies braid's binaries
// into the host's CNI bin dir, waits for the cluster network's CNI conf, writes braid's conf first in the conf
// dir pointing at it, writes a kubeconfig for braid on the node and keeps its token current, and removes braid's
// conf on exit when asked.
//
// The kubeconfig does not embed the ServiceAccount token; it names a token file on the host that the installer
// rewrites whenever the kubelet rotates the projected token. Multus embedded the token, so its kubeconfig
// stopped working when bound tokens expired; here the kubeconfig never goes stale.
package installer

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/braid-cni/braid/meta-plugin/internal/conf"
)

// NetworkName is the name of braid's conf list.
const NetworkName = "braid-cni-network"

// BuildConf renders braid's conflist for the cluster network in masterFile (as the host sees it). It takes the
// master's cniVersion, so the runtime and the master agree on result versions, and the union of the master's
// capabilities, so the runtime hands braid the runtimeConfig (port mappings, bandwidth, ...) that braid passes
// on to the master. extra holds further keys of braid's plugin conf (cniDir, logFile, namespaceIsolation, ...).
func BuildConf(masterFile string, master *libcni.NetworkConfigList, kubeconfig string, extra map[string]any) ([]byte, error) {
	caps := map[string]bool{}
	for _, p := range master.Plugins {
		for c, on := range p.Network.Capabilities {
			if on {
				caps[c] = true
			}
		}
	}
	plugin := map[string]any{}
	maps.Copy(plugin, extra)
	plugin["type"] = conf.PluginType
	if _, ok := extra["daemonSocket"]; ok {
		plugin["type"] = conf.ShimType // braid-shim hands every call to braid's node daemon
	}
	plugin["clusterNetwork"] = masterFile
	if kubeconfig != "" {
		plugin["kubeconfig"] = kubeconfig
	}
	if len(caps) > 0 {
		plugin["capabilities"] = caps
	}
	list := map[string]any{"cniVersion": master.CNIVersion, "name": NetworkName, "plugins": []any{plugin}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("braid conf: %w", err)
	}
	// What braid will read must parse, so a bad extra key fails here, in the DaemonSet's log, and not in every
	// pod's sandbox creation.
	probe := map[string]any{}
	maps.Copy(probe, plugin)
	probe["cniVersion"], probe["name"] = master.CNIVersion, NetworkName
	pb, err := json.Marshal(probe)
	if err != nil {
		return nil, fmt.Errorf("braid conf: %w", err)
	}
	if _, err := conf.Parse(pb); err != nil {
		return nil, fmt.Errorf("braid conf: %w", err)
	}
	return append(b, '\n'), nil
}

// Kubeconfig renders a kubeconfig that reaches server with the CA and reads its bearer token from tokenFile
// on every use.
func Kubeconfig(server string, ca []byte, tokenFile string) ([]byte, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos["braid"] = &clientcmdapi.AuthInfo{TokenFile: tokenFile}
	kc.Contexts["braid"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "braid"}
	kc.CurrentContext = "braid"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return b, nil
}

// HostPath translates a path inside the installer's container (under a mount of hostDir at mountDir) to the
// path the host, and so the runtime and braid, sees.
func HostPath(mountDir, hostDir, p string) string {
	rel, err := filepath.Rel(mountDir, p)
	if err != nil || rel == ".." || len(rel) > 2 && rel[:3] == "../" {
		return p
	}
	return filepath.Join(hostDir, rel)
}
