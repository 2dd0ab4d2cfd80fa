package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/fleet"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
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
	// iamDeleteRemoved: with --iam-register, delete the provider of a cluster removed from the
	// fleet (only one the fleet created for it).
	iamDeleteRemoved bool
	// probeInterval > 0 probes every workload cluster's signing key through its kubeconfig Secret.
	probeInterval       time.Duration
	probeServiceAccount string
}

func (o *fleetOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.enabled, "fleet", false, "fleet mode: serve every Cluster API cluster whose `<cluster>-sa` Secret (label "+fleet.ClusterNameLabel+") is in the watched namespaces, each at its own issuer URL from --issuer-url-template")
	f.StringVar(&o.template, "issuer-url-template", "", "fleet mode: each cluster's issuer URL, with {cluster} and optionally {namespace} in its path, e.g. https://oidc.example.com/clusters/{cluster}")
	f.StringSliceVar(&o.namespaces, "fleet-namespace", nil, "fleet mode: namespace whose cluster Secrets are served; repeatable (default: all namespaces)")
	f.IntVar(&o.maxClusters, "fleet-max-clusters", fleet.DefaultMaxClusters, "fleet mode: most clusters served (further ones are refused, with a log line, an Event and a metric)")
	f.DurationVar(&o.retention, "fleet-retention", 0, "fleet mode: how long a cluster whose Secret was deleted stays published (default: --max-token-lifetime + --token-clock-skew + --max-age)")
	f.DurationVar(&o.probeInterval, "fleet-signing-probe-interval", 0, "fleet mode: how often the leader asks each workload cluster's control plane, through the admin kubeconfig in its `<cluster>-kubeconfig` Secret, which key it signs with, to report a cluster signing with a key its JWKS lacks (0: off; reading those Secrets needs get on them); --signing-probe-count and --signing-probe-timeout apply")
	f.StringVar(&o.probeServiceAccount, "fleet-signing-probe-service-account", "kube-system/default", "fleet mode: NAMESPACE/NAME of the ServiceAccount in each workload cluster whose probe tokens are requested")
	f.BoolVar(&o.iamDeleteRemoved, "fleet-iam-delete-removed", false, "fleet mode with --iam-register: once a cluster is removed (its Secret deleted and the retention over), delete its IAM OIDC provider if the fleet created it for that cluster (tags "+fleet.IAMManagedByTag+"="+fleet.IAMManagedByValue+" and "+fleet.IAMClusterTag+"=NAMESPACE/CLUSTER); needs iam:DeleteOpenIDConnectProvider. Off, removed clusters' providers are left in place")
}

// validate checks fleet mode against the rest of serve's flags: what is per issuer in
// single-cluster mode either comes from the template or has a per-cluster form of its own.
func (o fleetOptions) validate(so serveOptions) error {
	if !o.enabled {
		if o.template != "" || len(o.namespaces) > 0 || o.retention != 0 || o.iamDeleteRemoved || o.probeInterval != 0 {
			return errors.New("--issuer-url-template, --fleet-namespace, --fleet-retention, --fleet-iam-delete-removed and --fleet-signing-probe-interval need --fleet")
		}
		return nil
	}
	var errs []error
	tmpl, err := fleet.ParseURLTemplate(o.template)
	if err != nil {
		errs = append(errs, fmt.Errorf("--issuer-url-template: %w", err))
	}
	for flag, set := range map[string]bool{
		"--issuer-url": so.docs.IssuerURL != "", "--jwks-uri": so.docs.JWKSURI != "",
		"--secret": len(so.secrets) > 0, "--key-file": len(so.keyFiles) > 0, "--state-secret": so.rotation.lifecycleOn(),
		"--signing-probe-service-account": so.probe.serviceAccount != "",
		"--s3-manage-bucket-policy":       so.mirror.s3ManagePol,
	} {
		if set {
			errs = append(errs, fmt.Errorf("%s does not apply to --fleet (each cluster's issuer comes from --issuer-url-template, its keys from its <cluster>-sa Secret and its key lifecycle from its state Secret <cluster>"+fleet.StateSuffix+" (with --admin-listen or --rotate-every); workload clusters are probed with --fleet-signing-probe-interval; bucket policies are not managed in fleet mode)", flag))
		}
	}
	if err == nil {
		errs = append(errs, o.validateIAM(so.iam, tmpl))
	}
	if o.maxClusters <= 0 {
		errs = append(errs, fmt.Errorf("--fleet-max-clusters %d: want at least 1", o.maxClusters))
	}
	if o.retention < 0 {
		errs = append(errs, fmt.Errorf("--fleet-retention %s must not be negative", o.retention))
	}
	if o.probeInterval < 0 {
		errs = append(errs, fmt.Errorf("--fleet-signing-probe-interval %s must not be negative", o.probeInterval))
	}
	if ns, name, ok := strings.Cut(o.probeServiceAccount, "/"); o.probeInterval > 0 && (!ok || ns == "" || name == "" || strings.Contains(name, "/")) {
		errs = append(errs, fmt.Errorf("--fleet-signing-probe-service-account %q: want NAMESPACE/NAME", o.probeServiceAccount))
	}
	for _, ns := range o.namespaces {
		if ns == "" {
			errs = append(errs, errors.New("--fleet-namespace: empty namespace"))
		}
	}
	return errors.Join(errs...)
}

