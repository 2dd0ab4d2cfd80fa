package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exposes the fleet, computed at scrape time from its state: nothing per cluster is kept
// for the metrics' sake. The per-cluster series are bounded by Config.MaxClusters.
func (f *Fleet) Metrics() prometheus.Collector { return fleetCollector{f} }

type fleetCollector struct{ f *Fleet }

var (
	descClusters = prometheus.NewDesc("kube_oidc_issuer_fleet_clusters",
		"Clusters of the fleet by state: serving (documents published, Secret good), waiting (no good keys yet), failing (serving the last good keys of a bad Secret), retained (Secret deleted, kept for the retention), refused (not served: see the log, Events and /readyz).",
		[]string{"state"}, nil)
	descRefusals = prometheus.NewDesc("kube_oidc_issuer_fleet_refusals_total",
		"Secrets refused since start, by reason: bad_name (cluster name not a DNS-1123 label), bad_url, url_conflict (the template maps two clusters to one URL), fleet_full (--fleet-max-clusters), internal.",
		[]string{"reason"}, nil)
	descReady = prometheus.NewDesc("kube_oidc_issuer_fleet_ready",
		"1 once the fleet's Secrets were listed and every listed one processed.", nil, nil)
	descClusterKeys = prometheus.NewDesc("kube_oidc_issuer_fleet_cluster_keys",
		"Keys published for a cluster (0 before its first good keys).", []string{"namespace", "cluster"}, nil)
	descClusterHealthy = prometheus.NewDesc("kube_oidc_issuer_fleet_cluster_healthy",
		"1 while a cluster's signing-key Secret's latest content is good; 0 while its last good keys are served despite a bad or deleted Secret, or before any.", []string{"namespace", "cluster"}, nil)
)

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusters, descRefusals, descReady, descClusterKeys, descClusterHealthy} {
		ch <- d
	}
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.Status()
	for state, n := range map[string]int{"serving": st.Serving, "waiting": st.Waiting, "failing": st.Failing, "retained": st.Retained, "refused": st.Refused} {
		ch <- prometheus.MustNewConstMetric(descClusters, prometheus.GaugeValue, float64(n), state)
	}
	for _, reason := range []string{reasonBadName, reasonBadURL, reasonConflict, reasonFull, reasonInternal} {
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(st.Reasons[reason]), reason)
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, boolValue(st.Ready))
	for _, cl := range c.f.Clusters() {
		ch <- prometheus.MustNewConstMetric(descClusterKeys, prometheus.GaugeValue, float64(cl.Keys), cl.Namespace, cl.Name)
		ch <- prometheus.MustNewConstMetric(descClusterHealthy, prometheus.GaugeValue, boolValue(cl.Healthy), cl.Namespace, cl.Name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
