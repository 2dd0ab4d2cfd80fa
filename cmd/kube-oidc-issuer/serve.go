package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/issuer"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/filesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/leader"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

type serveOptions struct {
	docs           documents.Config
	secrets        []string
	keyFiles       []string
	kubeconfig     string
	listen         string
	internalListen string
	tlsCertFile    string
	tlsKeyFile     string
	logLevel       string
	logFormat      string
	mirror         mirrorOptions
	iam            iamServeOptions
	rotation       rotationOptions
	probe          signingProbeOptions
	listeners      listenerOptions
	fleet          fleetOptions
}

func newServeCommand() *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve --issuer-url URL ((--secret NAMESPACE/NAME | --key-file PATH)... | --state-secret NAMESPACE/NAME)",
		Short: "Serve the discovery document and JWKS from the cluster's signing key, following its changes",
		Long: `Serve <issuer path>/.well-known/openid-configuration and <issuer path>/openid/v1/jwks on --listen,
built from the cluster's service-account signing key. Keys come from Secrets (watched; Cluster API /
EKS Anywhere, kubeadm, OpenShift and *.pub layouts are detected) and from key files (re-read when
they change). A source that turns bad keeps its last good keys published; until every source has
delivered good keys the documents answer 503.

Signer mode (KEP-740 external signer): --state-secret without --secret and --key-file publishes the
keys of the signer-mode state written by ` + "`kube-oidc-issuer signer`" + `, whose active key the signers
sign with; promote is one write of that state, followed by the signers within --signer-refresh.

/healthz, /readyz (JSON details) and /metrics are served on --internal-listen.`,
		Example: `  kube-oidc-issuer serve --issuer-url https://oidc.example.com/cluster-a --secret eksa-system/mycluster-sa
  kube-oidc-issuer serve --issuer-url https://oidc.example.com --key-file /etc/kubernetes/pki/sa.pub \
      --tls-cert-file tls.crt --tls-key-file tls.key --listen :8443
  kube-oidc-issuer serve --issuer-url https://oidc.example.com --state-secret kube-oidc-issuer/signer-state`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			o.rotation.signerRefreshSet = cmd.Flags().Changed("signer-refresh")
			return runServe(cmd.Context(), logger, o)
		},
	}
	f := cmd.Flags()
	documentFlags{&o.docs}.add(f, "; its path is where the documents are served")
	keySourceFlags{&o.secrets, &o.keyFiles, &o.kubeconfig}.add(f, true, "--secret, --state-secret and the other Kubernetes API clients")
	f.StringVar(&o.listen, "listen", ":8080", "address of the public listener (documents)")
	f.StringVar(&o.internalListen, "internal-listen", ":8081", "address of the internal listener (/healthz, /readyz, /metrics); keep it off the public network")
	f.StringVar(&o.tlsCertFile, "tls-cert-file", "", "serve the public listener with TLS using this certificate chain (PEM), reloaded on change")
	f.StringVar(&o.tlsKeyFile, "tls-key-file", "", "private key for --tls-cert-file (PEM)")
	logFlags{&o.logLevel, &o.logFormat}.add(f)
	o.mirror.addFlags(f, true)
	o.iam.addFlags(f)
	o.rotation.addFlags(f)
	o.probe.addFlags(f)
	o.listeners.addFlags(f)
	o.fleet.addFlags(f)
	return cmd
}

