package testcluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is one child (etcd or kube-apiserver) running in its own process group with its output
// in a log file.
type process struct {
	name    string
	logPath string
	logFrom int64 // size of the log file before this process started
	cmd     *exec.Cmd
	done    chan struct{} // closed once the child has been reaped
	waitErr error         // valid after done is closed
	logger  *slog.Logger
}

// startProcess starts bin with args, stdout and stderr appended to logPath.
func startProcess(logger *slog.Logger, name, bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	// The child keeps its own descriptor; ours is not needed once it has started.
	defer logFile.Close()
	var logFrom int64
	if fi, err := logFile.Stat(); err == nil {
		logFrom = fi.Size()
	}
	fmt.Fprintf(logFile, "### %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, logFrom: logFrom, cmd: cmd, done: make(chan struct{}), logger: logger}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	logger.Debug("started process", "component", name, "pid", cmd.Process.Pid, "log", logPath)
	return p, nil
}

// childEnv is our environment without ETCD_* variables: etcd reads every flag from ETCD_<FLAG>,
// so a developer's shell must not change how the test etcd runs.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has exited (and been reaped).
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, waits up to grace for the child to exit, then
// sends SIGKILL to the group. Whatever happens, the group gets a final SIGKILL so that no
// grandchild survives. Safe to call more than once.
func (p *process) stop(grace time.Duration) error {
	pgid := p.pid() // Setpgid: the group id is the child's pid
	start := time.Now()
	if !p.exited() {
		if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("sending SIGTERM to %s (pgid %d): %w", p.name, pgid, err)
		}
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
			timer.Stop()
		case <-timer.C:
			p.logger.Warn("process did not exit after SIGTERM, killing it", "component", p.name, "pid", pgid, "grace", grace)
		}
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending SIGKILL to %s (pgid %d): %w", p.name, pgid, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 10s after SIGKILL", p.name, pgid)
	}
	p.logger.Debug("stopped process", "component", p.name, "pid", pgid, "took", time.Since(start), "exit", p.waitErr)
	return nil
}

// logTail returns up to the last n lines this process wrote to its log file.
func (p *process) logTail(n int) string { return tailFile(p.logPath, p.logFrom, n) }

// tailFile returns up to the last n lines of path, reading no further back than offset from.
func tailFile(path string, from int64, n int) string {
	const maxBytes = 16 << 10
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		from = max(from, fi.Size()-maxBytes)
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
