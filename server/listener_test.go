package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// slack is what a loaded 2-core CI machine (and -race) may add to a bound: the sweeper's tick,
// scheduling, the client noticing the close.
const slack = 2 * time.Second

// testLimits are bounds for tests: short where a test waits for them, long enough elsewhere that
// a loaded CI machine (and -race) does not trip them. Each test changes what it is about.
func testLimits() serveLimits {
	l := defaultServeLimits()
	l.Name = "public"
	l.MaxConnections = 100
	l.ReadHeaderTimeout = 3 * time.Second
	l.WriteTimeout = 5 * time.Second
	l.IdleTimeout = time.Minute
	l.PressureIdleTimeout = 30 * time.Second
	return l
}

// slowClientLimits cut slow clients off quickly.
func slowClientLimits() serveLimits {
	l := testLimits()
	l.ReadHeaderTimeout = 300 * time.Millisecond
	l.WriteTimeout = 500 * time.Millisecond
	return l
}

// boundedServer is serve on 127.0.0.1 with its metrics in a registry of its own.
type boundedServer struct {
	addr string
	reg  *prometheus.Registry
}

func startBounded(t *testing.T, h http.Handler, limits serveLimits, tlsConfig *tls.Config) *boundedServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewListenerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	limits.Metrics = m
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, l, h, tlsConfig, testLogger(t), limits) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not return")
		}
	})
	return &boundedServer{addr: l.Addr().String(), reg: reg}
}

func (s *boundedServer) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestSlowClientsAreCutOff: without http.Server's timeouts, the sweeper must still cut off
// clients that trickle headers, never finish a TLS handshake, or never read their response.
func TestSlowClientsAreCutOff(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, 1)
	cert, err := tls.X509KeyPair(pair.cert, pair.key)
	if err != nil {
		t.Fatal(err)
	}
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}}

	for _, tc := range []struct {
		name string
		tls  bool
		// act misbehaves on c and returns the bound it must be cut off within, counted from
		// the return.
		act func(t *testing.T, c *client, stop <-chan struct{}) time.Duration
	}{
		{"silent new connection", false, func(_ *testing.T, _ *client, _ <-chan struct{}) time.Duration {
			return slowClientLimits().ReadHeaderTimeout
		}},
		{"trickled first request headers", false, func(_ *testing.T, c *client, stop <-chan struct{}) time.Duration {
			_, _ = io.WriteString(c.conn, "GET / HTTP/1.1\r\n")
			go c.trickle("X-Slow: loris\r\n", 20*time.Millisecond, stop)
			return slowClientLimits().ReadHeaderTimeout
		}},
		{"trickled headers on a kept-alive connection", false, func(t *testing.T, c *client, stop <-chan struct{}) time.Duration {
			c.mustGet("/")
			_, _ = io.WriteString(c.conn, "GET / HTTP/1.1\r\n")
			go c.trickle("X-Slow: loris\r\n", 20*time.Millisecond, stop)
			return slowClientLimits().ReadHeaderTimeout
		}},
		{"stalled TLS handshake", true, func(_ *testing.T, c *client, _ <-chan struct{}) time.Duration {
			// The first bytes of a ClientHello record, then nothing.
			_, _ = c.conn.Write([]byte{0x16, 0x03, 0x01, 0x00, 0xc8, 0x01})
			return slowClientLimits().ReadHeaderTimeout
		}},
		{"client that never reads its response", false, func(_ *testing.T, c *client, _ <-chan struct{}) time.Duration {
			_, _ = io.WriteString(c.conn, "GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
			return slowClientLimits().WriteTimeout
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// writeFailed reports when the big response's write failed: the client, which
			// never reads, cannot notice the close without reading.
			writeFailed := make(chan time.Time, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/big" {
					// Far more than the socket buffers hold: the writes block on the client.
					chunk := make([]byte, 64<<10)
					for range 4096 {
						if _, err := w.Write(chunk); err != nil {
							writeFailed <- time.Now()
							return
						}
					}
					return
				}
				_, _ = io.WriteString(w, "ok")
			})
			var cfg *tls.Config
			if tc.tls {
				cfg = serverTLS
			}
			s := startBounded(t, h, slowClientLimits(), cfg)
			c := dial(t, s.addr)
			if tcp, ok := c.conn.(*net.TCPConn); ok {
				_ = tcp.SetReadBuffer(4 << 10)
			}
			stop := make(chan struct{})
			defer close(stop)
			bound := tc.act(t, c, stop)
			if strings.HasPrefix(tc.name, "client that never reads") {
				begin := time.Now()
				select {
				case at := <-writeFailed:
					t.Logf("response write failed after %s (bound %s)", at.Sub(begin).Round(time.Millisecond), bound)
				case <-time.After(bound + slack):
					t.Fatalf("the response was still being written %s after the request, bound %s", bound+slack, bound)
				}
				return
			}
			took, closed := c.closedWithin(bound + slack)
			if !closed {
				t.Fatalf("still open %s after misbehaving, bound %s", bound+slack, bound)
			}
			t.Logf("cut off after %s (bound %s)", took.Round(time.Millisecond), bound)
		})
	}
}

