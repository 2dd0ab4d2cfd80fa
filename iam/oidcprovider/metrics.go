package oidcprovider

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NewStatusCollector exports a Loop's status, read at scrape time (so the metrics can never
// disagree with /readyz):
//
//	kube_oidc_issuer_iam_reconcile_last_attempt_timestamp_seconds  0 until the first attempt
//	kube_oidc_issuer_iam_reconcile_last_success_timestamp_seconds  0 until the first success
//	kube_oidc_issuer_iam_reconcile_last_duration_seconds           of the last attempt
//	kube_oidc_issuer_iam_reconciles_total                          attempts
//	kube_oidc_issuer_iam_reconcile_errors_total                    failed attempts
//	kube_oidc_issuer_iam_drift_total{kind}                         differences found and corrected
//	kube_oidc_issuer_iam_provider_thumbprints                      thumbprints registered
//
// Alert on time() - last_success growing past a few intervals, and on drift_total{kind="missing"}
// rising (someone deletes the provider).
func NewStatusCollector(status func() Status) prometheus.Collector {
	const ns = "kube_oidc_issuer_iam_"
	return &statusCollector{
		status:      status,
		lastAttempt: prometheus.NewDesc(ns+"reconcile_last_attempt_timestamp_seconds", "When the IAM OIDC provider was last reconciled, successfully or not (seconds since the Unix epoch; 0 before the first attempt).", nil, nil),
		lastSuccess: prometheus.NewDesc(ns+"reconcile_last_success_timestamp_seconds", "When the IAM OIDC provider was last reconciled successfully (seconds since the Unix epoch; 0 before the first success).", nil, nil),
		duration:    prometheus.NewDesc(ns+"reconcile_last_duration_seconds", "How long the last reconcile of the IAM OIDC provider took, thumbprint fetch included.", nil, nil),
		reconciles:  prometheus.NewDesc(ns+"reconciles_total", "Reconciles of the IAM OIDC provider attempted.", nil, nil),
		errors:      prometheus.NewDesc(ns+"reconcile_errors_total", "Reconciles of the IAM OIDC provider that failed (thumbprint fetch or IAM call).", nil, nil),
		drift:       prometheus.NewDesc(ns+"drift_total", "Differences between the IAM OIDC provider and the desired state that were found and corrected, by kind (missing, thumbprints, audiences, tags).", []string{"kind"}, nil),
		thumbprints: prometheus.NewDesc(ns+"provider_thumbprints", "Thumbprints registered on the IAM OIDC provider after the last successful reconcile (IAM keeps at most 5).", nil, nil),
	}
}

type statusCollector struct {
	status                                                                     func() Status
	lastAttempt, lastSuccess, duration, reconciles, errors, drift, thumbprints *prometheus.Desc
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastAttempt, c.lastSuccess, c.duration, c.reconciles, c.errors, c.drift, c.thumbprints} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.status()
	ch <- prometheus.MustNewConstMetric(c.lastAttempt, prometheus.GaugeValue, unixSeconds(s.LastAttempt))
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, unixSeconds(s.LastSuccess))
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, s.LastDuration.Seconds())
	ch <- prometheus.MustNewConstMetric(c.reconciles, prometheus.CounterValue, float64(s.Reconciles))
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(s.Errors))
	for _, k := range DriftKinds() {
		ch <- prometheus.MustNewConstMetric(c.drift, prometheus.CounterValue, float64(s.Drift[k]), k)
	}
	ch <- prometheus.MustNewConstMetric(c.thumbprints, prometheus.GaugeValue, float64(len(s.Thumbprints)))
}

// unixSeconds is t in seconds since the Unix epoch, and 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
