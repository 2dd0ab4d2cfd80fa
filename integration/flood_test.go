package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/integration/harness"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/pki"
)

const (
	// floodConns is the idle keep-alive connections of issue 13: with the listener unbounded they
	// took the issuer to ~120 MiB RSS, twice the shipped memory limit.
	floodConns = 5000
	// floodWorkers open the connections in parallel; each connection makes one request and is
	// then left idle, holding only its file descriptor on this side. More would not open them
	// faster on a small machine (TLS handshakes are CPU-bound on both sides), only make the
	// probes' latency a measure of this process's scheduler.
	floodWorkers = 16
	// freshClientBound is how fast a relying party arriving in the middle of the flood must get
	// the JWKS, and a probe /healthz.
	freshClientBound = time.Second
	// shippedManifest holds the memory limit and GOMEMLIMIT the pod runs with.
	shippedManifest = "deploy/kustomize/base/deployment.yaml"
)

// floodCase is one flood of the public listener of the real `serve` binary.
type floodCase struct {
	name  string
	tls   bool
	conns int
	// fdLimit, when set, is the issuer's RLIMIT_NOFILE (soft and hard): a process out of file
	// descriptors accepts nothing on any listener.
	fdLimit int
	// memLimit, when set, is the ceiling for the issuer's peak resident set.
	memLimit int64
}

// TestPublicListenerFlood opens thousands of idle keep-alive connections to the public listener
// of the real `serve` binary, run the way the shipped manifests run it (their GOMEMLIMIT, every
// listener flag at its default), and requires that a fresh relying party still gets the JWKS
// within a second and that /healthz keeps answering within a second, during and after the flood:
//
//   - 5,000 connections, plain and TLS: the process stays under the pod's memory limit (issue
//     13: unbounded, they took it to ~120 MiB, 165 MiB with TLS).
//   - 1,000 connections against an open-file limit of 512: the connections run into the cap,
//     not into the descriptor limit (unbounded, accept failed with EMFILE on both listeners and
//     neither the JWKS nor /healthz answered).
//
// The figures are logged (go test -v).
func TestPublicListenerFlood(t *testing.T) {
	skipIfShort(t)
	raiseOpenFileLimit(t)
	limits := shippedLimits(t)
	bin := releaseIssuerBinary(t)
	src := startFloodKeySource(t)

	for _, tc := range []floodCase{
		{name: "plain", conns: floodConns, memLimit: limits.memLimit},
		// A TLS connection holds more memory (the record buffers), and its handshake makes
		// garbage and costs CPU.
		{name: "tls", tls: true, conns: floodConns, memLimit: limits.memLimit},
		{name: "open-file-limit", conns: 1000, fdLimit: 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runFlood(t, bin, src, tc, limits)
		})
	}
}

// floodKeySource is the signing-key Secret the flooded issuers watch, in a real kube-apiserver:
// the shipped deployment's memory is the client-go watch's as much as the listener's.
type floodKeySource struct {
	kubeconfig string
	secret     string // NAMESPACE/NAME
}

func startFloodKeySource(t *testing.T) floodKeySource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key := newRSAKey(t, 2048)
	begin := time.Now()
	cluster, kube := startCluster(ctx, t, t.TempDir(), floodIssuer, key.private, nil)
	t.Logf("kube-apiserver + etcd up in %s", time.Since(begin).Round(time.Millisecond))
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	if _, err := kube.CoreV1().Secrets(testNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: testSecret},
		Type:       clusterAPISecretType,
		Data:       map[string][]byte{"tls.crt": key.public, "tls.key": key.private},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the signing-key Secret: %v", err)
	}
	return floodKeySource{kubeconfig: cluster.KubeconfigPath(), secret: testNamespace + "/" + testSecret}
}

// floodIssuer is the flooded issuers' URL; they listen on 127.0.0.1 whatever it says.
const floodIssuer = "https://oidc.example.com/flood"

