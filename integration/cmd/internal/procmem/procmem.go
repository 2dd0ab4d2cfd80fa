// Package procmem reads a process's memory figures from /proc, for the benchmark commands.
package procmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory is what the kernel reports for a process, in bytes: the resident set now (VmRSS)
// and its peak (VmHWM). The resident set splits into anonymous memory (the Go heap, stacks and
// runtime structures: the process's own) and file-backed pages (the executable's code and
// read-only data, faulted in from the page cache and shared with it, droppable by the kernel).
type Memory struct {
	RSS, HWM, Anon, File int64
}

// Read reads pid's /proc/PID/status.
func Read(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("parsing %s in /proc/%d/status: %w", name, pid, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if m.RSS == 0 {
		return Memory{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}
