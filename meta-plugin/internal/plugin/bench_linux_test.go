package plugin

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/crds/testenv"
)

// TestBenchMeta is `make bench-meta`: ADD and DEL of a pod with eth0 and two extra networks, many times, in
// real network namespaces, with the real reference plugins and a real kube-apiserver, in both of braid's
// modes, one after the other in one run:
//
//   - daemon (the `BENCH meta` line; what deploy/ installs): the runtime's call is the real braid-shim binary,
//     exec'd per call, which hands it to braid's node daemon (running in the test process). ADD counts from the
//     shim's exec to its exit; overhead is that minus the time the daemon spent executing delegates. API calls
//     count every request from the ADD until its network-status write has landed.
//   - plain (the `BENCH-INFO meta-plain` line): braid runs in-process, building its API client per call, so
//     the cost of exec'ing braid itself (reported as braid_exec_ms) is not in its numbers.
//
// It runs only with BRAID_BENCH=1; BRAID_BENCH_N sets the number of iterations.
func TestBenchMeta(t *testing.T) {
	if os.Getenv("BRAID_BENCH") != "1" {
		t.Skip("benchmark: set BRAID_BENCH=1 (make bench-meta)")
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("BRAID_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	level := "error"
	if os.Getenv("BRAID_BENCH_DEBUG") == "1" {
		level = "debug"
	}

	r := newRig(t, "1.0.0")
	r.plugin.deps.Stderr = nil
	r.plugin.deps.Stdout = devNull(t)
	r.setConf(map[string]any{"logLevel": level})
	p := benchPod(r)
	plain := benchLoop(t, r, p, n,
		func(args *skel.CmdArgs) error { return r.plugin.CmdAdd(args) },
		func(args *skel.CmdArgs) error { return r.plugin.CmdDel(args) },
		func() {})
	start, err := execCost()
	if err != nil {
		t.Fatal(err)
	}

	steal := testenv.StartSteal()
	dr := newDaemonRig(t, "1.0.0")
	dr.setConf(map[string]any{"logLevel": level, "type": "braid-shim", "daemonSocket": dr.socket})
	dp := benchPod(dr.rig)
	var handled []time.Duration // per ADD, the daemon's time in the plugin
	waitCached(t, dr, dp)
	thick := benchLoop(t, dr.rig, dp, n,
		func(args *skel.CmdArgs) error {
			dr.handled.Store(0)
			_, err := dr.call("ADD", args)
			handled = append(handled, time.Duration(dr.handled.Load()))
			return err
		},
		func(args *skel.CmdArgs) error { _, err := dr.call("DEL", args); return err },
		func() {
			for dr.d.Status.Pending() > 0 {
				time.Sleep(200 * time.Microsecond)
			}
		})

	fmt.Printf("BENCH-INFO meta-plain iterations=%d add_p50_ms=%.2f add_p99_ms=%.2f overhead_p50_ms=%.2f overhead_p99_ms=%.2f api_calls_per_add=%.1f braid_exec_ms=%.2f\n",
		len(plain.add), ms(pct(plain.add, 50)), ms(pct(plain.add, 99)), ms(pct(plain.overhead, 50)), ms(pct(plain.overhead, 99)), plain.callsPerAdd(), ms(start))
	var version []time.Duration // the shim's exec alone: VERSION is answered without the daemon
	for range 50 {
		start := time.Now()
		if _, err := dr.call("VERSION", dr.args(dp)); err != nil {
			t.Fatal(err)
		}
		version = append(version, time.Since(start))
	}
	handled = handled[5:] // warm-up
	inDaemon, viaShim := make([]time.Duration, len(handled)), make([]time.Duration, len(handled))
	for i, h := range handled {
		inDaemon[i], viaShim[i] = h-thick.busy[i], thick.add[i]-h
	}
	fmt.Printf("BENCH-INFO meta iterations=%d overhead_p99_ms=%.2f del_p50_ms=%.2f del_p99_ms=%.2f delegates_p50_ms=%.2f daemon_p50_ms=%.2f shim_p50_ms=%.2f shim_exec_ms=%.2f steal_pct=%.1f\n",
		len(thick.add), ms(pct(thick.overhead, 99)), ms(pct(thick.del, 50)), ms(pct(thick.del, 99)), ms(pct(thick.busy, 50)),
		ms(pct(inDaemon, 50)), ms(pct(viaShim, 50)), ms(pct(version, 50)), steal.Percent())
	fmt.Printf("BENCH meta add_p50_ms=%.2f add_p99_ms=%.2f overhead_p50_ms=%.2f api_calls_per_add=%.1f\n",
		ms(pct(thick.add, 50)), ms(pct(thick.add, 99)), ms(pct(thick.overhead, 50)), thick.callsPerAdd())
}

// benchPod is the benchmark's pod: eth0 and two macvlan networks with host-local IPAM.
func benchPod(r *rig) *pod {
	r.nad("net-a", r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""), nil)
	r.nad("net-c", r.macvlanConf(r.hostLocal("192.0.2.0/24", "192.0.2.10", "192.0.2.99", "192.0.2.1"), ""), nil)
	return r.pod("bench", map[string]string{selection.NetworksAnnotation: "net-a,net-c"})
}

type benchRun struct {
	add, overhead, busy, del []time.Duration
	calls                    int64
}

func (b benchRun) callsPerAdd() float64 { return float64(b.calls) / float64(len(b.add)) }

// benchLoop runs ADD and DEL n times (after 5 of warm-up: page cache, the API server's first requests).
// settle waits for what an ADD leaves running (the daemon's status write), which counts in its API calls.
func benchLoop(t *testing.T, r *rig, p *pod, n int, add, del func(*skel.CmdArgs) error, settle func()) benchRun {
	var b benchRun
	for i := range n + 5 {
		p.containerID = fmt.Sprintf("bench%08d", i)
		args := r.args(p)
		r.exec.reset()
		r.apiCalls.Store(0)
		var d time.Duration
		err := r.hostNS.Do(func(ns.NetNS) error {
			start := time.Now()
			err := add(args)
			d = time.Since(start)
			return err
		})
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		_, busy := r.exec.reset()
		settle()
		c := r.apiCalls.Load()
		var dd time.Duration
		err = r.hostNS.Do(func(ns.NetNS) error {
			start := time.Now()
			err := del(args)
			dd = time.Since(start)
			return err
		})
		if err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		if i < 5 {
			continue
		}
		b.add, b.overhead, b.busy, b.del = append(b.add, d), append(b.overhead, d-busy), append(b.busy, busy), append(b.del, dd)
		b.calls += c
	}
	if ls := links(t, p.netns); len(ls) != 0 {
		t.Fatalf("interfaces left after the last DEL: %v", keys(ls))
	}
	return b
}

// execCost is the median time to exec the braid binary (BRAID_BIN) for VERSION: process start and
// initialisation, the part of a real CNI call that an in-process benchmark does not see.
func execCost() (time.Duration, error) {
	bin := os.Getenv("BRAID_BIN")
	if bin == "" {
		return 0, nil
	}
	var ds []time.Duration
	for range 20 {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s VERSION: %w: %s", bin, err, out)
		}
		ds = append(ds, time.Since(start))
	}
	return pct(ds, 50), nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func devNull(t *testing.T) *os.File {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