// TestIdleConnections: idle keep-alive connections are closed after the idle timeout, and after
// the shorter one while more than 80 % of the cap is open.
func TestIdleConnections(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max, open  int
		idle, hurt time.Duration
		wantClosed bool
	}{
		{"closed after the idle timeout", 100, 1, 400 * time.Millisecond, 400 * time.Millisecond, true},
		{"idle timeout shortened above the high-water mark", 10, 9, time.Minute, 400 * time.Millisecond, true},
		{"normal idle timeout at the high-water mark", 10, 8, time.Minute, 400 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := testLimits()
			limits.MaxConnections, limits.IdleTimeout, limits.PressureIdleTimeout = tc.max, tc.idle, tc.hurt
			s := startBounded(t, okHandler(), limits, nil)
			clients := make([]*client, tc.open)
			for i := range clients {
				clients[i] = dial(t, s.addr)
				clients[i].mustGet("/")
			}
			bound := min(tc.idle, tc.hurt)
			if tc.max*highWaterPercent/100 >= tc.open {
				bound = tc.idle
			}
			if tc.wantClosed {
				// Not before half the bound: the clock is coarse, but not that coarse.
				if _, closed := clients[0].closedWithin(bound / 2); closed {
					t.Fatalf("closed before %s", bound/2)
				}
			}
			for i, c := range clients {
				wait := bound + slack
				if !tc.wantClosed {
					// Long past the shortened timeout; the others had the same time meanwhile.
					wait = 10 * time.Millisecond
					if i == 0 {
						wait = 4 * tc.hurt
					}
				}
				if _, closed := c.closedWithin(wait); closed != tc.wantClosed {
					t.Errorf("connection %d: closed=%v within %s, want %v", i, closed, wait, tc.wantClosed)
				}
			}
			if got := s.metric(t, "kube_oidc_issuer_connections_closed_total", "reason", "idle_timeout"); tc.wantClosed && got != float64(tc.open) {
				t.Errorf("idle_timeout closes = %v, want %d", got, tc.open)
			}
		})
	}
}