func runFlood(t *testing.T, bin string, src floodKeySource, tc floodCase, limits podLimits) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()

	args := []string{"--issuer-url", floodIssuer, "--secret", src.secret, "--kubeconfig", src.kubeconfig}
	scheme := "http"
	var tlsConfig *tls.Config
	if tc.tls {
		ca, err := pki.NewCA("kube-oidc-issuer flood CA")
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile, _ := issuerTLS(t, ca, dir)
		args = append(args, "--tls-cert-file", certFile, "--tls-key-file", keyFile)
		scheme = "https"
		tlsConfig = &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	if tc.fdLimit > 0 {
		bin = withOpenFileLimit(t, dir, bin, tc.fdLimit)
	}
	issuer := startServe(ctx, t, harness.IssuerConfig{
		Binary:  bin,
		Args:    args,
		Env:     []string{"GOMEMLIMIT=" + limits.goMemLimit},
		LogPath: filepath.Join(dir, "issuer.log"),
	})
	jwksPath := "/flood/openid/v1/jwks"
	jwksURL := scheme + "://" + issuer.PublicAddr + jwksPath
	healthzURL := issuer.InternalURL + "/healthz"
	// A fresh client per request: every fetch opens a new connection, as a relying party that
	// just arrived does, and kubelet's probes do.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   tlsConfig,
	}}
	t.Cleanup(fresh.CloseIdleConnections)
	pid := issuer.Pid()
	fdsBefore := countFDs(t, pid)
	memBefore := readMemory(t, pid)

	// Probe /healthz every 100 ms while the flood runs, as a much stricter kubelet would (the
	// manifests probe every 10 s), with kubelet's default 1 s timeout. On a 2-core machine a TLS
	// handshake flood takes every CPU, so single probes may be slow; what must not happen is what
	// makes kubelet restart the pod: failureThreshold failures in a row.
	probeClient := &http.Client{Timeout: freshClientBound, Transport: &http.Transport{DisableKeepAlives: true}}
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probes probeRun
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for probeCtx.Err() == nil {
			probes.add(timedGet(probeCtx, probeClient, healthzURL))
			select {
			case <-probeCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	begin := time.Now()
	conns, failed := openIdleConns(ctx, issuer.PublicAddr, jwksPath, tlsConfig, tc.conns)
	floodTook := time.Since(begin)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	stopProbe()
	<-probeDone

	// What the flood left behind, and a relying party arriving now.
	mem := readMemory(t, pid)
	held := countFDs(t, pid) - fdsBefore
	var after, healthAfter latencies
	for range 5 {
		after.add(timedGet(ctx, fresh, jwksURL))
		healthAfter.add(timedGet(ctx, fresh, healthzURL))
	}
	t.Logf("%s flood: %d connections attempted in %s (%d failed or were shed while opening); "+
		"the issuer holds %d of them; VmRSS %.1f MiB, VmHWM (peak) %.1f MiB (GOMEMLIMIT %s, pod limit %.0f MiB)",
		tc.name, tc.conns, floodTook.Round(time.Millisecond), failed, held,
		mib(mem.rss), mib(mem.hwm), limits.goMemLimit, mib(limits.memLimit))
	t.Logf("before the flood: VmRSS %.1f MiB; after it: %s", mib(memBefore.rss), runtimeMemory(ctx, t, issuer.InternalURL))
	t.Logf("/healthz during the flood: %s; at most %d failed or slow in a row%s", probes.summary(), probes.maxInARow, probes.firstError())
	t.Logf("after the flood: fresh JWKS client %s; /healthz %s", after.summary(), healthAfter.summary())

	if tc.memLimit > 0 && mem.hwm >= tc.memLimit {
		t.Errorf("peak RSS %.1f MiB: at or above the pod's %.0f MiB memory limit, the pod would be OOM-killed", mib(mem.hwm), mib(tc.memLimit))
	}
	for _, c := range []struct {
		what string
		l    *latencies
	}{
		{"a fresh client's JWKS after the flood", &after},
		{"/healthz after the flood", &healthAfter},
	} {
		if len(c.l.errs) > 0 {
			t.Errorf("%s: %d of %d failed, first: %v", c.what, len(c.l.errs), c.l.n(), c.l.errs[0])
		}
		if m := c.l.max(); m > freshClientBound {
			t.Errorf("%s: slowest %s, want under %s", c.what, m.Round(time.Millisecond), freshClientBound)
		}
	}
	if probes.maxInARow >= limits.livenessFailures {
		t.Errorf("/healthz during the flood: %d probes in a row failed or took over %s; kubelet restarts the pod after %d",
			probes.maxInARow, freshClientBound, limits.livenessFailures)
	}
}

// openIdleConns opens n connections to addr, makes one keep-alive request for path on each and
// returns those that were left open (idle, from the server's point of view) and how many failed
// because the server refused or shed them.
func openIdleConns(ctx context.Context, addr, path string, tlsConfig *tls.Config, n int) ([]net.Conn, int) {
	var (
		mu     sync.Mutex
		conns  = make([]net.Conn, 0, n)
		failed atomic.Int64
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	for range floodWorkers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := openIdleConn(ctx, addr, req, tlsConfig)
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, int(failed.Load())
}

func openIdleConn(ctx context.Context, addr string, req []byte, tlsConfig *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	var c net.Conn
	var err error
	if tlsConfig != nil {
		td := tls.Dialer{NetDialer: &d, Config: tlsConfig}
		c, err = td.DialContext(ctx, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	// The reader is dropped after the response: an idle connection keeps only its descriptor here.
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("status %d, %v", res.StatusCode, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// probeRun is a series of liveness probes.
type probeRun struct {
	latencies
	inARow, maxInARow int
}

func (p *probeRun) add(d time.Duration, err error) {
	p.latencies.add(d, err)
	if err != nil || d > freshClientBound {
		p.inARow++
		p.maxInARow = max(p.maxInARow, p.inARow)
		return
	}
	p.inARow = 0
}

// latencies collects timed requests; safe for one writer at a time.
type latencies struct {
	took []time.Duration
	errs []error
}

func (l *latencies) add(d time.Duration, err error) {
	if err != nil {
		l.errs = append(l.errs, err)
		return
	}
	l.took = append(l.took, d)
}

func (l *latencies) n() int { return len(l.took) + len(l.errs) }

func (l *latencies) firstError() string {
	if len(l.errs) == 0 {
		return ""
	}
	return fmt.Sprintf(" (first failure: %v)", l.errs[0])
}

func (l *latencies) max() time.Duration {
	if len(l.took) == 0 {
		return 0
	}
	return slices.Max(l.took)
}

func (l *latencies) summary() string {
	if l.n() == 0 {
		return "no requests"
	}
	s := slices.Clone(l.took)
	slices.Sort(s)
	if len(s) == 0 {
		return fmt.Sprintf("%d requests, all failed (%v)", len(l.errs), l.errs[0])
	}
	return fmt.Sprintf("%d requests, %d failed, median %s, max %s", l.n(), len(l.errs),
		s[len(s)/2].Round(10*time.Microsecond), s[len(s)-1].Round(10*time.Microsecond))
}

func timedGet(ctx context.Context, c *http.Client, url string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	res, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// The probe was stopped, not failed.
			return time.Since(begin), nil
		}
		return 0, err
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, err
	}
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", url, res.StatusCode)
	}
	return time.Since(begin), nil
}

// runtimeMemory summarizes the Go runtime's own memory figures from /metrics: where the RSS goes.
func runtimeMemory(ctx context.Context, t *testing.T, internalURL string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, internalURL+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "no /metrics: " + err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		for _, m := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_stack_inuse_bytes ", "go_memstats_sys_bytes ", "go_goroutines ", "go_gc_gogc_percent "} {
			if strings.HasPrefix(line, m) {
				name, v, _ := strings.Cut(line, " ")
				f, _ := strconv.ParseFloat(v, 64)
				if strings.HasSuffix(name, "_bytes") {
					v = fmt.Sprintf("%.1fMiB", f/(1<<20))
				}
				out = append(out, strings.TrimPrefix(name, "go_")+"="+v)
			}
		}
		if strings.HasPrefix(line, "kube_oidc_issuer_connections{") && strings.Contains(line, `listener="public"`) {
			out = append(out, line)
		}
	}
	return strings.Join(out, " ")
}

type procMemory struct{ rss, hwm int64 }

// readMemory reads the resident set and its peak (what the OOM killer's accounting follows most
// closely among the per-process figures) from /proc/PID/status.
func readMemory(t *testing.T, pid int) procMemory {
	t.Helper()
	rss, hwm, err := soakReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss == 0 || hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return procMemory{rss: rss, hwm: hwm}
}

// countFDs counts the process's open file descriptors: each connection it holds is one.
func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// withOpenFileLimit returns a launcher that runs bin with RLIMIT_NOFILE set to limit (soft and
// hard, so that the issuer cannot raise it).
func withOpenFileLimit(t *testing.T, dir, bin string, limit int) string {
	t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	launcher := filepath.Join(dir, "issuer-with-fd-limit")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d -- %s \"$@\"\n", prlimit, limit, limit, bin)
	if err := os.WriteFile(launcher, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return launcher
}

// raiseOpenFileLimit lifts this process's soft RLIMIT_NOFILE to the hard limit (Go does so at
// start-up too, but a test must not depend on it) and skips when even that cannot hold the flood.
func raiseOpenFileLimit(t *testing.T) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raising RLIMIT_NOFILE to %d: %v", lim.Max, err)
		}
	}
	if lim.Cur < floodConns+500 {
		t.Skipf("RLIMIT_NOFILE hard limit %d: too low to open %d connections", lim.Max, floodConns)
	}
}

