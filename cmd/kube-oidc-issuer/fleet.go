package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/fleet"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/filesink"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/s3sink"
)

// fleetOptions are serve's fleet-mode flags.
type fleetOptions struct {
	enabled     bool
	template    string
	namespaces  []string
	maxClusters int
	retention   time.Duration
}

func (o *fleetOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.enabled, "fleet", false, "fleet mode: serve every Cluster API cluster whose `<cluster>-sa` Secret (label "+fleet.ClusterNameLabel+") is in the watched namespaces, each at its own issuer URL from --issuer-url-template")
	f.StringVar(&o.template, "issuer-url-template", "", "fleet mode: each cluster's issuer URL, with {cluster} and optionally {namespace} in its path, e.g. https://oidc.example.com/clusters/{cluster}")
	f.StringSliceVar(&o.namespaces, "fleet-namespace", nil, "fleet mode: namespace whose cluster Secrets are served; repeatable (default: all namespaces)")
	f.IntVar(&o.maxClusters, "fleet-max-clusters", fleet.DefaultMaxClusters, "fleet mode: most clusters served (further ones are refused, with a log line, an Event and a metric)")
	f.DurationVar(&o.retention, "fleet-retention", 0, "fleet mode: how long a cluster whose Secret was deleted stays published (default: --max-token-lifetime + --token-clock-skew + --max-age)")
}

// validate checks fleet mode against the rest of serve's flags: what is per issuer in
// single-cluster mode either comes from the template or is not available in fleet mode yet.
func (o fleetOptions) validate(so serveOptions) error {
	if !o.enabled {
		if o.template != "" || len(o.namespaces) > 0 || o.retention != 0 {
			return errors.New("--issuer-url-template, --fleet-namespace and --fleet-retention need --fleet")
		}
		return nil
	}
	var errs []error
	if _, err := fleet.ParseURLTemplate(o.template); err != nil {
		errs = append(errs, fmt.Errorf("--issuer-url-template: %w", err))
	}
	for flag, set := range map[string]bool{
		"--issuer-url": so.docs.IssuerURL != "", "--jwks-uri": so.docs.JWKSURI != "",
		"--secret": len(so.secrets) > 0, "--key-file": len(so.keyFiles) > 0, "--state-secret": so.rotation.lifecycleOn(),
		"--iam-register": so.iam.register, "--signing-probe-service-account": so.probe.serviceAccount != "",
		"--s3-manage-bucket-policy": so.mirror.s3ManagePol,
	} {
		if set {
			errs = append(errs, fmt.Errorf("%s does not apply to --fleet (each cluster's issuer comes from --issuer-url-template and its keys from its <cluster>-sa Secret; per-cluster key lifecycle, IAM registration, signing probes and bucket-policy management are not available in fleet mode)", flag))
		}
	}
	if o.maxClusters <= 0 {
		errs = append(errs, fmt.Errorf("--fleet-max-clusters %d: want at least 1", o.maxClusters))
	}
	if o.retention < 0 {
		errs = append(errs, fmt.Errorf("--fleet-retention %s must not be negative", o.retention))
	}
	for _, ns := range o.namespaces {
		if ns == "" {
			errs = append(errs, errors.New("--fleet-namespace: empty namespace"))
		}
	}
	return errors.Join(errs...)
}

// fleetRetention is how long a deleted cluster stays published: until every token it signed has
// expired and every relying party's cached JWKS has been refreshed.
func (o fleetOptions) fleetRetention(so serveOptions) time.Duration {
	if o.retention > 0 {
		return o.retention
	}
	return so.rotation.maxTokenLifetime + so.rotation.clockSkew + so.docs.MaxAge
}

