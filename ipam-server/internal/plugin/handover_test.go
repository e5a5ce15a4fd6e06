package plugin_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// TestStatusHandsTheWholeStdinToTheAPIPart: braid-ipam hands STATUS, with its stdin, to braid-ipam-api. A conf
// larger than a pipe holds (256 KiB) arrives whole: the pool named after the padding is found.
func TestStatusHandsTheWholeStdinToTheAPIPart(t *testing.T) {
	pool := mkPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"})
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"big","padding":%q,"ipam":{"type":"braid-ipam","pools":[%q],"kubeconfig":%q}}`,
		strings.Repeat("x", 256<<10), pool, kubeconfig)
	if out, err := runIPAM(t, filepath.Join(binDir, "braid-ipam"), "STATUS", conf); err != nil {
		t.Fatalf("STATUS with a 256 KiB conf: %v: %s", err, out)
	}
}

// TestWithoutTheAPIPartTheErrorSaysWhatToInstall: a node where braid-ipam runs without braid-ipam-api beside it
// (a partial install) and without braid's node daemon fails ADD with code 11 and STATUS with code 50 (plugin
// not available), naming the binary and both fixes.
func TestWithoutTheAPIPartTheErrorSaysWhatToInstall(t *testing.T) {
	alone := t.TempDir()
	b, err := os.ReadFile(filepath.Join(binDir, "braid-ipam"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(alone, "braid-ipam"), b, 0o755))
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"braid-ipam","pools":["p"],"kubeconfig":%q,"daemonSocket":"/nonexistent/braid.sock"}}`, kubeconfig)
	for command, code := range map[string]uint{"ADD": types.ErrTryAgainLater, "STATUS": types.ErrPluginNotAvailable} {
		out, err := runIPAM(t, filepath.Join(alone, "braid-ipam"), command, conf)
		var cniErr types.Error
		if err == nil || json.Unmarshal(out, &cniErr) != nil {
			t.Fatalf("%s without braid-ipam-api: %v: %s; want a CNI error", command, err, out)
		}
		if cniErr.Code != code || !strings.Contains(cniErr.Msg, "braid-ipam-api") ||
			!strings.Contains(cniErr.Msg, "install it beside braid-ipam") || !strings.Contains(cniErr.Msg, "for ADD, run braid's node daemon") {
			t.Errorf("%s without braid-ipam-api: %+v; want code %d naming braid-ipam-api and both fixes", command, cniErr, code)
		}
	}
}

// runIPAM execs a braid-ipam binary as a runtime does, with CNI_PATH empty of braid-ipam-api unless it is binDir.
func runIPAM(t *testing.T, bin, command, conf string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID=x", "CNI_NETNS=/nonexistent", "CNI_IFNAME=net1",
		"CNI_PATH="+filepath.Dir(bin), "CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME=b")
	cmd.Stdin = strings.NewReader(conf)
	return cmd.Output()
}
