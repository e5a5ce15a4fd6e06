package plugin_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// TestStatus runs braid-ipam's STATUS (CNI 1.1) the way a runtime does: it succeeds when the API server
// answers and every pool the conf names exists, and otherwise fails with code 50 naming what is missing.
func TestStatus(t *testing.T) {
	pool := mkPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"})
	if err := status(t, pool); err != nil {
		t.Fatalf("STATUS with pool %s: %v", pool, err)
	}
	err := status(t, pool, "no-such-pool")
	if err == nil || err.Code != types.ErrPluginNotAvailable || !strings.Contains(err.Msg, `ipam.pools: IPPool "no-such-pool" does not exist`) {
		t.Fatalf("STATUS with a missing pool: %+v, want code %d naming ipam.pools and the pool", err, types.ErrPluginNotAvailable)
	}
}

// status execs braid-ipam STATUS and returns the CNI error it printed, if any.
func status(t *testing.T, pools ...string) *types.Error {
	t.Helper()
	conf := netConf("1.1.0", "status", "lo", pools...)
	cmd := exec.Command(filepath.Join(binDir, "braid-ipam"))
	cmd.Env = append(os.Environ(), "CNI_COMMAND=STATUS", "CNI_PATH="+binDir)
	cmd.Stdin = strings.NewReader(conf)
	out, err := cmd.Output()
	if err == nil {
		return nil
	}
	var e types.Error
	if jerr := json.Unmarshal(out, &e); jerr != nil {
		t.Fatalf("STATUS failed without a CNI error: %v: %s", err, out)
	}
	return &e
}