// podLimits are what the shipped base Deployment gives the issuer.
type podLimits struct {
	memLimit   int64  // the container's memory limit
	goMemLimit string // its GOMEMLIMIT
	// livenessFailures is the liveness probe's failureThreshold: failed probes in a row before
	// kubelet restarts the container.
	livenessFailures int
}

// shippedLimits reads the container's memory limit, GOMEMLIMIT and liveness failure threshold
// from the shipped base Deployment, so that the test follows the manifests when they change.
func shippedLimits(t *testing.T) podLimits {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, shippedManifest))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.Unmarshal(b, &d); err != nil {
		t.Fatalf("parsing %s: %v", shippedManifest, err)
	}
	var l podLimits
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "kube-oidc-issuer" {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				l.goMemLimit = e.Value
			}
		}
		if q, ok := c.Resources.Limits["memory"]; ok {
			l.memLimit = q.Value()
		}
		if p := c.LivenessProbe; p != nil {
			l.livenessFailures = int(p.FailureThreshold)
			if l.livenessFailures == 0 {
				l.livenessFailures = 3 // Kubernetes' default
			}
		}
	}
	if l.memLimit == 0 || l.goMemLimit == "" || l.livenessFailures == 0 {
		t.Fatalf("%s: no memory limit, GOMEMLIMIT or liveness probe on the kube-oidc-issuer container", shippedManifest)
	}
	return l
}

// releaseIssuerBinary is the issuer built without the race detector: under -race the shared
// binary is instrumented, and its memory (several times a release build's) says nothing about
// the memory limit. It goes next to the shared binary, into the directory TestMain removes.
func releaseIssuerBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return shared.issuerBin
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(shared.issuerBin), "release")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	bin, err := harness.BuildIssuer(context.Background(), root, dir, false)
	if err != nil {
		t.Fatalf("building the issuer without -race: %v", err)
	}
	t.Logf("issuer built without -race in %s", time.Since(begin).Round(time.Millisecond))
	return bin
}
