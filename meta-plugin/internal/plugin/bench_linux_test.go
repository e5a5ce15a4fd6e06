package plugin

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/braid-cni/braid/crds/selection"
)

// TestBenchMeta is `make bench-meta`: ADD and DEL of a pod with eth0 and two extra networks, many times, in
// real network namespaces, with the real reference plugins and a real kube-apiserver. It measures what the
// runtime waits for: ADD end to end (braid's API client set-up, the API calls, the delegates, the
// network-status write) and, as braid's overhead, that time minus the time spent executing delegates. braid
// runs in-process here, so the cost of exec'ing braid itself (a few ms, reported on the BENCH-INFO line) is
// not in the numbers. It runs only with BRAID_BENCH=1; BRAID_BENCH_N sets the number of iterations.
func TestBenchMeta(t *testing.T) {
	if os.Getenv("BRAID_BENCH") != "1" {
		t.Skip("benchmark: set BRAID_BENCH=1 (make bench-meta)")
	}
	n := 200
	if v, err := strconv.Atoi(os.Getenv("BRAID_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	r := newRig(t, "1.0.0")
	r.plugin.deps.Stderr = nil
	level := "error"
	if os.Getenv("BRAID_BENCH_DEBUG") == "1" {
		level = "debug"
	}
	r.setConf(map[string]any{"logLevel": level})
	r.nad("net-a", r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""), nil)
	r.nad("net-c", r.macvlanConf(r.hostLocal("192.0.2.0/24", "192.0.2.10", "192.0.2.99", "192.0.2.1"), ""), nil)
	p := r.pod("bench", map[string]string{selection.NetworksAnnotation: "net-a,net-c"})
	r.plugin.deps.Stdout = devNull(t)

	var add, overhead, del []time.Duration
	var calls int64
	for i := range n + 5 {
		p.containerID = fmt.Sprintf("bench%08d", i)
		args := r.args(p)
		r.exec.reset()
		r.apiCalls.Store(0)
		var d time.Duration
		err := r.hostNS.Do(func(ns.NetNS) error {
			start := time.Now()
			err := r.plugin.CmdAdd(args)
			d = time.Since(start)
			return err
		})
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		_, busy := r.exec.reset()
		c := r.apiCalls.Load()
		var dd time.Duration
		err = r.hostNS.Do(func(ns.NetNS) error {
			start := time.Now()
			err := r.plugin.CmdDel(args)
			dd = time.Since(start)
			return err
		})
		if err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		if i < 5 {
			continue // warm-up: page cache, the API server's first requests
		}
		add, overhead, del = append(add, d), append(overhead, d-busy), append(del, dd)
		calls += c
	}
	if ls := links(t, p.netns); len(ls) != 0 {
		t.Fatalf("interfaces left after the last DEL: %v", keys(ls))
	}
	start, err := execCost()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH-INFO meta iterations=%d overhead_p99_ms=%.2f del_p50_ms=%.2f del_p99_ms=%.2f braid_exec_ms=%.2f\n",
		len(add), ms(pct(overhead, 99)), ms(pct(del, 50)), ms(pct(del, 99)), ms(start))
	fmt.Printf("BENCH meta add_p50_ms=%.2f add_p99_ms=%.2f overhead_p50_ms=%.2f api_calls_per_add=%.1f\n",
		ms(pct(add, 50)), ms(pct(add, 99)), ms(pct(overhead, 50)), float64(calls)/float64(len(add)))
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
