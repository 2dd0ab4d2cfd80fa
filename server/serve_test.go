package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServe runs serve on 127.0.0.1 and returns the base URL, the cancel that stops it and the
// channel serve's result arrives on (closed after it, so the cleanup can wait on it too).
func startServe(t *testing.T, h http.Handler, limits serveLimits) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, l, h, nil, testLogger(t), limits)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("serve did not return")
		}
	})
	return "http://" + l.Addr().String(), cancel, done
}

func TestServeGracefulShutdown(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	url, cancel, done := startServe(t, h, defaultServeLimits())

	type result struct {
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		res, err := http.Get(url + "/slow")
		if err != nil {
			inflight <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		inflight <- result{string(b), err}
	}()
	<-started
	cancel()

	// The listener closes at once, while the in-flight request keeps the server alive.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("serve returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}

	close(release)
	if r := <-inflight; r.err != nil || r.body != "done" {
		t.Errorf("in-flight request: %q, %v", r.body, r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after the last request")
	}
}

func TestServeShutdownIsBounded(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})
	limits := defaultServeLimits()
	limits.shutdown = 200 * time.Millisecond
	url, cancel, done := startServe(t, h, limits)
	go func() {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
		}
	}()
	<-started
	begin := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("shutdown took %s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck request kept serve from returning")
	}
}

func TestServeHeaderLimit(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	url, _, _ := startServe(t, ok, defaultServeLimits())
	for _, tc := range []struct {
		size int
		want int
	}{
		{16 << 10, http.StatusOK}, // a browser with a cookie jar fits
		{64 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, _ := http.NewRequest("GET", url+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", tc.size))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%d bytes of header: %v", tc.size, err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%d bytes of header: status %d, want %d", tc.size, res.StatusCode, tc.want)
		}
	}
}

// TestServeReadHeaderTimeout: a client that never finishes its headers is disconnected.
func TestServeReadHeaderTimeout(t *testing.T) {
	limits := defaultServeLimits()
	limits.ReadHeaderTimeout = 200 * time.Millisecond
	url, _, _ := startServe(t, http.NotFoundHandler(), limits)
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	begin := time.Now()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("closed after %s", took)
	}
}

func TestServeListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Serve(context.Background(), l.Addr().String(), http.NotFoundHandler(), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "listening on "+l.Addr().String()) {
		t.Errorf("Serve on a taken port: %v", err)
	}
}

// TestServeAddr covers Serve's own listening path end to end.
func TestServeAddr(t *testing.T) {
	// Find a free port, then let Serve bind it; the port is on loopback only.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), nil, testLogger(t))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/")
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Serve never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve returned %v, want nil", err)
	}
}
