package signer

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics counts the calls kube-apiserver makes (FetchKeys per minute tells whether it follows the
// refresh hint) and times them: a slow Sign is a slow TokenRequest.
type metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kube_oidc_issuer_signer_calls_total",
			Help: "External JWT signer calls by method (Sign, FetchKeys, Metadata) and gRPC status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kube_oidc_issuer_signer_call_duration_seconds",
			Help: "Time to answer an external JWT signer call, by method.",
			// RS256 signs in ~1 ms, ES256 in ~50 µs; a KMS call takes tens of milliseconds.
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"method"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.calls, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering signer metrics: %w", err)
		}
	}
	return m, nil
}

// interceptor records every unary call. The method label is the RPC name only: a bounded set.
func (m *metrics) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	began := time.Now()
	resp, err := handler(ctx, req)
	method := path.Base(info.FullMethod)
	switch method {
	case "Sign", "FetchKeys", "Metadata":
	default:
		method = "other"
	}
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(method).Observe(time.Since(began).Seconds())
	return resp, err
}
