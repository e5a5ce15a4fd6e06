package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/crds/selection"
)

// TestBraidNeverDelegatesToItself: a network whose config is braid's own, as "braid" or as "braid-shim" (which
// hands the call to braid's node daemon, so the daemon would call itself without end), is refused with an
// error naming the NAD or file and the plugin; a cluster network directory's braid confs are passed over.
func TestBraidNeverDelegatesToItself(t *testing.T) {
	const shim = `{"cniVersion":"1.0.0","name":"braid-cni-network","plugins":[{"type":"braid-shim","daemonSocket":"/run/braid/braid.sock",
		"clusterNetwork":"/etc/cni/net.d"}]}`
	for _, tc := range []struct {
		name, nad string // the pod's only extra network, a NAD of that spec.config
		cluster   string // a conf file for clusterNetwork
		want      []string
	}{
		{name: "NAD of type braid-shim", nad: `{"cniVersion":"1.0.0","type":"braid-shim","daemonSocket":"/run/braid/braid.sock"}`,
			want: []string{"networks[0]: network-attachment-definition <ns>/loop delegates to braid itself", `plugins[0] is of type "braid-shim"`}},
		{name: "braid-shim inside a NAD's conflist", nad: `{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","master":"mvpar0"},{"type":"braid-shim"}]}`,
			want: []string{"networks[0]: network-attachment-definition <ns>/loop delegates to braid itself", `plugins[1] is of type "braid-shim"`}},
		{name: "cluster network file of type braid-shim", cluster: shim,
			want: []string{"cluster network <file> is braid's own conf", `plugins[0] is of type "braid-shim"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "1.0.0")
			ann := map[string]string{}
			if tc.nad != "" {
				r.nad("loop", tc.nad, nil)
				ann[selection.NetworksAnnotation] = "loop"
			}
			file := filepath.Join(r.dir, "00-braid.conflist")
			if tc.cluster != "" {
				r.writeFile(file, tc.cluster)
				r.setConf(map[string]any{"clusterNetwork": file})
			}
			p := r.pod("self", ann)
			r.exec.reset()
			_, err := r.add(p)
			if cniCode(err) != CodeNetwork {
				t.Fatalf("ADD = %v, want code %d", err, CodeNetwork)
			}
			for _, w := range tc.want {
				w = strings.NewReplacer("<ns>", r.ns, "<file>", file).Replace(w)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ADD error %q does not say %q", err, w)
				}
			}
			for _, c := range mustCalls(r) {
				if c.plugin == "braid-shim" || c.plugin == "braid" {
					t.Errorf("braid ran itself: %+v", c)
				}
			}
			r.assertGone(p)
		})
	}

	// A cluster network directory: braid's own conf (as the installer writes it with the node daemon) sorts
	// first and is passed over, as Multus passes over its own; the cluster network's conf is used.
	t.Run("cluster network directory", func(t *testing.T) {
		r := newRig(t, "1.0.0")
		dir := filepath.Join(r.dir, "cluster.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cbr0, err := os.ReadFile(r.confPath)
		if err != nil {
			t.Fatal(err)
		}
		r.writeFile(filepath.Join(dir, "00-braid.conflist"), shim)
		r.writeFile(filepath.Join(dir, "01-braid.conf"), `{"cniVersion":"1.0.0","name":"old-braid","type":"braid","clusterNetwork":"/etc/cni/net.d"}`)
		r.writeFile(filepath.Join(dir, "10-cbr0.conflist"), string(cbr0))
		r.setConf(map[string]any{"clusterNetwork": dir})
		p := r.pod("dir", nil)
		r.exec.reset()
		if _, err := r.add(p); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		var ran []string
		for _, c := range mustCalls(r) {
			ran = append(ran, c.command+" "+c.plugin)
		}
		if want := []string{"ADD bridge"}; !cmp.Equal(ran, want) {
			t.Errorf("delegates run = %v, want %v (the cluster network's, not braid's own conf)", ran, want)
		}
		if sts := r.status(p); len(sts) != 1 || sts[0].Name != "cbr0" {
			t.Errorf("network-status = %+v, want eth0 on cbr0", sts)
		}
		if err := r.del(p); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		r.assertGone(p)
	})
}

func mustCalls(r *rig) []execCall {
	calls, _ := r.exec.reset()
	return calls
}
