package plugin

import (
	"fmt"
	"testing"

	"github.com/braid-cni/braid/crds/selection"
)

// BenchmarkAddDel is braid's own work in an ADD and a DEL of a pod with the cluster network and two extra
// networks, with delegates that answer at once (fakeExec) and an in-memory API (fakeKube): conf parsing,
// planning, libcni's config building and result cache, braid's record and the network-status. `make
// bench-meta` runs the same with real delegates, a real API server and the daemon behind braid-shim.
func BenchmarkAddDel(b *testing.B) {
	p, k, _, args := fakeWorld(b)
	k.pods["app/web"].Annotations[selection.NetworksAnnotation] = "a,b"
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		args.ContainerID = fmt.Sprintf("bench%08d", i)
		i++
		if err := p.CmdAdd(args); err != nil {
			b.Fatal(err)
		}
		if err := p.CmdDel(args); err != nil {
			b.Fatal(err)
		}
	}
}