func (o serveOptions) validate() error {
	if err := o.fleet.validate(o); err != nil {
		return err
	}
	if o.fleet.enabled {
		return o.validateFleet()
	}
	if err := validateIssuerURLFlag(o.docs.IssuerURL); err != nil {
		return err
	}
	if err := o.docs.Validate(); err != nil {
		return err
	}
	if len(o.secrets) == 0 && len(o.keyFiles) == 0 && !o.rotation.lifecycleOn() {
		return errors.New("no key source: give --secret NAMESPACE/NAME and/or --key-file PATH, or --state-secret NAMESPACE/NAME alone for signer mode (serving a signer-mode state written by `kube-oidc-issuer signer`)")
	}
	for _, s := range o.secrets {
		if _, _, err := splitSecretRef(s); err != nil {
			return err
		}
	}
	if (o.tlsCertFile == "") != (o.tlsKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if err := o.iam.validate(o.docs.IssuerURL); err != nil {
		return err
	}
	if err := o.probe.validate(); err != nil {
		return err
	}
	if err := o.listeners.validate(); err != nil {
		return err
	}
	return o.rotation.validate(o)
}

// validateFleet checks what fleet mode shares with single-cluster serving.
func (o serveOptions) validateFleet() error {
	if o.docs.MaxAge < 0 {
		return fmt.Errorf("--max-age %s must not be negative", o.docs.MaxAge)
	}
	if (o.tlsCertFile == "") != (o.tlsKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if err := o.listeners.validate(); err != nil {
		return err
	}
	return o.rotation.validate(o)
}

func splitSecretRef(ref string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || n == "" || strings.Contains(n, "/") {
		return "", "", fmt.Errorf("--secret %q: want NAMESPACE/NAME", ref)
	}
	return ns, n, nil
}

// leaderTasks takes work that must run on one replica at a time (leader.Elector; without
// --leader-elect every replica leads).
type leaderTasks interface {
	Go(name string, task leader.Task)
}

// publisher receives every rendered document set; the HTTP server is one, mirror sinks are others.
type publisher = issuer.Publisher

func runServe(ctx context.Context, logger *slog.Logger, o serveOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	info := version.Get()
	logger.Info("starting", "version", info.Version, "commit", info.Commit, "issuer", o.docs.IssuerURL)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	publicLimits, internalLimits, err := o.listeners.setup(logger, reg, o.tlsCertFile != "")
	if err != nil {
		return err
	}

	// One server for every issuer this process serves: its own (Config.IssuerURL), or a fleet's.
	srv, err := server.New(server.Config{IssuerURL: o.docs.IssuerURL, Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	sources, err := buildSources(logger, o, info.UserAgent())
	if err != nil {
		return err
	}
	bg, sources, err := o.rotation.setup(logger, o, sources, reg, info.UserAgent())
	if err != nil {
		return err
	}
	var (
		runIssuers func(context.Context) error
		checks     []server.ReadinessCheck
	)
	if o.fleet.enabled {
		fl, fleetChecks, err := setupFleet(ctx, logger, o, srv, reg, bg.leader, info.UserAgent())
		if err != nil {
			return err
		}
		if o.rotation.adminListen != "" {
			if bg.admin, err = buildFleetAdmin(logger, o, fl, info.UserAgent()); err != nil {
				return err
			}
		}
		runIssuers, checks = fl.Run, append(fleetChecks, bg.readiness())
	} else {
		pipeline, pipelineChecks, err := setupIssuer(ctx, logger, o, srv, bg, sources, reg, info.UserAgent())
		if err != nil {
			return err
		}
		runIssuers, checks = pipeline.Run, pipelineChecks
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runIssuers(ctx) })
	bg.run(ctx, g) // starts the elector: leader-only work is registered above

	var publicTLS *server.CertReloader // nil: plain HTTP behind an ingress
	if o.tlsCertFile != "" {
		publicTLS, err = server.NewCertReloader(o.tlsCertFile, o.tlsKeyFile, logger)
		if err != nil {
			return err
		}
		g.Go(func() error { return publicTLS.Run(ctx) })
	}
	internal := srv.InternalHandler(reg, checks...)
	g.Go(func() error {
		return server.ServeWith(ctx, o.listen, srv.PublicHandler(), publicTLS.TLSConfig(), logger.With("listener", "public"), publicLimits)
	})
	g.Go(func() error {
		return server.ServeWith(ctx, o.internalListen, internal, nil, logger.With("listener", "internal"), internalLimits)
	})
	// ctx is the group's: it ends with the process's or when a task fails.
	err = waitWindDown(ctx, logger, os.Stderr, windDownBound, g.Wait)
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// setupIssuer builds the single issuer's pipeline (Config.IssuerURL on srv) with its mirrors, IAM
// registration and signing probe, registering their leader-only work with bg; it returns the
// pipeline and the readiness checks.
func setupIssuer(ctx context.Context, logger *slog.Logger, o serveOptions, srv *server.Server, bg *background, sources []keys.Source, reg *prometheus.Registry, userAgent string) (*issuer.Issuer, []server.ReadinessCheck, error) {
	mirrors, err := newMirrors(ctx, logger, o.mirror, o.docs.IssuerURL, reg)
	if err != nil {
		return nil, nil, err
	}
	iamReg, err := newIAMRegistration(ctx, logger, o.iam, o.docs, reg)
	if err != nil {
		return nil, nil, err
	}
	published := &publishedKIDs{}
	probeReadiness, err := o.probe.setup(logger, o, bg, published, reg, userAgent)
	if err != nil {
		return nil, nil, err
	}
	pipeline, err := issuer.New(issuer.Config{
		Documents: o.docs, Sources: sources, Logger: logger,
		Publishers: append([]publisher{srv}, mirrors.publishers()...), OnKeySet: published.Publish,
	})
	if err != nil {
		return nil, nil, err
	}
	reg.MustRegister(server.NewSourceStatusCollector(pipeline.Status))
	mirrors.runOn(bg.leader)
	iamReg.runOn(bg.leader)
	keysReady := server.ReadinessCheck{
		Name: "keys",
		Check: func() (bool, any) {
			st := pipeline.Status()
			for _, s := range st {
				if !s.Ready {
					return false, st
				}
			}
			return true, st
		},
	}
	checks := append([]server.ReadinessCheck{keysReady, bg.readiness(), probeReadiness}, append(mirrors.readiness(), iamReg.readiness()...)...)
	return pipeline, checks, nil
}

func buildSources(logger *slog.Logger, o serveOptions, userAgent string) ([]keys.Source, error) {
	var sources []keys.Source
	if len(o.secrets) > 0 {
		cfg, err := kubeConfig(o.kubeconfig)
		if err != nil {
			return nil, err
		}
		cfg.UserAgent = userAgent
		client, err := corev1client.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("creating Kubernetes client: %w", err)
		}
		for _, ref := range o.secrets {
			ns, name, _ := splitSecretRef(ref)
			sources = append(sources, kubesource.New(client, ns, name, logger))
		}
	}
	for _, p := range o.keyFiles {
		sources = append(sources, filesource.New(p, logger))
	}
	return sources, nil
}

// kubeConfig uses an explicit kubeconfig, else the in-cluster configuration, else the usual
// kubeconfig lookup ($KUBECONFIG, ~/.kube/config) for running outside a cluster.
func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading Kubernetes client configuration (not in a cluster; set --kubeconfig): %w", err)
	}
	return cfg, nil
}
