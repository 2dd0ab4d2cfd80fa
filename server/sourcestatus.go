package server

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
)

// NewSourceStatusCollector exports the key sources' health, read at scrape time from status
// (normally keys.Collector.Status), so the metrics can never disagree with /readyz:
//
//	kube_oidc_issuer_key_source_errors_total{source}  failed observations since start
//	kube_oidc_issuer_key_source_healthy{source}       1 if the latest observation was good
//	kube_oidc_issuer_key_source_keys{source}          keys in the source's last good observation
//
// A source that turned bad shows healthy 0 and a rising error count while its last good keys stay
// published: the signal to alert on before a rotation goes wrong.
func NewSourceStatusCollector(status func() []keys.SourceStatus) prometheus.Collector {
	label := []string{"source"}
	return &sourceStatusCollector{
		status: status,
		errors: prometheus.NewDesc(metricsNamespace+"_key_source_errors_total",
			"Observations of a key source that failed (unreadable, malformed, or holding no key), since the process started.", label, nil),
		healthy: prometheus.NewDesc(metricsNamespace+"_key_source_healthy",
			"1 if the key source's latest observation was good, else 0 (its last good keys are still published).", label, nil),
		keys: prometheus.NewDesc(metricsNamespace+"_key_source_keys",
			"Keys in the key source's last good observation.", label, nil),
	}
}

type sourceStatusCollector struct {
	status                func() []keys.SourceStatus
	errors, healthy, keys *prometheus.Desc
}

func (c *sourceStatusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.errors
	ch <- c.healthy
	ch <- c.keys
}

func (c *sourceStatusCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.status() {
		healthy := 0.0
		if st.Healthy {
			healthy = 1
		}
		send(ch, c.errors, prometheus.CounterValue, float64(st.Errors), st.Name)
		send(ch, c.healthy, prometheus.GaugeValue, healthy, st.Name)
		send(ch, c.keys, prometheus.GaugeValue, float64(st.Keys), st.Name)
	}
}

// send reports a metric that cannot be built (a source name that is not valid UTF-8, say) as a
// scrape error rather than panicking inside the registry's collection goroutine.
func send(ch chan<- prometheus.Metric, desc *prometheus.Desc, t prometheus.ValueType, v float64, source string) {
	m, err := prometheus.NewConstMetric(desc, t, v, source)
	if err != nil {
		m = prometheus.NewInvalidMetric(desc, fmt.Errorf("key source %q: %w", source, err))
	}
	ch <- m
}
