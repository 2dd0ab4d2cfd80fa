package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestServerIssuers: a server without an issuer of its own (fleet mode) serves exactly the issuers
// added, each its own documents under its own paths, whatever the Host header says.
func TestServerIssuers(t *testing.T) {
	s, err := New(Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const a, b = "https://oidc.example/clusters/a", "https://oidc.example/clusters/b"
	ia, err := s.AddIssuer(a)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.AddIssuer(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddIssuer(a); !errors.Is(err, ErrPathTaken) {
		t.Fatalf("adding %s twice: err = %v, want ErrPathTaken", a, err)
	}
	if _, err := s.AddIssuer("https://oidc.example/clusters/c/"); err == nil {
		t.Fatal("an invalid issuer URL was added")
	}
	setA, setB := renderTestSet(t, a, 1), renderTestSet(t, b, 1)
	ia.Publish(setA)

	get := func(method, target, host string) *httptest.ResponseRecorder {
		t.Helper()
		var first *httptest.ResponseRecorder
		for _, h := range []http.Handler{s.PublicHandler(), s.publicRouter()} {
			req := httptest.NewRequest(method, target, nil)
			if host != "" {
				req.Host = host
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if first == nil {
				first = rec
			} else if rec.Code != first.Code || !bytes.Equal(rec.Body.Bytes(), first.Body.Bytes()) {
				t.Errorf("%s %s: router %d %q, shortcut %d %q", method, target, rec.Code, rec.Body, first.Code, first.Body)
			}
		}
		return first
	}
	for _, tc := range []struct {
		method, target, host string
		code                 int
		body                 []byte
	}{
		{"GET", "/clusters/a/openid/v1/jwks", "", 200, setA.JWKS.Body},
		{"GET", "/clusters/a/.well-known/openid-configuration", "", 200, setA.Discovery.Body},
		{"GET", "/clusters/a/openid/v1/jwks", "evil.example", 200, setA.JWKS.Body},
		{"GET", "/clusters/b/openid/v1/jwks", "", 503, nil}, // added, nothing published yet
		{"GET", "/clusters/c/openid/v1/jwks", "", 404, nil},
		{"GET", "/clusters/a/../b/openid/v1/jwks", "", 404, nil},
		{"GET", "/clusters/a%2F..%2Fb/openid/v1/jwks", "", 404, nil},
		{"GET", "/clusters/openid/v1/jwks", "", 404, nil},
		{"OPTIONS", "/clusters/a/openid/v1/jwks", "", 204, nil},
		{"POST", "/clusters/a/openid/v1/jwks", "", 405, nil},
		{"POST", "/clusters/c/openid/v1/jwks", "", 404, nil},
	} {
		t.Run(fmt.Sprint(tc.method, tc.target, tc.host), func(t *testing.T) {
			rec := get(tc.method, tc.target, tc.host)
			if rec.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
			if tc.body != nil && !bytes.Equal(rec.Body.Bytes(), tc.body) {
				t.Fatalf("body %s, want %s", rec.Body, tc.body)
			}
		})
	}

	ib.Publish(setB)
	if rec := get("GET", "/clusters/b/openid/v1/jwks", ""); rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), setB.JWKS.Body) {
		t.Fatalf("b after publish: %d %s", rec.Code, rec.Body)
	}
	s.RemoveIssuer(ia)
	if rec := get("GET", "/clusters/a/openid/v1/jwks", ""); rec.Code != 404 {
		t.Fatalf("a after removal: %d", rec.Code)
	}
	if rec := get("GET", "/clusters/b/openid/v1/jwks", ""); rec.Code != 200 {
		t.Fatalf("b after a's removal: %d", rec.Code)
	}
	s.RemoveIssuer(ia) // twice: nothing
	if s.Issuers() != 1 {
		t.Fatalf("Issuers() = %d, want 1", s.Issuers())
	}
	// The paths are free again.
	if _, err := s.AddIssuer(a); err != nil {
		t.Fatal(err)
	}
	// A server without an issuer of its own ignores Publish.
	s.Publish(setA)
	if s.Current() != nil {
		t.Fatal("Current() of a fleet server is not nil")
	}
}

// TestFleetRouteAllocatesNothing: routing among many issuers stays allocation-free.
func TestFleetRouteAllocatesNothing(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var target string
	for n := range 1000 {
		u := fmt.Sprintf("https://oidc.example/clusters/c%d", n)
		i, err := s.AddIssuer(u)
		if err != nil {
			t.Fatal(err)
		}
		i.Publish(renderTestSet(t, u, 1))
		target = fmt.Sprintf("/clusters/c%d/openid/v1/jwks", n)
	}
	h := s.PublicHandler()
	req := httptest.NewRequest("GET", target, nil)
	w := newDiscardResponseWriter()
	allocs := testing.AllocsPerRun(100, func() {
		w.reset()
		h.ServeHTTP(w, req)
	})
	if w.code != 200 {
		t.Fatalf("status %d", w.code)
	}
	if allocs != 0 {
		t.Fatalf("%.1f allocations per request, want 0", allocs)
	}
}