// setupFleet builds the fleet on srv: its mirrors (run by the leader) and its readiness checks.
func setupFleet(ctx context.Context, logger *slog.Logger, so serveOptions, srv *server.Server, reg prometheus.Registerer, tasks leaderTasks, userAgent string) (*fleet.Fleet, []server.ReadinessCheck, error) {
	o := so.fleet
	tmpl, err := fleet.ParseURLTemplate(o.template)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := kubeConfig(so.kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg.UserAgent = userAgent
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	fcfg := fleet.Config{
		Secrets: client.CoreV1(), Events: client.CoreV1(), Namespaces: o.namespaces, Template: tmpl,
		Documents: so.docs, Retention: o.fleetRetention(so), MaxClusters: o.maxClusters, Routes: srv, Logger: logger,
	}
	var checks []server.ReadinessCheck
	if len(so.mirror.targets) > 0 {
		factory, err := so.mirror.fleetSinks(ctx, logger)
		if err != nil {
			return nil, nil, err
		}
		mirrors, err := fleet.NewMirrors(fleet.MirrorConfig{Sinks: factory, Interval: so.mirror.reconcile, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		fcfg.Publishers = mirrors
		tasks.Go("fleet mirrors", mirrors.Run)
		// A failing mirror never makes the fleet unready; the details show here and in the log.
		checks = append(checks, server.ReadinessCheck{Name: "mirrors", Check: func() (bool, any) { return true, mirrors.Status() }})
	}
	fl, err := fleet.New(fcfg)
	if err != nil {
		return nil, nil, err
	}
	if err := reg.Register(fl.Metrics()); err != nil {
		return nil, nil, fmt.Errorf("registering the fleet metrics: %w", err)
	}
	logger.Info("fleet mode", "issuerURLTemplate", tmpl.String(), "namespaces", o.namespaces, "retention", fcfg.Retention, "maxClusters", o.maxClusters)
	return fl, append([]server.ReadinessCheck{fl.Readiness()}, checks...), nil
}

// fleetSinks returns a function giving the sinks of one cluster's issuer URL. The S3 clients are
// built once per --mirror target and shared by every cluster: a client per cluster would cost a
// thousand-cluster fleet tens of MiB.
func (o mirrorOptions) fleetSinks(ctx context.Context, logger *slog.Logger) (func(issuerURL string) ([]storage.Sink, error), error) {
	if err := validatePositive("mirror-interval", o.reconcile); err != nil {
		return nil, err
	}
	targets := make([]*url.URL, 0, len(o.targets))
	for _, t := range o.targets {
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "s3" && u.Scheme != "file") {
			return nil, fmt.Errorf("--mirror %q: use s3://BUCKET[/PREFIX] or file:///DIR", t)
		}
		targets = append(targets, u)
	}
	var (
		mu      sync.Mutex
		clients = map[string]*s3Client{}
	)
	for _, t := range targets {
		logger.Info("mirroring every cluster's documents", "target", t.Redacted(), "s3Endpoint", o.s3Endpoint)
	}
	return func(issuerURL string) ([]storage.Sink, error) {
		out := make([]storage.Sink, 0, len(targets))
		for _, t := range targets {
			if t.Scheme == "file" {
				s, err := filesink.Resolve(t, issuerURL)
				if err != nil {
					return nil, err
				}
				out = append(out, s)
				continue
			}
			mu.Lock()
			c := clients[t.String()]
			if c == nil {
				c = &s3Client{}
				clients[t.String()] = c
			}
			mu.Unlock()
			s, err := c.sink(ctx, o, t, issuerURL)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}, nil
}

// s3Client is one --mirror target's S3 client, built on first use and then shared.
type s3Client struct {
	once   sync.Once
	client *s3.Client
	err    error
}

func (c *s3Client) sink(ctx context.Context, o mirrorOptions, target *url.URL, issuerURL string) (storage.Sink, error) {
	loc, err := s3sink.Resolve(target, issuerURL, o.endpoint())
	if err != nil {
		return nil, err
	}
	c.once.Do(func() {
		c.client, c.err = s3sink.NewClient(ctx, s3sink.ClientConfig{Region: o.s3Region, RegionHint: loc.Region, Endpoint: o.s3Endpoint, PathStyle: o.s3PathStyle})
		if c.err != nil {
			c.err = fmt.Errorf("--mirror %s: %w", target.Redacted(), c.err)
		}
	})
	if c.err != nil {
		return nil, c.err
	}
	return s3sink.New(c.client, s3sink.Config{Bucket: loc.Bucket, Prefix: loc.Prefix})
}
