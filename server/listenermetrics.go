package server

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// ListenerMetrics exports the bounded listeners' figures, labelled by ListenerConfig.Name. One
// value serves every listener of a process; give it to each ListenerConfig.
//
//   - kube_oidc_issuer_connections{listener,state}: open connections by state (new, active,
//     idle, hijacked), counted when scraped.
//   - kube_oidc_issuer_connections_max{listener}: the cap.
//   - kube_oidc_issuer_connections_closed_total{listener,reason}: connections the listener
//     closed: header_timeout, write_timeout, idle_timeout, shed (to admit a new one at the cap).
//   - kube_oidc_issuer_connections_refused_total{listener}: connections refused at the cap with
//     nothing to shed.
//   - kube_oidc_issuer_accept_errors_total{listener}: failed accepts (out of file descriptors…).
type ListenerMetrics struct {
	acceptErrors *prometheus.CounterVec
	closed       *prometheus.CounterVec
	refused      *prometheus.CounterVec
	open         *prometheus.Desc
	maxOpen      *prometheus.Desc

	mu        sync.Mutex
	listeners []*boundedListener
}

// NewListenerMetrics returns the listeners' metrics registered with reg (unregistered if nil).
func NewListenerMetrics(reg prometheus.Registerer) (*ListenerMetrics, error) {
	m := newListenerMetrics()
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func newListenerMetrics() *ListenerMetrics {
	return &ListenerMetrics{
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "accept_errors_total",
			Help:      "Failed accepts on a listener (out of file descriptors or buffers); each is retried after a back-off and logged at warn (rate-limited).",
		}, []string{"listener"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "connections_closed_total",
			Help:      "Connections a listener closed itself, by reason: header_timeout (handshake or request headers too slow), write_timeout (request or write too slow), idle_timeout, shed (the oldest idle ones, to admit new connections at the cap).",
		}, []string{"listener", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace,
			Name:      "connections_refused_total",
			Help:      "Connections refused at the connection cap because every open one was in the middle of a request.",
		}, []string{"listener"}),
		open: prometheus.NewDesc(metricsNamespace+"_connections",
			"Open connections of a listener by state: new (handshake, first request pending), active (in a request), idle (keep-alive), hijacked.",
			[]string{"listener", "state"}, nil),
		maxOpen: prometheus.NewDesc(metricsNamespace+"_connections_max",
			"The listener's connection cap (--max-connections, --internal-max-connections).",
			[]string{"listener"}, nil),
	}
}

// listenerCounters are one listener's counters, resolved once: the listener increments them
// from Accept and the sweeper without a label lookup.
type listenerCounters struct {
	acceptErrors prometheus.Counter
	refused      prometheus.Counter
	closed       [numReasons]prometheus.Counter
}

func (m *ListenerMetrics) attach(l *boundedListener) *listenerCounters {
	m.mu.Lock()
	m.listeners = append(m.listeners, l)
	m.mu.Unlock()
	name := l.cfg.Name
	c := &listenerCounters{
		acceptErrors: m.acceptErrors.WithLabelValues(name),
		refused:      m.refused.WithLabelValues(name),
	}
	for r := range numReasons {
		if r != reasonNone {
			c.closed[r] = m.closed.WithLabelValues(name, r.String())
		}
	}
	return c
}

func (m *ListenerMetrics) detach(l *boundedListener) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listeners = slices.DeleteFunc(m.listeners, func(x *boundedListener) bool { return x == l })
}

// Describe implements prometheus.Collector.
func (m *ListenerMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.acceptErrors.Describe(ch)
	m.closed.Describe(ch)
	m.refused.Describe(ch)
	ch <- m.open
	ch <- m.maxOpen
}

// Collect implements prometheus.Collector.
func (m *ListenerMetrics) Collect(ch chan<- prometheus.Metric) {
	m.acceptErrors.Collect(ch)
	m.closed.Collect(ch)
	m.refused.Collect(ch)
	m.mu.Lock()
	listeners := slices.Clone(m.listeners)
	m.mu.Unlock()
	for _, l := range listeners {
		counts := l.phaseCounts()
		for p := range numPhases {
			ch <- prometheus.MustNewConstMetric(m.open, prometheus.GaugeValue, float64(counts[p]), l.cfg.Name, p.String())
		}
		ch <- prometheus.MustNewConstMetric(m.maxOpen, prometheus.GaugeValue, float64(l.cfg.MaxConnections), l.cfg.Name)
	}
}
