//go:build unix

package server

import (
	"fmt"
	"syscall"
)

// OpenFileLimit is the process's RLIMIT_NOFILE.
type OpenFileLimit struct {
	// Before is the soft limit found at the call; Soft the one in force after it.
	Before, Soft, Hard uint64
}

// RaiseOpenFileLimit raises the soft limit on open files to the hard limit. Every connection is a
// file descriptor, and a process that runs out can accept no connection at all, not even a probe
// on the internal listener. (The Go runtime already raises it at start-up since Go 1.19; this
// makes the figure explicit, so it can be logged and the connection caps checked against it.)
func RaiseOpenFileLimit() (OpenFileLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return OpenFileLimit{}, fmt.Errorf("reading the open-file limit: %w", err)
	}
	out := OpenFileLimit{Before: lim.Cur, Soft: lim.Cur, Hard: lim.Max}
	if lim.Cur >= lim.Max {
		return out, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return out, fmt.Errorf("raising the open-file limit from %d to the hard limit %d: %w", out.Before, lim.Max, err)
	}
	out.Soft = lim.Max
	return out, nil
}
