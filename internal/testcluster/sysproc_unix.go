//go:build unix && !linux

package testcluster

import "syscall"

// sysProcAttr puts the child in its own process group so Stop can signal everything it spawned.
// Only Linux can also tie the child's life to ours (Pdeathsig).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
