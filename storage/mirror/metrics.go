package mirror

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the measurements of every mirror of a process, labelled by sink.
type Metrics struct {
	lastSuccess *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	generation  *prometheus.GaugeVec
	written     *prometheus.CounterVec
	public      *prometheus.GaugeVec
}

// NewMetrics creates the mirror metrics and registers them on reg (never a global registry).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "kube_oidc_issuer", "mirror"
	m := &Metrics{
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "last_success_timestamp_seconds",
			Help: "When the sink last held the latest documents after a publication, in seconds since the Unix epoch; absent before the first success.",
		}, []string{"sink"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "failures_total",
			Help: "Failed publications to the sink (each is retried with backoff).",
		}, []string{"sink"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "publish_duration_seconds",
			Help:    "Time one publication to the sink took (HEAD of both objects, and the writes needed), by result.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"sink", "result"}),
		generation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "generation",
			Help: "Generation of the documents last published to the sink; it lags kube_oidc_issuer_keyset_generation while the mirror is behind.",
		}, []string{"sink"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "objects_written_total",
			Help: "Objects written to the sink (unchanged objects are skipped).",
		}, []string{"sink"}),
		public: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "public_read",
			Help: "1 when the sink's access policy lets anonymous relying parties read the mirrored documents, 0 when it does not (see /readyz for why); absent for sinks without access control.",
		}, []string{"sink"}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.lastSuccess, m.failures, m.duration, m.generation, m.written, m.public} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// sinkMetrics are one sink's series, resolved once; the zero value records nothing.
type sinkMetrics struct {
	m    *Metrics
	sink string
}

func (m *Metrics) forSink(sink string) sinkMetrics {
	if m == nil {
		return sinkMetrics{}
	}
	// Create the counters up front so that a rate() alert sees a zero before the first failure.
	m.failures.WithLabelValues(sink)
	m.written.WithLabelValues(sink)
	return sinkMetrics{m: m, sink: sink}
}

func (s sinkMetrics) success(took time.Duration, generation uint64, written int) {
	if s.m == nil {
		return
	}
	s.m.duration.WithLabelValues(s.sink, "success").Observe(took.Seconds())
	s.m.lastSuccess.WithLabelValues(s.sink).Set(float64(time.Now().UnixNano()) / 1e9)
	s.m.generation.WithLabelValues(s.sink).Set(float64(generation))
	s.m.written.WithLabelValues(s.sink).Add(float64(written))
}

func (s sinkMetrics) failure(took time.Duration) {
	if s.m == nil {
		return
	}
	s.m.duration.WithLabelValues(s.sink, "failure").Observe(took.Seconds())
	s.m.failures.WithLabelValues(s.sink).Inc()
}

func (s sinkMetrics) publicRead(public bool) {
	if s.m == nil {
		return
	}
	v := 0.0
	if public {
		v = 1
	}
	s.m.public.WithLabelValues(s.sink).Set(v)
}
