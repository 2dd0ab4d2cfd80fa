package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

const metricsNamespace = "kube_oidc_issuer"

// route labels the requests counter. Only the two documents and "everything else" are told
// apart: labelling by request path would let any client create unbounded series.
type route int

const (
	routeDiscovery route = iota
	routeJWKS
	routeOther
	numRoutes
)

func (r route) String() string {
	switch r {
	case routeDiscovery:
		return "discovery"
	case routeJWKS:
		return "jwks"
	}
	return "other"
}

func routeOf(k docKind) route {
	if k == kindJWKS {
		return routeJWKS
	}
	return routeDiscovery
}

// status indexes the status codes the public handler can answer with. Each handler knows its code
// when it writes it, so no ResponseWriter wrapper (and no allocation) is needed to observe it.
type status int

const (
	status200 status = iota
	status204
	status304
	status404
	status405
	status503
	numStatuses
)

func statusCode(s status) int {
	switch s {
	case status200:
		return http.StatusOK
	case status204:
		return http.StatusNoContent
	case status304:
		return http.StatusNotModified
	case status404:
		return http.StatusNotFound
	case status405:
		return http.StatusMethodNotAllowed
	}
	return http.StatusServiceUnavailable
}

type metrics struct {
	requests *prometheus.CounterVec
	// requestCounters is resolved once: CounterVec.WithLabelValues hashes its labels and may
	// allocate on every call, while incrementing a resolved Counter is one atomic add. Every
	// combination is created up front, which also makes the zero series visible from the start
	// (an alert on the rate of 503s needs the series to exist).
	requestCounters [numRoutes][numStatuses]prometheus.Counter

	generation prometheus.Gauge
	keys       prometheus.Gauge
	lastChange prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "http_requests_total",
			Help:      "Requests to the public listener, by route (discovery, jwks, other) and status code.",
		}, []string{"route", "code"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "keyset_generation",
			Help:      "Generation of the published documents; it changes with every key-set change, and is 0 before the first publication.",
		}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "keyset_keys",
			Help:      "Number of keys in the published JWKS (without legacy empty-kid copies).",
		}),
		lastChange: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace,
			Name:      "keyset_last_change_timestamp_seconds",
			Help:      "When the published key set was last rendered, in seconds since the Unix epoch; 0 before the first publication.",
		}),
	}
	for r := range numRoutes {
		for c := range numStatuses {
			m.requestCounters[r][c] = m.requests.WithLabelValues(r.String(), strconv.Itoa(statusCode(c)))
		}
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.generation, m.keys, m.lastChange} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *metrics) request(r route, s status) {
	m.requestCounters[r][s].Inc()
}

func (m *metrics) published(d *documents.Set) {
	m.generation.Set(float64(d.Generation))
	m.keys.Set(float64(d.Keys.Len()))
	changed := d.Rendered
	if changed.IsZero() {
		// A Set built by hand may lack it; the publication time is the next best answer.
		changed = time.Now()
	}
	m.lastChange.Set(float64(changed.UnixNano()) / 1e9)
}
