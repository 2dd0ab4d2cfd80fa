package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/cmd/internal/procmem"
)

// child is a process benchserve started itself (the baseline), in its own process group and
// killed by the kernel if benchserve dies, so that nothing outlives an interrupted run.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startChild(name string, args, env []string, logPath string) (*child, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the group and SIGKILL after 5 s.
func (c *child) stop() {
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

// waitHTTP polls url until it answers 200, for at most timeout, and returns the last response.
func waitHTTP(ctx context.Context, client *http.Client, url string, timeout time.Duration, alive func() bool) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return resp, body, nil
			}
			last = fmt.Errorf("status %d, read error %v", resp.StatusCode, rerr)
		} else {
			last = err
		}
		if !alive() {
			return nil, nil, fmt.Errorf("GET %s: the server exited (last: %v)", url, last)
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("GET %s not OK after %s: %v", url, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// procMemory is a process's memory as the kernel reports it (procmem.Memory).
type procMemory = procmem.Memory

var readProcMemory = procmem.Read

// rssSampler reads a process's VmRSS at a fixed interval while it runs. Reading /proc costs the
// sampled process nothing.
type rssSampler struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	samples []procMemory
	err     error
}

const rssInterval = 100 * time.Millisecond

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{stop: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(rssInterval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			m, err := readProcMemory(pid)
			if err != nil {
				s.err = err
				return
			}
			s.samples = append(s.samples, m)
		}
	})
	return s
}

// finish stops sampling and returns the samples taken.
func (s *rssSampler) finish() ([]procMemory, error) {
	close(s.stop)
	s.wg.Wait()
	if s.err == nil && len(s.samples) == 0 {
		s.err = errors.New("no RSS sample taken")
	}
	return s.samples, s.err
}

// metricsSnapshot is the part of the issuer's /metrics the report uses.
type metricsSnapshot struct {
	HeapInuse   float64 // go_memstats_heap_inuse_bytes
	HeapAlloc   float64 // go_memstats_heap_alloc_bytes
	NextGC      float64 // go_memstats_next_gc_bytes
	AllocBytes  float64 // go_memstats_alloc_bytes_total
	Mallocs     float64 // go_memstats_mallocs_total
	GCCycles    float64 // go_gc_duration_seconds_count
	GOGC        float64 // go_gc_gogc_percent
	MemoryLimit float64 // go_gc_gomemlimit_bytes
	JWKS200     float64 // kube_oidc_issuer_http_requests_total{code="200",route="jwks"}
}

var metricSeries = map[string]func(*metricsSnapshot) *float64{
	"go_memstats_heap_inuse_bytes":                                  func(m *metricsSnapshot) *float64 { return &m.HeapInuse },
	"go_memstats_heap_alloc_bytes":                                  func(m *metricsSnapshot) *float64 { return &m.HeapAlloc },
	"go_memstats_next_gc_bytes":                                     func(m *metricsSnapshot) *float64 { return &m.NextGC },
	"go_memstats_alloc_bytes_total":                                 func(m *metricsSnapshot) *float64 { return &m.AllocBytes },
	"go_memstats_mallocs_total":                                     func(m *metricsSnapshot) *float64 { return &m.Mallocs },
	"go_gc_duration_seconds_count":                                  func(m *metricsSnapshot) *float64 { return &m.GCCycles },
	"go_gc_gogc_percent":                                            func(m *metricsSnapshot) *float64 { return &m.GOGC },
	"go_gc_gomemlimit_bytes":                                        func(m *metricsSnapshot) *float64 { return &m.MemoryLimit },
	`kube_oidc_issuer_http_requests_total{code="200",route="jwks"}`: func(m *metricsSnapshot) *float64 { return &m.JWKS200 },
}

// scrapeMetrics reads the issuer's /metrics. It runs between load runs only: rendering the
// exposition allocates in the issuer.
func scrapeMetrics(ctx context.Context, client *http.Client, url string) (metricsSnapshot, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return metricsSnapshot{}, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return metricsSnapshot{}, fmt.Errorf("scraping %s: status %d", url, resp.StatusCode)
	}
	var m metricsSnapshot
	seen := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		field, ok := metricSeries[line[:i]]
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return metricsSnapshot{}, fmt.Errorf("parsing %q from %s: %w", line, url, err)
		}
		*field(&m) = v
		seen[line[:i]] = true
	}
	if err := sc.Err(); err != nil {
		return metricsSnapshot{}, fmt.Errorf("reading %s: %w", url, err)
	}
	for _, name := range []string{"go_memstats_heap_inuse_bytes", "go_gc_duration_seconds_count", "go_memstats_alloc_bytes_total"} {
		if !seen[name] {
			return metricsSnapshot{}, fmt.Errorf("%s has no %s", url, name)
		}
	}
	return m, nil
}

func median[T int64 | float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// nearestRank is the p-th percentile (0 < p ≤ 100) by the nearest-rank method: with 20 samples,
// p99 is the largest.
func nearestRank(v []time.Duration, p float64) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(s))*p/100)) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
