package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// hotPathRequests are the requests relying parties make all day; each must be answered without
// a single allocation in this package.
func hotPathRequests(t testing.TB, s *Server) map[string]*http.Request {
	set := s.Current()
	cond := httptest.NewRequest("GET", jwksTarget, nil)
	cond.Header.Set("If-None-Match", `"other", `+set.JWKS.ETag)
	return map[string]*http.Request{
		"GET jwks":            httptest.NewRequest("GET", jwksTarget, nil),
		"GET discovery":       httptest.NewRequest("GET", discoveryTarget, nil),
		"HEAD jwks":           httptest.NewRequest("HEAD", jwksTarget, nil),
		"conditional GET 304": cond,
	}
}

// TestHotPathDoesNotAllocate counts allocations (it does not time anything), so it is stable on
// any machine.
func TestHotPathDoesNotAllocate(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	s.Publish(renderTestSet(t, testIssuer, 1, newTestKey(t), newTestKey(t)))
	h := s.PublicHandler()
	w := newDiscardResponseWriter()
	for name, req := range hotPathRequests(t, s) {
		allocs := testing.AllocsPerRun(1000, func() {
			w.reset()
			h.ServeHTTP(w, req)
		})
		if w.code != http.StatusOK && w.code != http.StatusNotModified {
			t.Fatalf("%s: status %d", name, w.code)
		}
		if allocs > 0 {
			t.Errorf("%s: %v allocations per request, want 0", name, allocs)
		}
	}
}

func benchmarkPublic(b *testing.B, h http.Handler, req *http.Request, wantCode int) {
	w := newDiscardResponseWriter()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.reset()
		h.ServeHTTP(w, req)
	}
	b.StopTimer()
	if w.code != wantCode {
		b.Fatalf("status %d, want %d", w.code, wantCode)
	}
}

func benchServer(b *testing.B) *Server {
	// No logger: benchmark output must stay readable.
	s, err := New(Config{IssuerURL: testIssuer})
	if err != nil {
		b.Fatal(err)
	}
	s.Publish(renderTestSet(b, testIssuer, 1, newTestKey(b), newTestKey(b)))
	return s
}

// BenchmarkJWKSHandler is a JWKS GET through PublicHandler (the chi router with its document
// shortcut).
func BenchmarkJWKSHandler(b *testing.B) {
	s := benchServer(b)
	benchmarkPublic(b, s.PublicHandler(), httptest.NewRequest("GET", jwksTarget, nil), http.StatusOK)
}

func BenchmarkDiscoveryHandler(b *testing.B) {
	s := benchServer(b)
	benchmarkPublic(b, s.PublicHandler(), httptest.NewRequest("GET", discoveryTarget, nil), http.StatusOK)
}

func BenchmarkJWKS304(b *testing.B) {
	s := benchServer(b)
	req := httptest.NewRequest("GET", jwksTarget, nil)
	req.Header.Set("If-None-Match", s.Current().JWKS.ETag)
	benchmarkPublic(b, s.PublicHandler(), req, http.StatusNotModified)
}

// BenchmarkJWKSChiRouterOnly is the same request through the bare chi router, for comparison:
// chi's Mux.ServeHTTP copies the request to attach its routing context, which is why the
// documents bypass it.
func BenchmarkJWKSChiRouterOnly(b *testing.B) {
	s := benchServer(b)
	benchmarkPublic(b, s.publicRouter(), httptest.NewRequest("GET", jwksTarget, nil), http.StatusOK)
}

// BenchmarkNotFound is the router path (scanners probing random paths).
func BenchmarkNotFound(b *testing.B) {
	s := benchServer(b)
	benchmarkPublic(b, s.PublicHandler(), httptest.NewRequest("GET", "/wp-login.php", nil), http.StatusNotFound)
}

// BenchmarkJWKSHandlerParallel shows the shared request counter under contention.
func BenchmarkJWKSHandlerParallel(b *testing.B) {
	s := benchServer(b)
	h := s.PublicHandler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := newDiscardResponseWriter()
		req := httptest.NewRequest("GET", jwksTarget, nil)
		for pb.Next() {
			w.reset()
			h.ServeHTTP(w, req)
		}
	})
}

// BenchmarkServeKeepAlive serves the JWKS over loopback to keep-alive clients, end to end through
// the listener and net/http, and compares the server configurations: bare (http.Server without
// timeouts, the yardstick), timeouts (http.Server's timeouts as before issue 13: deadlines re-armed
// on every request) and bounded (serve: the bounded listener with every protection on). The
// clients run in the same process and allocate nothing; compare the ns/op of the three.
func BenchmarkServeKeepAlive(b *testing.B) {
	s := benchServer(b)
	h := s.PublicHandler()
	for _, tc := range []struct {
		name  string
		start func(b *testing.B, l net.Listener) (stop func())
	}{
		{"bare", func(_ *testing.B, l net.Listener) func() {
			srv := &http.Server{Handler: h}
			go func() { _ = srv.Serve(l) }()
			return func() { _ = srv.Close() }
		}},
		{"timeouts", func(_ *testing.B, l net.Listener) func() {
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
				WriteTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 32 << 10}
			go func() { _ = srv.Serve(l) }()
			return func() { _ = srv.Close() }
		}},
		{"bounded", func(b *testing.B, l net.Listener) func() {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- serve(ctx, l, h, nil, nil, defaultServeLimits()) }()
			return func() {
				cancel()
				if err := <-done; err != nil {
					b.Error(err)
				}
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			stop := tc.start(b, l)
			defer stop()
			req := []byte("GET " + jwksTarget + " HTTP/1.1\r\nHost: issuer.example\r\n\r\n")
			respLen := benchResponseLen(b, l.Addr().String(), req)
			b.ReportAllocs()
			b.SetParallelism(8) // 8 × GOMAXPROCS connections, like wrk -c50 on a small machine
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", l.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				buf := make([]byte, respLen)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchResponseLen is the length of the whole response to req (headers and body), which does
// not change between requests: the benchmark's clients read exactly that many bytes.
func benchResponseLen(b *testing.B, addr string, req []byte) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(req); err != nil {
		b.Fatal(err)
	}
	var counted countingReader
	counted.r = c
	res, err := http.ReadResponse(bufio.NewReaderSize(&counted, 1), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		b.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Date") == "" {
		b.Fatalf("status %d", res.StatusCode)
	}
	return counted.n
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
