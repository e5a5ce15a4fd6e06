package testenv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StealMeter measures the share of this virtual machine's CPU time the hypervisor gave to others (steal, from
// /proc/stat) while a benchmark ran. Benchmarks print it beside their numbers: on a shared host, a run with a
// few percent of steal is not comparable with a quiet one.
type StealMeter struct{ steal, total uint64 }

// StartSteal reads the counters now.
func StartSteal() StealMeter {
	steal, total, _ := readCPUTimes()
	return StealMeter{steal, total}
}

// Percent is the share of all CPU time since StartSteal that was stolen, or -1 when /proc/stat is unreadable.
func (m StealMeter) Percent() float64 {
	steal, total, err := readCPUTimes()
	if err != nil || total <= m.total {
		return -1
	}
	return 100 * float64(steal-m.steal) / float64(total-m.total)
}

// readCPUTimes sums /proc/stat's first line: user nice system idle iowait irq softirq steal (guest time is
// already in user).
func readCPUTimes() (steal, total uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return 0, 0, err
	}
	return parseCPULine(line)
}

func parseCPULine(line string) (steal, total uint64, err error) {
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, s := range fields[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i == 7 {
			steal = v
		}
	}
	return steal, total, nil
}
