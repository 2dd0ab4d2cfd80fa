package server

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

func TestKeySetMetrics(t *testing.T) {
	s, reg := newTestServer(t, testIssuer)
	names := []string{
		"kube_oidc_issuer_keyset_generation",
		"kube_oidc_issuer_keyset_keys",
		"kube_oidc_issuer_keyset_last_change_timestamp_seconds",
	}
	const before = `
# HELP kube_oidc_issuer_keyset_generation Generation of the published documents; it changes with every key-set change, and is 0 before the first publication.
# TYPE kube_oidc_issuer_keyset_generation gauge
kube_oidc_issuer_keyset_generation 0
# HELP kube_oidc_issuer_keyset_keys Number of keys in the published JWKS (without legacy empty-kid copies).
# TYPE kube_oidc_issuer_keyset_keys gauge
kube_oidc_issuer_keyset_keys 0
# HELP kube_oidc_issuer_keyset_last_change_timestamp_seconds When the published key set was last rendered, in seconds since the Unix epoch; 0 before the first publication.
# TYPE kube_oidc_issuer_keyset_last_change_timestamp_seconds gauge
kube_oidc_issuer_keyset_last_change_timestamp_seconds 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(before), names...); err != nil {
		t.Errorf("before Publish: %v", err)
	}

	s.Publish(renderTestSet(t, testIssuer, 7, newTestKey(t), newTestKey(t), newTestKey(t)))
	// 2026-11-23T10:00:00Z
	const after = `
# HELP kube_oidc_issuer_keyset_generation Generation of the published documents; it changes with every key-set change, and is 0 before the first publication.
# TYPE kube_oidc_issuer_keyset_generation gauge
kube_oidc_issuer_keyset_generation 7
# HELP kube_oidc_issuer_keyset_keys Number of keys in the published JWKS (without legacy empty-kid copies).
# TYPE kube_oidc_issuer_keyset_keys gauge
kube_oidc_issuer_keyset_keys 3
# HELP kube_oidc_issuer_keyset_last_change_timestamp_seconds When the published key set was last rendered, in seconds since the Unix epoch; 0 before the first publication.
# TYPE kube_oidc_issuer_keyset_last_change_timestamp_seconds gauge
kube_oidc_issuer_keyset_last_change_timestamp_seconds 1.795428e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(after), names...); err != nil {
		t.Errorf("after Publish: %v", err)
	}
	if got, want := testutil.ToFloat64(s.metrics.lastChange), float64(renderedAt().Unix()); got != want {
		t.Errorf("last change = %v, want %v", got, want)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestRequestMetrics(t *testing.T) {
	s, reg := newTestServer(t, testIssuer)
	h := s.PublicHandler()
	do := func(method, target string) {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, target, nil))
	}
	do("GET", jwksTarget) // 503 before publication
	s.Publish(renderTestSet(t, testIssuer, 1))
	for range 3 {
		do("GET", jwksTarget)
	}
	do("HEAD", discoveryTarget)
	do("POST", discoveryTarget)
	do("OPTIONS", jwksTarget)
	do("GET", "/nope")
	req := httptest.NewRequest("GET", jwksTarget, nil)
	req.Header.Set("If-None-Match", "*")
	h.ServeHTTP(httptest.NewRecorder(), req)

	const want = `
# HELP kube_oidc_issuer_http_requests_total Requests to the public listener, by route (discovery, jwks, other) and status code.
# TYPE kube_oidc_issuer_http_requests_total counter
kube_oidc_issuer_http_requests_total{code="200",route="discovery"} 1
kube_oidc_issuer_http_requests_total{code="200",route="jwks"} 3
kube_oidc_issuer_http_requests_total{code="200",route="other"} 0
kube_oidc_issuer_http_requests_total{code="204",route="discovery"} 0
kube_oidc_issuer_http_requests_total{code="204",route="jwks"} 1
kube_oidc_issuer_http_requests_total{code="204",route="other"} 0
kube_oidc_issuer_http_requests_total{code="304",route="discovery"} 0
kube_oidc_issuer_http_requests_total{code="304",route="jwks"} 1
kube_oidc_issuer_http_requests_total{code="304",route="other"} 0
kube_oidc_issuer_http_requests_total{code="404",route="discovery"} 0
kube_oidc_issuer_http_requests_total{code="404",route="jwks"} 0
kube_oidc_issuer_http_requests_total{code="404",route="other"} 1
kube_oidc_issuer_http_requests_total{code="405",route="discovery"} 1
kube_oidc_issuer_http_requests_total{code="405",route="jwks"} 0
kube_oidc_issuer_http_requests_total{code="405",route="other"} 0
kube_oidc_issuer_http_requests_total{code="503",route="discovery"} 0
kube_oidc_issuer_http_requests_total{code="503",route="jwks"} 1
kube_oidc_issuer_http_requests_total{code="503",route="other"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kube_oidc_issuer_http_requests_total"); err != nil {
		t.Error(err)
	}
}

func TestMetricsRegistrationConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{IssuerURL: testIssuer, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{IssuerURL: testIssuer, Registerer: reg}); err == nil {
		t.Error("a second server registered the same metrics without an error")
	}
}

func TestSourceStatusCollector(t *testing.T) {
	status := []keys.SourceStatus{
		{Name: "secret/eksa-system/c1-sa", Ready: true, Healthy: true, Keys: 2, LastGood: time.Unix(100, 0)},
		{Name: "file//etc/kubernetes/pki/sa.pub", Ready: true, Healthy: false, Keys: 1, Errors: 3, LastError: "bad PEM"},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSourceStatusCollector(func() []keys.SourceStatus { return status }))
	const want = `
