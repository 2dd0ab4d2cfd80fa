package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The figures of a load run mean something only if the server and wrk had their CPUs to
// themselves: on a 2-core machine one busy compiler halves the result, and interference that hits
// only one side of an issuer/baseline pair skews the ratio by as much as anything either server
// does. So every run measures how much CPU time other processes (and the hypervisor) took on the
// CPUs the server and wrk run on, the report shows it, a disturbed round is measured again, and a
// run waits (boundedly) for the machine to become quiet before it starts.

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/PID/stat; 100 on every Linux ABI Go
// supports.
const clockTicks = 100

// quietThreshold is the share of a CPU's time other processes may take during a run (or of the
// machine's, before one) for the run to count as undisturbed. The idle test cluster and the
// kernel's own threads stay well below it.
const quietThreshold = 0.05

// cpuTimes are one /proc/stat line's busy, steal and total time, in ticks.
type cpuTimes struct{ busy, steal, total int64 }

func (a cpuTimes) sub(b cpuTimes) cpuTimes {
	return cpuTimes{a.busy - b.busy, a.steal - b.steal, a.total - b.total}
}

// procStat is /proc/stat's CPU lines: the aggregate and each CPU's.
type procStat struct {
	all    cpuTimes
	perCPU map[int]cpuTimes
}

func readProcStat() (procStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return procStat{}, err
	}
	s := procStat{perCPU: map[int]cpuTimes{}}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]int64 // user nice system idle iowait irq softirq steal
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return procStat{}, fmt.Errorf("parsing /proc/stat: %w", err)
			}
		}
		t := cpuTimes{steal: v[7]}
		for i, x := range v {
			t.total += x
			if i != 3 && i != 4 { // idle, iowait
				t.busy += x
			}
		}
		if f[0] == "cpu" {
			s.all = t
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			return procStat{}, fmt.Errorf("unexpected /proc/stat line %q", line)
		}
		s.perCPU[n] = t
	}
	if s.all.total == 0 {
		return procStat{}, fmt.Errorf("no cpu line in /proc/stat")
	}
	return s, nil
}

// over sums the given CPUs' times; no CPUs means all of them.
func (s procStat) over(cpus []int) cpuTimes {
	if len(cpus) == 0 {
		return s.all
	}
	var t cpuTimes
	for _, c := range cpus {
		p := s.perCPU[c]
		t.busy += p.busy
		t.steal += p.steal
		t.total += p.total
	}
	return t
}

// processCPU is a process's user+system time (all threads), in ticks.
func processCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; the fields after it are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	return utime + stime, nil
}

// cpuShares describe where CPU time went during a run.
type cpuShares struct {
	serverTime time.Duration // CPU time the server under load used (user + system, all threads)
	// others is the share of CPU time other processes and the hypervisor took: when pinned, the
	// larger of the shares on the server's CPUs and on wrk's CPUs; else the machine's share.
	others float64
}

// cpuMeter measures cpuShares from /proc between start and stop.
type cpuMeter struct {
	pid                    int
	serverCPUs, clientCPUs []int // nil: not pinned
	stat                   procStat
	serverTicks            int64
}

func startCPUMeter(serverPID int, serverCPUs, clientCPUs []int) (*cpuMeter, error) {
	m := &cpuMeter{pid: serverPID, serverCPUs: serverCPUs, clientCPUs: clientCPUs}
	var err error
	if m.serverTicks, err = processCPU(serverPID); err != nil {
		return nil, err
	}
	if m.stat, err = readProcStat(); err != nil {
		return nil, err
	}
	return m, nil
}

// stop returns the shares since start; wrkTime is wrk's own CPU time, from its rusage.
func (m *cpuMeter) stop(wrkTime time.Duration) (cpuShares, error) {
	stat, err := readProcStat()
	if err != nil {
		return cpuShares{}, err
	}
	serverTicks, err := processCPU(m.pid)
	if err != nil {
		return cpuShares{}, err
	}
	server := float64(serverTicks - m.serverTicks)
	wrk := wrkTime.Seconds() * clockTicks
	s := cpuShares{serverTime: time.Duration(serverTicks-m.serverTicks) * time.Second / clockTicks}
	// Ticks are sampled, so on a quiet machine the differences can come out slightly negative.
	othersOn := func(cpus []int, ours float64) float64 {
		d := stat.over(cpus).sub(m.stat.over(cpus))
		if d.total <= 0 {
			return 0
		}
		return max(0, float64(d.busy)-ours) / float64(d.total)
	}
	if m.serverCPUs == nil {
		s.others = othersOn(nil, server+wrk)
	} else {
		s.others = max(othersOn(m.serverCPUs, server), othersOn(m.clientCPUs, wrk))
	}
	return s, nil
}

// busyShare measures the share of the machine's CPU time in use over d.
func busyShare(ctx context.Context, d time.Duration) (float64, error) {
	a, err := readProcStat()
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b, err := readProcStat()
	if err != nil {
		return 0, err
	}
	t := b.all.sub(a.all)
	if t.total <= 0 {
		return 0, nil
	}
	return float64(t.busy) / float64(t.total), nil
}

// waitQuiet waits up to maxWait until, over one second, the machine is at most quietThreshold
// busy (our servers are idle between runs). A machine that never becomes quiet is not refused:
// the run's figures show the disturbance.
func waitQuiet(ctx context.Context, maxWait time.Duration) error {
	deadline := time.Now().Add(maxWait)
	announced := false
	for {
		share, err := busyShare(ctx, time.Second)
		if err != nil || share <= quietThreshold || time.Now().After(deadline) {
			return err
		}
		if !announced {
			progress("machine %.0f%% busy with other processes (%d CPUs); waiting up to %s for it to calm down",
				share*100, runtime.NumCPU(), maxWait)
			announced = true
		}
	}
}

// parseCPUList parses a taskset-style CPU list ("1", "0,2", "2-3").
func parseCPUList(list string) ([]int, error) {
	var cpus []int
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad CPU list %q", list)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q", list)
			}
		}
		if b >= runtime.NumCPU() {
			return nil, fmt.Errorf("CPU %d in %q does not exist (%d CPUs)", b, list, runtime.NumCPU())
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
