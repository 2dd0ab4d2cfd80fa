package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

func keysCheck(st []keys.SourceStatus) ReadinessCheck {
	// The lead's wiring: ready once every source delivered keys, detail = the statuses.
	return ReadinessCheck{Name: "keys", Check: func() (bool, any) {
		for _, s := range st {
			if !s.Ready {
				return false, st
			}
		}
		return true, st
	}}
}

func TestReadyz(t *testing.T) {
	good := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	failed := time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	waiting := []keys.SourceStatus{{Name: "secret/eksa-system/c1-sa", LastError: "secret not found", LastFailed: failed, Errors: 1}}
	// A Secret that turned malformed after delivering keys: its last good keys are still served.
	malformed := []keys.SourceStatus{{Name: "secret/eksa-system/c1-sa", Ready: true, Healthy: false, Keys: 1,
		LastError: "secret eksa-system/c1-sa key tls.crt: no PEM block found", LastGood: good, LastFailed: failed, Errors: 2}}
	healthy := []keys.SourceStatus{{Name: "secret/eksa-system/c1-sa", Ready: true, Healthy: true, Keys: 1, LastGood: good}}

	key := newTestKey(t)
	kid := key.Public.KeyID()
	docs := `{"generation":3,"keys":1,"kids":["` + kid + `"],"rendered":"2026-11-23T10:00:00Z"}`

	for _, tc := range []struct {
		name      string
		published bool
		checks    []ReadinessCheck
		method    string
		wantCode  int
		wantBody  string
	}{
		{name: "nothing published, no checks", wantCode: 503,
			wantBody: `{"ready":false,"documents":null,"checks":{}}`},
		{name: "waiting for the keys", checks: []ReadinessCheck{keysCheck(waiting)}, wantCode: 503,
			wantBody: `{"ready":false,"documents":null,"checks":{"keys":[{"name":"secret/eksa-system/c1-sa","ready":false,"healthy":false,"keys":0,"lastError":"secret not found","lastFailed":"2026-11-23T09:30:00Z","errors":1}]}}`},
		{name: "published and healthy", published: true, checks: []ReadinessCheck{keysCheck(healthy)}, wantCode: 200,
			wantBody: `{"ready":true,"documents":` + docs + `,"checks":{"keys":[{"name":"secret/eksa-system/c1-sa","ready":true,"healthy":true,"keys":1,"lastGood":"2026-11-23T09:00:00Z","errors":0}]}}`},
		{name: "malformed secret keeps serving the last good keys", published: true, checks: []ReadinessCheck{keysCheck(malformed)}, wantCode: 200,
			wantBody: `{"ready":true,"documents":` + docs + `,"checks":{"keys":[{"name":"secret/eksa-system/c1-sa","ready":true,"healthy":false,"keys":1,"lastError":"secret eksa-system/c1-sa key tls.crt: no PEM block found","lastGood":"2026-11-23T09:00:00Z","lastFailed":"2026-11-23T09:30:00Z","errors":2}]}}`},
		{name: "one check not ready", published: true, wantCode: 503,
			checks:   []ReadinessCheck{keysCheck(healthy), {Name: "mirror", Check: func() (bool, any) { return false, "s3: access denied" }}},
			wantBody: `{"ready":false,"documents":` + docs + `,"checks":{"keys":[{"name":"secret/eksa-system/c1-sa","ready":true,"healthy":true,"keys":1,"lastGood":"2026-11-23T09:00:00Z","errors":0}],"mirror":"s3: access denied"}}`},
		{name: "HEAD", published: true, method: "HEAD", wantCode: 200, wantBody: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, reg := newTestServer(t, testIssuer)
			if tc.published {
				s.Publish(renderTestSet(t, testIssuer, 3, key))
			}
			method := tc.method
			if method == "" {
				method = "GET"
			}
			rec := httptest.NewRecorder()
			s.InternalHandler(reg, tc.checks...).ServeHTTP(rec, httptest.NewRequest(method, "/readyz", nil))
			if rec.Code != tc.wantCode {
				t.Errorf("status %d, want %d", rec.Code, tc.wantCode)
			}
			want := tc.wantBody
			if want != "" {
				want += "\n"
			}
			if got := rec.Body.String(); got != want {
				t.Errorf("body\n%s\nwant\n%s", got, want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
		})
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	s, reg := newTestServer(t, testIssuer)
	s.Publish(renderTestSet(t, testIssuer, 5))
	h := s.InternalHandler(reg)

	get := func(path string) (*http.Response, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		res := rec.Result()
		body, _ := io.ReadAll(res.Body)
		return res, string(body)
	}
	res, body := get("/healthz")
	if res.StatusCode != 200 || body != "ok" || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("/healthz: %d %q %v", res.StatusCode, body, res.Header)
	}
	res, body = get("/metrics")
	if res.StatusCode != 200 || !strings.Contains(body, "\nkube_oidc_issuer_keyset_generation 5\n") ||
		!strings.Contains(body, `kube_oidc_issuer_http_requests_total{code="200",route="jwks"} 0`) {
		t.Errorf("/metrics: %d\n%s", res.StatusCode, body)
	}
	if res, _ := get("/nope"); res.StatusCode != 404 {
		t.Errorf("/nope: %d", res.StatusCode)
	}
	if res, _ := get("/openid/v1/jwks"); res.StatusCode != 404 {
		t.Errorf("the internal listener serves the JWKS: %d", res.StatusCode)
	}
}

func TestInternalHandlerRejectsBadChecks(t *testing.T) {
	s, _ := newTestServer(t, testIssuer)
	ok := func() (bool, any) { return true, nil }
	for name, checks := range map[string][]ReadinessCheck{
		"empty name": {{Check: ok}},
		"no func":    {{Name: "x"}},
		"duplicate":  {{Name: "x", Check: ok}, {Name: "x", Check: ok}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			s.InternalHandler(nil, checks...)
		}()
	}
}