// TestConnectionCap: at the cap the longest-idle connection is closed to admit a fresh client,
// which is served at once; connections in a request are never closed, and when every connection
// is in a request the new one is refused.
func TestConnectionCap(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseAll()
	blocked := make(chan struct{}, 8)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			blocked <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	limits := testLimits()
	limits.MaxConnections = 4
	s := startBounded(t, h, limits, nil)

	// Three idle connections, the first the longest idle, and one in a request.
	idle := make([]*client, 3)
	for i := range idle {
		idle[i] = dial(t, s.addr)
		idle[i].mustGet("/")
		time.Sleep(20 * time.Millisecond) // distinct idle-since times on the coarse clock
	}
	busy := dial(t, s.addr)
	busyDone := make(chan error, 1)
	go func() {
		code, err := busy.get("/block")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		busyDone <- err
	}()
	<-blocked
	if got := s.metric(t, "kube_oidc_issuer_connections", "listener", "public", "state", "idle"); got != 3 {
		t.Errorf("idle connections gauge = %v, want 3", got)
	}

	begin := time.Now()
	fresh := dial(t, s.addr)
	fresh.mustGet("/")
	if took := time.Since(begin); took > time.Second {
		t.Errorf("a fresh client at the cap was served after %s, want under 1s", took)
	}
	if _, closed := idle[0].closedWithin(slack); !closed {
		t.Error("the longest-idle connection was not closed to admit the fresh client")
	}
	for i, c := range idle[1:] {
		if _, err := c.get("/"); err != nil {
			t.Errorf("idle connection %d was closed too: %v", i+1, err)
		}
	}
	if got := s.metric(t, "kube_oidc_issuer_connections_closed_total", "reason", "shed"); got != 1 {
		t.Errorf("shed = %v, want 1", got)
	}

	t.Run("refused when every connection is in a request", func(t *testing.T) {
		// The cap is full again: busy, fresh and idle[1..2]. Put those three in requests too.
		for _, c := range []*client{fresh, idle[1], idle[2]} {
			go func() { _, _ = c.get("/block") }()
			<-blocked
		}
		extra := dial(t, s.addr)
		if _, closed := extra.closedWithin(slack); !closed {
			t.Fatal("a connection beyond the cap was kept while every connection was in a request")
		}
		if got := s.metric(t, "kube_oidc_issuer_connections_refused_total"); got < 1 {
			t.Errorf("refused = %v, want at least 1", got)
		}
		releaseAll()
		if err := <-busyDone; err != nil {
			t.Errorf("the connection in a request was disturbed: %v", err)
		}
		// Requests over: a new client gets in.
		deadline := time.Now().Add(slack)
		for {
			if _, err := dial(t, s.addr).get("/"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no new connection admitted after the requests ended")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestAcceptErrorsMetric(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &failingListener{Listener: inner, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.ENFILE)}}
	l.failures.Store(3)
	reg := prometheus.NewRegistry()
	m, err := NewListenerMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	limits := testLimits()
	limits.Metrics = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, l, okHandler(), nil, testLogger(t), limits) }()
	defer func() {
		cancel()
		<-done
	}()
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + inner.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	want := `
# HELP kube_oidc_issuer_accept_errors_total Failed accepts on a listener (out of file descriptors or buffers); each is retried after a back-off and logged at warn (rate-limited).
# TYPE kube_oidc_issuer_accept_errors_total counter
kube_oidc_issuer_accept_errors_total{listener="public"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kube_oidc_issuer_accept_errors_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestHTTP2Connections: an HTTP/2 connection reads frames between requests and stays active
// while any stream is open, so only the idle timeout and stalled writes apply to it.
func TestHTTP2Connections(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, 1)
	cert, err := tls.X509KeyPair(pair.cert, pair.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		idle       time.Duration
		pause      time.Duration
		wantReused bool
	}{
		// Longer than the header and write timeouts (300 and 500 ms).
		{"kept beyond the header and write timeouts", time.Minute, 1200 * time.Millisecond, true},
		{"closed after the idle timeout", 300 * time.Millisecond, 300*time.Millisecond + slack, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limits := slowClientLimits()
			limits.IdleTimeout, limits.PressureIdleTimeout = tc.idle, tc.idle
			s := startBounded(t, okHandler(), limits, &tls.Config{Certificates: []tls.Certificate{cert}})
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			get := func() (proto string, reused bool) {
				t.Helper()
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://"+s.addr+"/", nil)
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				return res.Proto, reused
			}
			if proto, _ := get(); proto != "HTTP/2.0" {
				t.Fatalf("protocol %s, want HTTP/2.0", proto)
			}
			time.Sleep(tc.pause)
			if _, reused := get(); reused != tc.wantReused {
				t.Errorf("connection reused after %s idle: %v, want %v", tc.pause, reused, tc.wantReused)
			}
		})
	}
}

// TestHTTP2StreamNotRead: an HTTP/2 response the client never reads waits for flow-control
// window, not for the socket; the stream's write deadline still cuts it off.
func TestHTTP2StreamNotRead(t *testing.T) {
	ca := newTestCA(t)
	pair := ca.issue(t, 1)
	cert, err := tls.X509KeyPair(pair.cert, pair.key)
	if err != nil {
		t.Fatal(err)
	}
	writeFailed := make(chan time.Time, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 4096 { // 256 MiB: far beyond the client's flow-control window
			if _, err := w.Write(chunk); err != nil {
				writeFailed <- time.Now()
				return
			}
		}
	})
	limits := slowClientLimits()
	s := startBounded(t, h, limits, &tls.Config{Certificates: []tls.Certificate{cert}})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("https://" + s.addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", res.Proto)
	}
	begin := time.Now()
	select {
	case at := <-writeFailed:
		t.Logf("response write failed %s after the response headers (bound %s)", at.Sub(begin).Round(time.Millisecond), limits.WriteTimeout)
	case <-time.After(limits.WriteTimeout + slack):
		t.Fatalf("the unread response was still being written %s later, bound %s", limits.WriteTimeout+slack, limits.WriteTimeout)
	}
}

// nopConn is a connection that reads and writes instantly.
type nopConn struct{ net.Conn }

func (nopConn) Read(p []byte) (int, error)  { return len(p), nil }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }
func (nopConn) Close() error                { return nil }

// TestConnTrackingDoesNotAllocate: what the listener adds to every request (two state changes, a
// read, a write) allocates nothing.
func TestConnTrackingDoesNotAllocate(t *testing.T) {
	limits := testLimits()
	l := newBoundedListener(nopListener{}, limits.ListenerConfig, testLogger(t))
	defer l.stop()
	nc := l.admit(nopConn{})
	buf := make([]byte, 512)
	allocs := testing.AllocsPerRun(1000, func() {
		l.connState(nc, http.StateActive)
		_, _ = nc.Read(buf)
		_, _ = nc.Write(buf)
		l.connState(nc, http.StateIdle)
	})
	if allocs > 0 {
		t.Errorf("%v allocations per request, want 0", allocs)
	}
}

type nopListener struct{ net.Listener }

func (nopListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (nopListener) Close() error   { return nil }

func TestListenerConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*ListenerConfig)
		want   string
	}{
		{"defaults", func(*ListenerConfig) {}, ""},
		{"no connections", func(c *ListenerConfig) { c.MaxConnections = 0 }, "maximum connections 0"},
		{"no header timeout", func(c *ListenerConfig) { c.ReadHeaderTimeout = 0 }, "read-header timeout 0s"},
		{"no write timeout", func(c *ListenerConfig) { c.WriteTimeout = -time.Second }, "write timeout -1s"},
		{"no idle timeout", func(c *ListenerConfig) { c.IdleTimeout = 0 }, "idle timeout 0s"},
		{"pressure longer than idle", func(c *ListenerConfig) { c.PressureIdleTimeout = 3 * time.Minute }, "want at most the idle timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultPublicListenerConfig()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "public listener: ") {
				t.Errorf("error %v, want one about %q", err, tc.want)
			}
		})
	}
	if err := ServeWith(context.Background(), "127.0.0.1:0", okHandler(), nil, nil, ListenerConfig{}); err == nil {
		t.Error("ServeWith accepted an unbounded configuration")
	}
}

// epochListener is a bounded listener without its sweeper, whose epochs 1..100 ended at 1 s..100 s:
// an event stamped 100-n happened at least n+0.5 s before now (100.5 s).
func epochListener(t *testing.T, limits serveLimits) (l *boundedListener, now int64) {
	t.Helper()
	l = newBoundedListener(nopListener{}, limits.ListenerConfig, testLogger(t))
	t.Cleanup(l.stop)
	for i := range int64(100) {
		l.expired(func() int64 { return (i + 1) * int64(time.Second) }, nil)
	}
	return l, 100*int64(time.Second) + int64(time.Second)/2
}

// stampAgo is the stamp of an event that happened at least ago before now (see epochListener);
// under a second ago is the current epoch.
func stampAgo(ago time.Duration) int64 {
	if ago < time.Second {
		return 101
	}
	return 100 - int64(ago/time.Second-1)
}

// TestExpiry: what the sweeper closes, and why, by phase and age.
func TestExpiry(t *testing.T) {
	limits := testLimits()
	limits.ReadHeaderTimeout, limits.WriteTimeout = 5*time.Second, 10*time.Second
	for _, tc := range []struct {
		name          string
		phase         connPhase
		since, req, w time.Duration // ages; 0: not set
		h2            bool
		pressure      bool
		want          closeReason
	}{
		{name: "new, within the header timeout", phase: phaseNew, since: 4 * time.Second},
		{name: "new, past the header timeout", phase: phaseNew, since: 6 * time.Second, want: reasonHeaderTimeout},
		{name: "active, within the write timeout", phase: phaseActive, since: 9 * time.Second},
		{name: "active, past the write timeout", phase: phaseActive, since: 11 * time.Second, want: reasonWriteTimeout},
		{name: "active HTTP/2, long", phase: phaseActive, since: time.Minute, h2: true},
		{name: "write stalled", phase: phaseActive, since: time.Second, w: 11 * time.Second, h2: true, want: reasonWriteTimeout},
		{name: "idle, within the idle timeout", phase: phaseIdle, since: 50 * time.Second},
		{name: "idle, past the idle timeout", phase: phaseIdle, since: 61 * time.Second, want: reasonIdleTimeout},
		{name: "idle, under pressure", phase: phaseIdle, since: 31 * time.Second, pressure: true, want: reasonIdleTimeout},
		{name: "next request's headers, in time", phase: phaseIdle, since: 90 * time.Second, req: 4 * time.Second},
		{name: "next request's headers, too slow", phase: phaseIdle, since: 20 * time.Second, req: 6 * time.Second, want: reasonHeaderTimeout},
		{name: "idle HTTP/2 reading frames", phase: phaseIdle, since: 20 * time.Second, req: 6 * time.Second, h2: true},
		{name: "hijacked", phase: phaseHijacked, since: 99 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, now := epochListener(t, limits)
			c := l.admit(nopConn{}).(*trackedConn)
			c.phase.Store(uint32(tc.phase))
			c.since.Store(stampAgo(tc.since))
			if tc.req > 0 {
				c.reqStart.Store(stampAgo(tc.req))
			}
			if tc.w > 0 {
				c.writeStart.Store(stampAgo(tc.w))
			}
			if tc.h2 {
				c.proto.Store(protoHTTP2)
			}
			idle := l.idle
			if tc.pressure {
				idle = l.pressureIdle
			}
			l.mu.Lock()
			got := l.expiredLocked(c, now, idle)
			l.mu.Unlock()
			if got != tc.want {
				t.Errorf("%s, want %s", got, tc.want)
			}
		})
	}
}

// TestStarvedSweeperClosesLate: an epoch that lasted long (the sweeper did not run) does not
// make what happened during it look old.
func TestStarvedSweeperClosesLate(t *testing.T) {
	limits := testLimits()
	limits.ReadHeaderTimeout = 5 * time.Second
	l := newBoundedListener(nopListener{}, limits.ListenerConfig, testLogger(t))
	defer l.stop()
	sec := int64(time.Second)
	l.expired(func() int64 { return sec }, nil)
	// Epoch 2 lasts 30 s; a connection is accepted at its very end.
	c := l.admit(nopConn{}).(*trackedConn)
	if out, _ := l.expired(func() int64 { return 31 * sec }, nil); len(out) != 0 {
		t.Fatalf("closed %s at the sweep right after its accept", out[0].reason)
	}
	if out, _ := l.expired(func() int64 { return 35 * sec }, nil); len(out) != 0 {
		t.Fatalf("closed %s 4 s after the sweep that followed its accept", out[0].reason)
	}
	out, _ := l.expired(func() int64 { return 37 * sec }, nil)
	if len(out) != 1 || out[0].c != c || out[0].reason != reasonHeaderTimeout {
		t.Fatalf("expired %v, want the connection, header_timeout", out)
	}
}

// TestShedOrder: at the cap, idle connections go first (the longest idle first), then ones
// that sent nothing since accepted, then ones stuck in their headers for over a second; one in
// the middle of a request, or that just started sending one, never.
func TestShedOrder(t *testing.T) {
	type conn struct {
		name       string
		phase      connPhase
		since, req time.Duration // ages; req 0: no byte yet
		h2         bool
	}
	for _, tc := range []struct {
		name  string
		conns []conn
		n     int
		want  []string
	}{
		{"longest idle first", []conn{
			{name: "idle 3s", phase: phaseIdle, since: 3 * time.Second},
			{name: "idle 9s", phase: phaseIdle, since: 9 * time.Second},
			{name: "idle 5s", phase: phaseIdle, since: 5 * time.Second},
		}, 2, []string{"idle 9s", "idle 5s"}},
		{"idle before silent new before stuck", []conn{
			{name: "stuck 4s", phase: phaseNew, since: 9 * time.Second, req: 4 * time.Second},
			{name: "silent 2s", phase: phaseNew, since: 2 * time.Second},
			{name: "idle 1s", phase: phaseIdle, since: time.Second},
		}, 3, []string{"idle 1s", "silent 2s", "stuck 4s"}},
		{"never a request in progress", []conn{
			{name: "active", phase: phaseActive, since: 9 * time.Second},
			{name: "hijacked", phase: phaseHijacked, since: 9 * time.Second},
			{name: "headers just started", phase: phaseIdle, since: 9 * time.Second, req: time.Second / 10},
			{name: "handshake just started", phase: phaseNew, since: time.Second / 2, req: time.Second / 2},
		}, 4, nil},
		{"an idle HTTP/2 connection's frames are not a request", []conn{
			{name: "h2 idle", phase: phaseIdle, since: 2 * time.Second, req: time.Second / 10, h2: true},
		}, 1, []string{"h2 idle"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, now := epochListener(t, testLimits())
			names := map[*trackedConn]string{}
			for _, c := range tc.conns {
				tc := l.admit(nopConn{}).(*trackedConn)
				tc.phase.Store(uint32(c.phase))
				tc.since.Store(stampAgo(c.since))
				if c.req > 0 {
					tc.reqStart.Store(stampAgo(c.req))
				}
				if c.h2 {
					tc.proto.Store(protoHTTP2)
				}
				names[tc] = c.name
			}
			l.mu.Lock()
			victims := l.pickVictimsLocked(now, tc.n)
			l.mu.Unlock()
			var got []string
			for _, v := range victims {
				got = append(got, names[v])
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("shed %q, want %q", got, tc.want)
			}
		})
	}
}
