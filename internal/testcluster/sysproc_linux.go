package testcluster

import "syscall"

// sysProcAttr puts the child in its own process group (so Stop can signal everything it spawned)
// and asks the kernel to SIGKILL it if the thread that started it dies, so a crashed test or a
// killed dev program does not leave etcd or kube-apiserver running. Go only ends an OS thread when
// a goroutine locked to it exits, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
