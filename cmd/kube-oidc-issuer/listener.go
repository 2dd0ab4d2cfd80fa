package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

// listenerOptions bound the public and the internal listener (server.ListenerConfig): how many
// connections each holds, and how long a connection may take to send its headers, be answered,
// or sit idle. The internal listener has a connection budget of its own, so that a flood of the
// public one never keeps the probes from getting through.
type listenerOptions struct {
	public           server.ListenerConfig
	internalMaxConns int
}

// otherFDs is what the process keeps open besides the listeners' connections (the listeners,
// the Kubernetes client's connections, watched files, mirror and IAM clients), with margin.
const otherFDs = 128

func (o *listenerOptions) addFlags(f *pflag.FlagSet) {
	d := server.DefaultPublicListenerConfig()
	o.public = d
	f.IntVar(&o.public.MaxConnections, "max-connections", 0, fmt.Sprintf("connections the public listener holds at most; at the cap the longest-idle ones are closed to admit new ones (never one in the middle of a request). 0: %d, or %d with TLS (a TLS connection holds more memory); both fit the shipped 64Mi memory limit", server.DefaultPublicMaxConnections, server.DefaultPublicTLSMaxConnections))
	f.DurationVar(&o.public.ReadHeaderTimeout, "read-header-timeout", d.ReadHeaderTimeout, "public listener: time for a new connection's TLS handshake and request headers, and for each later request's headers (slowloris)")
	f.DurationVar(&o.public.WriteTimeout, "write-timeout", d.WriteTimeout, "public listener: time from a request's headers to the end of its response (HTTP/2: per stream, and per write), so that clients that do not read are cut off")
	f.DurationVar(&o.public.IdleTimeout, "idle-timeout", d.IdleTimeout, "public listener: keep-alive connections idle this long are closed")
	f.DurationVar(&o.public.PressureIdleTimeout, "idle-timeout-under-pressure", d.PressureIdleTimeout, "public listener: the idle timeout while more than 80% of --max-connections are open")
	f.IntVar(&o.internalMaxConns, "internal-max-connections", server.DefaultInternalMaxConnections, "connections the internal listener (/healthz, /readyz, /metrics) holds at most: a budget of its own, untouched by the public listener's clients")
}

func (o listenerOptions) internal() server.ListenerConfig {
	c := server.DefaultInternalListenerConfig()
	c.MaxConnections = o.internalMaxConns
	return c
}

func (o listenerOptions) validate() error {
	var errs []error
	for _, n := range []struct {
		flag string
		n    int
		min  int
	}{{"--max-connections", o.public.MaxConnections, 0}, {"--internal-max-connections", o.internalMaxConns, 1}} {
		if n.n < n.min {
			errs = append(errs, fmt.Errorf("%s %d: want at least %d", n.flag, n.n, n.min))
		}
	}
	for _, d := range []struct {
		flag string
		d    time.Duration
	}{
		{"--read-header-timeout", o.public.ReadHeaderTimeout},
		{"--write-timeout", o.public.WriteTimeout},
		{"--idle-timeout", o.public.IdleTimeout},
		{"--idle-timeout-under-pressure", o.public.PressureIdleTimeout},
	} {
		if d.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want more than 0", d.flag, d.d))
		}
	}
	if o.public.PressureIdleTimeout > o.public.IdleTimeout {
		errs = append(errs, fmt.Errorf("--idle-timeout-under-pressure %s: want at most --idle-timeout %s", o.public.PressureIdleTimeout, o.public.IdleTimeout))
	}
	return errors.Join(errs...)
}

// setup raises the open-file limit to the hard limit, lowers the public cap if the limit cannot
// hold every listener's connections, and registers the listeners' metrics with reg. It returns
// the configurations of the public listener (serving TLS when tls is set) and the internal one.
func (o listenerOptions) setup(logger *slog.Logger, reg prometheus.Registerer, tls bool) (public, internal server.ListenerConfig, err error) {
	metrics, err := server.NewListenerMetrics(reg)
	if err != nil {
		return public, internal, fmt.Errorf("registering the listener metrics: %w", err)
	}
	public, internal = o.public, o.internal()
	if public.MaxConnections == 0 {
		public.MaxConnections = server.DefaultPublicMaxConnections
		if tls {
			public.MaxConnections = server.DefaultPublicTLSMaxConnections
		}
	}
	public.Metrics, internal.Metrics = metrics, metrics

	lim, err := server.RaiseOpenFileLimit()
	if err != nil {
		// Serving still works; the caps are all there is to go by.
		logger.Warn("could not raise the open-file limit", "error", err)
		return public, internal, nil
	}
	logger.Info("open-file limit", "soft", lim.Soft, "hard", lim.Hard, "softAtStart", lim.Before,
		"maxConnections", public.MaxConnections, "internalMaxConnections", internal.MaxConnections)
	if fitted, ok := fitOpenFileLimit(lim.Soft, public.MaxConnections, internal.MaxConnections); ok {
		logger.Warn("the open-file limit cannot hold --max-connections next to the other listeners; lowering it",
			"openFileLimit", lim.Soft, "maxConnections", public.MaxConnections, "lowerTo", fitted,
			"internalMaxConnections", internal.MaxConnections, "adminMaxConnections", server.DefaultListenerConfig().MaxConnections,
			"reservedForOtherFiles", otherFDs)
		public.MaxConnections = fitted
	}
	return public, internal, nil
}

// minFittedConns is the least the public cap is lowered to, however low the open-file limit.
const minFittedConns = 16

// fitOpenFileLimit returns the public cap that leaves room, within the open-file limit, for
// the internal and admin listeners' caps and the process's other files, and whether it is lower
// than publicMax. Running out of descriptors stops every listener at once; a cap sheds idle
// connections instead.
func fitOpenFileLimit(softLimit uint64, publicMax, internalMax int) (int, bool) {
	limit := int(min(softLimit, math.MaxInt32))
	budget := limit - otherFDs - internalMax - server.DefaultListenerConfig().MaxConnections
	if budget >= publicMax {
		return publicMax, false
	}
	return max(budget, minFittedConns), true
}
