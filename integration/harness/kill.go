package harness

import (
	"syscall"
	"time"
)

// Kill ends the process with SIGKILL, as a crash or a node failure would: nothing is drained and
// nothing (a leader election Lease, for one) is released. It waits until the process is gone. A
// later Stop returns nil.
func (i *Issuer) Kill() time.Time {
	var at time.Time
	i.stopOnce.Do(func() {
		at = time.Now()
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
		<-i.done
	})
	return at
}
