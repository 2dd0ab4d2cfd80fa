package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkReportScript makes wrk print its summary as one JSON line. Parsing wrk's human output would
// lose precision (it rounds latencies to two decimals and req/s to a unit). Defining only done()
// keeps wrk on its static-request fast path: no Lua runs per request.
const wrkReportScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '` + wrkReportPrefix + `{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,"status_errors":%.0f,"timeouts":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f,"max_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

const wrkReportPrefix = "BENCHSERVE_RESULT "

// wrkResult is one wrk run's summary.
type wrkResult struct {
	Requests      int64 `json:"requests"`
	DurationUS    int64 `json:"duration_us"`
	Bytes         int64 `json:"bytes"`
	ConnectErrors int64 `json:"connect_errors"`
	ReadErrors    int64 `json:"read_errors"`
	WriteErrors   int64 `json:"write_errors"`
	StatusErrors  int64 `json:"status_errors"` // responses other than 2xx/3xx
	Timeouts      int64 `json:"timeouts"`
	P50US         int64 `json:"p50_us"`
	P99US         int64 `json:"p99_us"`
	MaxUS         int64 `json:"max_us"`

	// cpu is where the machine's CPU time went during the run.
	cpu cpuShares
}

func (r wrkResult) reqPerSec() float64 {
	if r.DurationUS <= 0 {
		return 0
	}
	return float64(r.Requests) / (float64(r.DurationUS) / 1e6)
}

// cpuPerRequest is the server's CPU time (user + system, which includes the kernel's TCP work on
// its side of loopback) per request. Unlike req/s it hardly changes when other processes take CPU
// time away, so it tells the servers' costs apart on a busy machine.
func (r wrkResult) cpuPerRequest() time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return r.cpu.serverTime / time.Duration(r.Requests)
}

func (r wrkResult) p99() time.Duration { return time.Duration(r.P99US) * time.Microsecond }

// socketErrors are errors that do not make the run invalid but are worth showing.
func (r wrkResult) socketErrors() int64 { return r.ReadErrors + r.WriteErrors + r.Timeouts }

// wrkRunner runs wrk with fixed threads, connections and CPU pinning.
type wrkRunner struct {
	bin         string
	threads     int
	connections int
	cpus        string // taskset CPU list; empty: not pinned
	// serverCPUs and clientCPUs are where the servers and wrk are pinned (nil: not pinned), for
	// telling other processes' CPU time from theirs.
	serverCPUs, clientCPUs []int
	script                 string
	logDir                 string
	runs                   int
}

func newWrkRunner(bin string, threads, connections int, cpus string, serverCPUs, clientCPUs []int, workDir string) (*wrkRunner, error) {
	script := filepath.Join(workDir, "report.lua")
	if err := os.WriteFile(script, []byte(wrkReportScript), 0o644); err != nil {
		return nil, err
	}
	logDir := filepath.Join(workDir, "wrk")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	return &wrkRunner{
		bin: bin, threads: threads, connections: connections, cpus: cpus,
		serverCPUs: serverCPUs, clientCPUs: clientCPUs, script: script, logDir: logDir,
	}, nil
}

// run loads url, served by the process serverPID, for d and returns wrk's summary. Its raw output
// is kept in the work directory under label. A run in which a connection could not be made or a
// response was not 2xx/3xx is an error: its throughput would not be the server's.
func (w *wrkRunner) run(ctx context.Context, label, url string, serverPID int, d time.Duration) (wrkResult, error) {
	// wrk stops on its own after d; the margin covers its start and the close of 50 connections.
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	args := []string{
		"-t" + strconv.Itoa(w.threads), "-c" + strconv.Itoa(w.connections),
		"-d" + strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s",
		"--latency", "-s", w.script, url,
	}
	name := w.bin
	if w.cpus != "" {
		args = append([]string{"-c", w.cpus, w.bin}, args...)
		name = "taskset"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	meter, err := startCPUMeter(serverPID, w.serverCPUs, w.clientCPUs)
	if err != nil {
		return wrkResult{}, err
	}
	err = cmd.Run()
	w.runs++
	logPath := filepath.Join(w.logDir, fmt.Sprintf("%02d-%s.txt", w.runs, label))
	_ = os.WriteFile(logPath, append(stdout.Bytes(), stderr.Bytes()...), 0o644)
	if err != nil {
		if ctx.Err() != nil {
			return wrkResult{}, fmt.Errorf("wrk %s: %w", label, context.Cause(ctx))
		}
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", label, err, strings.TrimSpace(stderr.String()))
	}
	var res wrkResult
	// taskset execs wrk: the rusage is wrk's.
	if res.cpu, err = meter.stop(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()); err != nil {
		return wrkResult{}, err
	}
	found := false
	for line := range strings.Lines(stdout.String()) {
		if rest, ok := strings.CutPrefix(line, wrkReportPrefix); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				return wrkResult{}, fmt.Errorf("wrk %s: parsing its report %q: %w", label, rest, err)
			}
			found = true
		}
	}
	switch {
	case !found:
		return wrkResult{}, fmt.Errorf("wrk %s printed no report (output in %s)", label, logPath)
	case res.Requests == 0:
		return res, fmt.Errorf("wrk %s completed no request (output in %s)", label, logPath)
	case res.ConnectErrors > 0 || res.StatusErrors > 0:
		return res, fmt.Errorf("wrk %s: %d connect errors, %d non-2xx/3xx responses (output in %s)",
			label, res.ConnectErrors, res.StatusErrors, logPath)
	}
	return res, nil
}
