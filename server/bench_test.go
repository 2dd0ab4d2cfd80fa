package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
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
