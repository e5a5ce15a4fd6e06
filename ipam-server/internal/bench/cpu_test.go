package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on every Linux braid runs on).
const clockTick = 10 * time.Millisecond

// cpuSnapshot is the CPU time used so far, by process role: this test process (braid-ipam-server runs in it,
// and the harness's clients), the plugin executions it has waited for, and each kind of child still running
// (kube-apiserver, etcd, the braid daemons).
type cpuSnapshot map[string]time.Duration

// takeCPU reads the snapshot from /proc.
func takeCPU() cpuSnapshot {
	s := cpuSnapshot{}
	self := os.Getpid()
	if f, err := procStat(self); err == nil {
		s["test+server"] = f.own
		s["plugin-execs"] = f.children
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := procStat(pid)
		if err != nil || f.ppid != self {
			continue
		}
		s[f.comm] += f.own
	}
	return s
}

// perPod is the CPU each role spent per pod between two snapshots, as "role=ms" words, largest first.
func perPod(before, after cpuSnapshot, pods int) string {
	type role struct {
		name string
		d    time.Duration
	}
	var roles []role
	var total time.Duration
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			roles = append(roles, role{k, d})
			total += d
		}
	}
	slices.SortFunc(roles, func(a, b role) int { return int(b.d - a.d) })
	words := []string{fmt.Sprintf("total=%.2f", ms(total)/float64(pods))}
	for _, r := range roles {
		words = append(words, fmt.Sprintf("%s=%.2f", r.name, ms(r.d)/float64(pods)))
	}
	return strings.Join(words, " ")
}

type procTimes struct {
	comm          string
	ppid          int
	own, children time.Duration
}

// procStat parses /proc/<pid>/stat: comm is in parentheses and may hold spaces, so fields count from its end.
func procStat(pid int) (procTimes, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procTimes{}, err
	}
	s := string(raw)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[closing+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	n := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i-3], 10, 64)
		return time.Duration(v) * clockTick
	}
	ppid, _ := strconv.Atoi(f[1])
	return procTimes{comm: s[open+1 : closing], ppid: ppid, own: n(14) + n(15), children: n(16) + n(17)}, nil
}
