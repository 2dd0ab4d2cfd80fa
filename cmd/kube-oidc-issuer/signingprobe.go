package main

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
)

// signingProbeOptions are serve's flags for the signing probe.
type signingProbeOptions struct {
	serviceAccount string
	interval       time.Duration
	count          int
	timeout        time.Duration
}

func (o *signingProbeOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.serviceAccount, "signing-probe-service-account", "", "NAMESPACE/NAME of the ServiceAccount whose short-lived tokens (audience "+signingprobe.Audience+", 10 minutes) tell which key the control plane signs with; needs create on serviceaccounts/token for exactly it (default in a pod: the issuer's own ServiceAccount; elsewhere: no probe)")
	f.DurationVar(&o.interval, "signing-probe-interval", signingprobe.DefaultInterval, "how often the leader probes which key the control plane signs with; a key seen signing is never pruned, and a previous key's retention counts from the last time it was seen (0: off; retention then counts from the key's departure from the signing-key Secret)")
	f.IntVar(&o.count, "signing-probe-count", signingprobe.DefaultProbesPerRound, "tokens requested per probe round, each on a new connection, so that every kube-apiserver behind a load balancer is seen during a control-plane roll")
	f.DurationVar(&o.timeout, "signing-probe-timeout", signingprobe.DefaultTimeout, "time limit of each probe request")
}

func (o signingProbeOptions) validate() error {
	if o.interval < 0 {
		return fmt.Errorf("--signing-probe-interval %s must not be negative", o.interval)
	}
	if o.interval == 0 {
		return nil
	}
	if o.count < 1 || o.count > 10 {
		return fmt.Errorf("--signing-probe-count %d: want 1 to 10", o.count)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--signing-probe-timeout %s must be positive", o.timeout)
	}
	if o.serviceAccount != "" {
		if _, _, err := splitRef("--signing-probe-service-account", o.serviceAccount); err != nil {
			return err
		}
	}
	return nil
}

// target is the probe's ServiceAccount, or why there is no probe.
func (o signingProbeOptions) target() (string, string) {
	switch {
	case o.interval == 0:
		return "", "--signing-probe-interval is 0"
	case o.serviceAccount != "":
		return o.serviceAccount, ""
	}
	if sa, ok := signingprobe.OwnServiceAccount(); ok {
		return sa, ""
	}
	return "", "not running in a pod and no --signing-probe-service-account given"
}

// publishedKIDs remembers the kids of the latest rendered key set, for the probe's unpublished
// check; the renderer updates it once per key change.
type publishedKIDs struct{ kids atomic.Pointer[[]string] }

func (p *publishedKIDs) Publish(set keys.Set) {
	kids := set.KeyIDs()
	p.kids.Store(&kids)
}

func (p *publishedKIDs) get() []string {
	if k := p.kids.Load(); k != nil {
		return *k
	}
	return nil
}

// setupSigningProbe builds the probe and registers it with the leader; it returns its readiness
// check (always ready: the probe informs, it never gates serving). A missing probe is reported on
// /readyz and in the log, not an error.
func (o signingProbeOptions) setup(logger *slog.Logger, so serveOptions, bg *background, published *publishedKIDs, reg prometheus.Registerer, userAgent string) (server.ReadinessCheck, error) {
	signer := bg.manager != nil && bg.manager.Config().Signer
	sa, off := o.target()
	if sa == "" {
		fallback := "retention counts from a key's departure from the signing-key Secret"
		if signer {
			fallback = "retention counts from a key's promote plus --signer-refresh"
		}
		logger.Info("signing probe off: "+fallback, "why", off)
		return server.ReadinessCheck{Name: "signingProbe", Check: func() (bool, any) {
			return true, map[string]any{"running": false, "off": off, "fallback": true}
		}}, nil
	}
	cfg, err := kubeConfig(so.kubeconfig)
	if err != nil {
		return server.ReadinessCheck{}, fmt.Errorf("signing probe: %w", err)
	}
	cfg.UserAgent = userAgent
	client, err := corev1client.NewForConfig(signingprobe.FreshConnections(cfg))
	if err != nil {
		return server.ReadinessCheck{}, fmt.Errorf("signing probe: creating Kubernetes client: %w", err)
	}
	ns, name, _ := splitRef("--signing-probe-service-account", sa)
	pcfg := signingprobe.Config{
		Minter:         signingprobe.TokenRequester{Client: client, Namespace: ns, Name: name},
		ServiceAccount: sa,
		Interval:       o.interval,
		ProbesPerRound: o.count,
		Timeout:        o.timeout,
		Published:      published.get,
		Registerer:     reg,
		Logger:         logger,
	}
	if bg.manager != nil {
		pcfg.Recorder = bg.manager
	}
	p, err := signingprobe.New(pcfg)
	if err != nil {
		return server.ReadinessCheck{}, err
	}
	bg.leader.Go("signing-probe", p.Run)
	return server.ReadinessCheck{Name: "signingProbe", Check: func() (bool, any) { return true, p.Status() }}, nil
}
