package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
	"github.com/braid-cni/braid/sriov-device/internal/plugin"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

// TestBenchSRIOV measures what `make bench-sriov` reports, on a generated tree of 16 X710 ports with 64 VFs
// each (1024 VFs):
//   - discover_ms: the worst of 5 cold discoveries, each by a new Scanner as at plugin start: ghw enumerates
//     the bus with pci.ids, every function's sysfs files are read, the VFs are grouped into the resource (warm
//     rescans, which ask ghw only about new functions, are printed on the line above);
//   - allocate_p99_ms: the 99th percentile of 2000 Allocate calls of one VF each, made as the kubelet makes
//     them (gRPC over the plugin's unix socket), including the device-info file each one writes.
//
// It runs only with BRAID_BENCH_SRIOV=1 and prints the BENCH line last.
func TestBenchSRIOV(t *testing.T) {
	if os.Getenv("BRAID_BENCH_SRIOV") == "" {
		t.Skip("set BRAID_BENCH_SRIOV=1 (make bench-sriov) to run the SR-IOV benchmark")
	}
	const pfs, vfsPerPF, discoveries, allocations = 16, 64, 5, 2000
	base := t.TempDir()
	tree, vfs, err := pcitree.Scale(filepath.Join(base, "host"), pfs, vfsPerPF)
	if err != nil {
		t.Fatal(err)
	}
	const cfgJSON = `{"resourceList": [{"resourceName": "x710", "selectors": {"vendors": ["8086"], "devices": ["154c"]}}]}`
	cfg, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}

	// Cold: a new Scanner each time, as at plugin start (ghw enumerates the bus and parses pci.ids).
	// Warm: one Scanner rescanning, as on every event and resync.
	discoverOnce := func(s *discover.Scanner) (time.Duration, time.Duration) {
		runtime.GC() // measure the discovery, not the collection of what came before
		cpu0 := cpuTime(t)
		start := time.Now()
		inv, err := s.Scan()
		if err != nil {
			t.Fatal(err)
		}
		pools, _ := pool.Build(cfg, inv)
		wall, cpu := time.Since(start), cpuTime(t)-cpu0
		if n := len(pools[0].Devices); n != len(vfs) {
			t.Fatalf("discovered %d VFs, want %d", n, len(vfs))
		}
		return wall, cpu
	}
	var cold, coldCPU, warm []time.Duration
	for range discoveries {
		wall, cpu := discoverOnce(discover.NewScanner(tree.Root))
		cold, coldCPU = append(cold, wall), append(coldCPU, cpu)
	}
	scanner := discover.NewScanner(tree.Root)
	discoverOnce(scanner)
	for range discoveries {
		wall, _ := discoverOnce(scanner)
		warm = append(warm, wall)
	}

	cfgFile := filepath.Join(base, "config.json")
	if err := os.WriteFile(cfgFile, []byte(cfgJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	pluginDir := filepath.Join(base, "dp")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	kubelet := startKubelet(t, pluginDir)
	stop := runPlugin(t, plugin.Options{Root: tree.Root, ConfigFile: cfgFile, PluginDir: pluginDir,
		DevInfoDir: filepath.Join(base, "devinfo")})
	defer stop()
	kubelet.waitRegistered(t, "braid.dev/x710")
	ep := kubelet.endpoint(t, "braid.dev/x710")
	ep.waitList(t, "all VFs", func(l []*pluginapi.Device) bool { return len(l) == len(vfs) })

	var allocate []time.Duration
	for i := range allocations {
		req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{vfs[i%len(vfs)]}}}}
		start := time.Now()
		if _, err := ep.client.Allocate(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		allocate = append(allocate, time.Since(start))
	}

	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("sriov: cold discoveries in order: %v\n", cold)
	for _, d := range [][]time.Duration{cold, coldCPU, warm, allocate} {
		slices.Sort(d)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("sriov: load average at the end: %s", load)
	fmt.Printf("sriov: discovery of %d VFs, cold (new scanner, as at start): min %s ms, median %s ms, max %s ms; "+
		"CPU median %s ms (%d runs)\n", len(vfs), ms(cold[0]), ms(cold[len(cold)/2]), ms(cold[len(cold)-1]),
		ms(coldCPU[len(coldCPU)/2]), discoveries)
	fmt.Printf("sriov: rescan of %d VFs, warm (as on every event and resync): min %s ms, median %s ms, max %s ms\n",
		len(vfs), ms(warm[0]), ms(warm[len(warm)/2]), ms(warm[len(warm)-1]))
	fmt.Printf("sriov: Allocate of 1 VF over gRPC: p50 %s ms, p99 %s ms, max %s ms (%d calls)\n",
		ms(percentile(allocate, 50)), ms(percentile(allocate, 99)), ms(allocate[len(allocate)-1]), allocations)
	fmt.Printf("BENCH sriov vfs=%d discover_ms=%s allocate_p99_ms=%s\n", len(vfs), ms(cold[len(cold)-1]),
		ms(percentile(allocate, 99)))
}

// cpuTime is the CPU time (user and system) the process used so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank-1, 0)]
}
