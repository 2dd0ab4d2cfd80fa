package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/pprof"
	"time"
)

// windDownBound is how long a long-running command may take to stop once its context has ended.
// Its listeners drain within seconds; past this, something ignores its context, and a process
// that never exits on SIGTERM is worse (kubelet waits the whole termination grace period, a
// static-pod signer blocks the control plane's restart) than one that exits leaving it behind.
const windDownBound = 15 * time.Second

// waitWindDown waits for wait (an errgroup's Wait) to return. Once ctx has ended it waits at most
// bound more; then it logs, writes every goroutine's stack to stacks (function names only: no
// arguments, so no key material) so the stuck one can be found, and returns an error.
func waitWindDown(ctx context.Context, logger *slog.Logger, stacks io.Writer, bound time.Duration, wait func() error) error {
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	logger.Error("still stopping after the wind-down bound; exiting anyway (goroutine stacks on stderr)", "bound", bound)
	_ = pprof.Lookup("goroutine").WriteTo(stacks, 1)
	return fmt.Errorf("did not stop within %s of being asked to", bound)
}