# HELP kube_oidc_issuer_key_source_errors_total Observations of a key source that failed (unreadable, malformed, or holding no key), since the process started.
# TYPE kube_oidc_issuer_key_source_errors_total counter
kube_oidc_issuer_key_source_errors_total{source="file//etc/kubernetes/pki/sa.pub"} 3
kube_oidc_issuer_key_source_errors_total{source="secret/eksa-system/c1-sa"} 0
# HELP kube_oidc_issuer_key_source_healthy 1 if the key source's latest observation was good, else 0 (its last good keys are still published).
# TYPE kube_oidc_issuer_key_source_healthy gauge
kube_oidc_issuer_key_source_healthy{source="file//etc/kubernetes/pki/sa.pub"} 0
kube_oidc_issuer_key_source_healthy{source="secret/eksa-system/c1-sa"} 1
# HELP kube_oidc_issuer_key_source_keys Keys in the key source's last good observation.
# TYPE kube_oidc_issuer_key_source_keys gauge
kube_oidc_issuer_key_source_keys{source="file//etc/kubernetes/pki/sa.pub"} 1
kube_oidc_issuer_key_source_keys{source="secret/eksa-system/c1-sa"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// Computed at scrape time: a later change shows without any update call.
	status[1].Errors, status[1].Healthy = 4, true
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(strings.Replace(want,
		`errors_total{source="file//etc/kubernetes/pki/sa.pub"} 3`, `errors_total{source="file//etc/kubernetes/pki/sa.pub"} 4`, 1),
		`healthy{source="file//etc/kubernetes/pki/sa.pub"} 0`, `healthy{source="file//etc/kubernetes/pki/sa.pub"} 1`, 1))); err != nil {
		t.Errorf("after the status changed: %v", err)
	}
	problems, err := testutil.CollectAndLint(NewSourceStatusCollector(func() []keys.SourceStatus { return status }))
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestSourceStatusCollectorInvalidName(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSourceStatusCollector(func() []keys.SourceStatus {
		return []keys.SourceStatus{{Name: "file/\xff"}}
	}))
	if _, err := reg.Gather(); err == nil {
		t.Error("a source name that is not UTF-8 gathered without an error")
	}
}