// validateIAM checks --iam-* for every cluster's issuer URL: the rules single-cluster serving applies
// to its issuer URL hold for a sample rendering of the template (a port, which IAM refuses, is in
// every rendering; a URL too long for IAM may still be one cluster's, reported for that cluster).
func (o fleetOptions) validateIAM(io iamServeOptions, tmpl fleet.URLTemplate) error {
	if !io.register {
		if o.iamDeleteRemoved {
			return errors.New("--fleet-iam-delete-removed needs --iam-register")
		}
		return nil
	}
	sample, err := tmpl.Expand("ns", "cluster")
	if err != nil {
		return fmt.Errorf("--issuer-url-template: %w", err)
	}
	if u, err := url.Parse(sample); err == nil && u.Port() != "" {
		return fmt.Errorf("--issuer-url-template %s with --iam-register: it names port %s, and AWS IAM refuses an OpenID Connect provider URL with a port (STS fetches from port 443); serve the fleet on port 443 (an Ingress or load balancer in front) and drop :%s from the template",
			tmpl, u.Port(), u.Port())
	}
	if err := io.validate(sample); err != nil {
		return fmt.Errorf("--issuer-url-template %s with --iam-register (checked on its rendering for cluster \"cluster\" in namespace \"ns\"): %w", tmpl, err)
	}
	for _, kv := range io.reg.tags {
		if k, _, _ := strings.Cut(kv, "="); fleet.ReservedIAMTag(k) {
			return fmt.Errorf("--%stag %q: in fleet mode %s and %s are the fleet's own tags, set on the providers it creates", iamFlagPrefix, kv, fleet.IAMManagedByTag, fleet.IAMClusterTag)
		}
	}
	return nil
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
	// The watch costs no request per cluster, but the clusters' key lifecycles, Events and probes'
	// kubeconfig reads share this client: client-go's default of 5 requests/s would make an
	// operator's promote (a handful of reads and writes) take seconds. Still bounded.
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	fcfg := fleet.Config{
		Secrets: client.CoreV1(), Events: client.CoreV1(), Namespaces: o.namespaces, Template: tmpl,
		Documents: so.docs, Retention: o.fleetRetention(so), MaxClusters: o.maxClusters, Routes: srv, Logger: logger,
	}
	var (
		checks     []server.ReadinessCheck
		publishers []fleet.ClusterPublishers
	)
	if len(so.mirror.targets) > 0 {
		factory, err := so.mirror.fleetSinks(ctx, logger)
		if err != nil {
			return nil, nil, err
		}
		mirrors, err := fleet.NewMirrors(fleet.MirrorConfig{Sinks: factory, Interval: so.mirror.reconcile, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		publishers = append(publishers, mirrors)
		tasks.Go("fleet mirrors", mirrors.Run)
		// A failing mirror never makes the fleet unready; the details show here and in the log.
		checks = append(checks, server.ReadinessCheck{Name: "mirrors", Check: func() (bool, any) { return true, mirrors.Status() }})
	}
	if so.iam.register {
		providers, err := newFleetIAM(ctx, logger, so, tmpl, reg)
		if err != nil {
			return nil, nil, err
		}
		publishers = append(publishers, providers)
		// Leader only: replicas reconciling on their own would fight over the thumbprint lists.
		tasks.Go("fleet iam-register", providers.Run)
		// A failing registration never makes the fleet unready: STS needs the documents all the
		// same. The details show here, in the metrics and in the log.
		checks = append(checks, server.ReadinessCheck{Name: "iam", Check: func() (bool, any) { return true, providers.Status() }})
	}
	fcfg.Publishers = fleet.Combine(publishers...)
	if so.rotation.fleetLifecycleOn() {
		r := so.rotation
		fcfg.Lifecycle = &fleet.LifecycleConfig{Base: lifecycle.Config{
			Secrets: client.CoreV1(), Events: client.CoreV1(), MaxTokenLifetime: r.maxTokenLifetime, ClockSkew: r.clockSkew,
			MaxAge: so.docs.MaxAge, PublishLead: r.lead(so), RotateEvery: r.rotateEvery, RotateAlgorithm: r.rotateAlgorithm,
		}}
	}
	fl, err := fleet.New(fcfg)
	if err != nil {
		return nil, nil, err
	}
	if err := reg.Register(fl.Metrics()); err != nil {
		return nil, nil, fmt.Errorf("registering the fleet metrics: %w", err)
	}
	if fcfg.Lifecycle != nil {
		tasks.Go("fleet key lifecycle", fl.RunLifecycle)
		logger.Info("fleet key lifecycle: each cluster's keys can be staged, promoted and retired (state Secret <cluster>"+fleet.StateSuffix+")",
			"adminAPI", so.rotation.adminListen != "", "rotateEvery", so.rotation.rotateEvery)
	}
	if o.probeInterval > 0 {
		probes, err := fleet.NewProbes(fl, fleet.ProbeConfig{
			Secrets: client.CoreV1(), ServiceAccount: o.probeServiceAccount, Interval: o.probeInterval,
			ProbesPerRound: so.probe.count, Timeout: so.probe.timeout, Logger: logger,
		})
		if err != nil {
			return nil, nil, err
		}
		if err := reg.Register(probes.Metrics()); err != nil {
			return nil, nil, fmt.Errorf("registering the fleet probe metrics: %w", err)
		}
		tasks.Go("fleet signing probes", probes.Run)
		// Informs, never gates serving: a cluster signing with an unpublished key is served all
		// the same (what it serves is what its Secret holds).
		checks = append(checks, server.ReadinessCheck{Name: "signingProbes", Check: func() (bool, any) { return true, probes.Summary() }})
	}
	logger.Info("fleet mode", "issuerURLTemplate", tmpl.String(), "namespaces", o.namespaces, "retention", fcfg.Retention, "maxClusters", o.maxClusters)
	return fl, append([]server.ReadinessCheck{fl.Readiness()}, checks...), nil
}

// newFleetIAM builds the registration of every cluster's issuer with AWS IAM (--iam-register in fleet
// mode) and registers its metrics.
func newFleetIAM(ctx context.Context, logger *slog.Logger, so serveOptions, tmpl fleet.URLTemplate, reg prometheus.Registerer) (*fleet.IAMProviders, error) {
	tags, err := so.iam.reg.tagMap(iamFlagPrefix)
	if err != nil {
		return nil, err
	}
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	providers, err := fleet.NewIAMProviders(fleet.IAMConfig{
		API: awsiam.NewFromConfig(awsCfg), Template: tmpl,
		Audiences: so.iam.reg.audiences, Tags: tags, Thumbprints: so.iam.reg.thumbprints, PruneThumbprints: so.iam.reg.pruneThumbprints,
		Interval: so.iam.interval, DeleteRemoved: so.fleet.iamDeleteRemoved, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	if err := reg.Register(providers.Metrics()); err != nil {
		return nil, fmt.Errorf("registering the fleet IAM metrics: %w", err)
	}
	logger.Info("registering every cluster's issuer with AWS IAM", "interval", so.iam.interval, "audiences", so.iam.reg.audiences,
		"pinnedThumbprints", len(so.iam.reg.thumbprints) > 0, "deleteRemoved", so.fleet.iamDeleteRemoved)
	return providers, nil
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

// buildFleetAdmin serves the admin API's cluster routes (/admin/v1/clusters/NS/CLUSTER/keys) on
// --admin-listen: each acts on that cluster's lifecycle, authorized per path (RBAC per cluster).
func buildFleetAdmin(logger *slog.Logger, so serveOptions, fl *fleet.Fleet, userAgent string) (*adminListener, error) {
	cfg, err := kubeConfig(so.kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = userAgent
	// As in single-cluster mode: each request costs a TokenReview and a SubjectAccessReview.
	cfg.QPS, cfg.Burst = 25, 50
	clusters := func(namespace, cluster string) (admin.Keys, bool) {
		m, ok := fl.Lifecycle(namespace, cluster)
		if !ok {
			return nil, false // never a typed nil in the interface
		}
		return m, true
	}
	return so.rotation.buildAdminFor(logger, so, cfg, admin.Config{Clusters: clusters})
}
