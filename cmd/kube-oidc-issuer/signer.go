package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signer"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signerstate"
)

type signerOptions struct {
	socket           string
	stateSecret      string
	stateCache       string
	kubeconfig       string
	refreshHint      time.Duration
	maxTokenLifetime time.Duration
	internalListen   string
	logLevel         string
	logFormat        string
}

func newSignerCommand() *cobra.Command {
	o := signerOptions{}
	logs := logFlags{&o.logLevel, &o.logFormat}
	cmd := &cobra.Command{
		Use:   "signer --socket PATH --state-secret NAMESPACE/NAME --state-cache FILE",
		Short: "Sign service-account tokens for kube-apiserver (KEP-740 external signer) with the key lifecycle's active key",
		Long: `Serve kube-apiserver's external JWT signer (k8s.io/externaljwt v1: Sign, FetchKeys, Metadata) on the
unix socket --socket (mode 0600), for kube-apiserver --service-account-signing-endpoint=PATH. Run one
signer on every control-plane node, beside kube-apiserver.

The keys are the signer-mode state in --state-secret: the active key signs, every key (staged,
active, previous) is published through FetchKeys. Promote (kube-oidc-issuer serve's admin API, or
keys promote) is one write of that state; every signer signs with the new key as soon as its watch
sees the write, and kube-apiserver publishes it within --refresh-hint: no restart of anything.

kube-apiserver cannot start without its signer, and the signer reads the state through
kube-apiserver: --state-cache (a local file, 0600, rewritten atomically on every change) breaks the
cycle. The signer starts from it when the API server does not answer; once it does, the cache and the
Secret are reconciled (the higher generation wins, by compare-and-swap; a state of another cluster is
refused). Create the first state with ` + "`kube-oidc-issuer signer init`" + `.

/healthz, /readyz (JSON: the state signed with, and whether the Secret agrees) and /metrics are
served on --internal-listen.`,
		Example: `  kube-oidc-issuer signer init --state-cache /var/lib/kube-oidc-issuer/state.json --import-key /etc/kubernetes/pki/sa.key
  kube-oidc-issuer signer --socket /var/run/kube-oidc-issuer/signer.sock \
      --state-secret kube-system/kube-oidc-issuer-signer --state-cache /var/lib/kube-oidc-issuer/state.json \
      --kubeconfig /etc/kubernetes/kube-oidc-issuer.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return runSigner(cmd.Context(), logger, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.socket, "socket", "", "unix socket path to serve on (kube-apiserver --service-account-signing-endpoint); its directory must exist")
	f.StringVar(&o.stateSecret, "state-secret", "", "NAMESPACE/NAME of the Secret holding the signer-mode key lifecycle state")
	f.StringVar(&o.stateCache, "state-cache", "", "local copy of the state (0600), read at start and rewritten on every change; created by `signer init`")
	kubeconfigFlag{&o.kubeconfig}.add(f, ", for --state-secret"+kubeconfigInClusterSuffix)
	f.DurationVar(&o.refreshHint, "refresh-hint", signer.DefaultRefreshHint, "how often kube-apiserver should fetch the public keys again (FetchKeys refresh_hint_seconds; whole seconds)")
	f.DurationVar(&o.maxTokenLifetime, "max-token-lifetime", signer.DefaultMaxTokenExpiration, "longest token lifetime kube-apiserver may ask for (Metadata max_token_expiration_seconds; at least 10m); keep it equal to serve's --max-token-lifetime")
	f.StringVar(&o.internalListen, "internal-listen", "127.0.0.1:8082", "address of the internal listener (/healthz, /readyz, /metrics)")
	logs.add(f)
	cmd.AddCommand(newSignerInitCommand())
	return cmd
}

func (o signerOptions) validate() error {
	var errs []error
	for _, req := range []struct{ flag, value string }{
		{"--socket", o.socket}, {"--state-secret", o.stateSecret}, {"--state-cache", o.stateCache},
	} {
		if req.value == "" {
			errs = append(errs, fmt.Errorf("%s is required", req.flag))
		}
	}
	if o.stateSecret != "" {
		if _, _, err := splitRef("--state-secret", o.stateSecret); err != nil {
			errs = append(errs, err)
		}
	}
	if o.refreshHint < time.Second || o.refreshHint%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--refresh-hint %s: want whole seconds, at least 1s", o.refreshHint))
	}
	if o.maxTokenLifetime < signer.MinMaxTokenExpiration || o.maxTokenLifetime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("--max-token-lifetime %s: want whole seconds, at least %s (kube-apiserver's minimum token lifetime)", o.maxTokenLifetime, signer.MinMaxTokenExpiration))
	}
	return errors.Join(errs...)
}

func runSigner(ctx context.Context, logger *slog.Logger, o signerOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	info := version.Get()
	logger.Info("starting the external JWT signer", "version", info.Version, "commit", info.Commit, "socket", o.socket, "stateSecret", o.stateSecret)
	ns, name, _ := splitRef("--state-secret", o.stateSecret)
	cfg, err := kubeConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	// Keys held in AWS KMS sign through it; the SDK's default chain finds credentials only when
	// such a key is used.
	awsCfg, err := loadAWSConfig(ctx)
	if err != nil {
		return err
	}
	state, err := signerstate.New(signerstate.Config{
		Secrets: client.CoreV1(), StateSecret: lifecycle.Ref{Namespace: ns, Name: name},
		CachePath: o.stateCache, Logger: logger, KMS: kms.NewFromConfig(awsCfg),
	})
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerSignerMetrics(reg, state)
	srv, err := signer.NewServer(signer.Config{Keys: state, RefreshHint: o.refreshHint, MaxTokenExpiration: o.maxTokenLifetime, Logger: logger, Registerer: reg})
	if err != nil {
		return err
	}
	lis, err := signer.Listen(o.socket)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return state.Run(ctx) })
	g.Go(func() error { return srv.Serve(ctx, lis) })
	g.Go(func() error {
		return server.ServeWith(ctx, o.internalListen, signerInternalHandler(reg, state), nil,
			logger.With("listener", "internal"), server.DefaultInternalListenerConfig())
	})
	if err := waitWindDown(ctx, logger, os.Stderr, windDownBound, g.Wait); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	logger.Info("stopped")
	return nil
}

// registerSignerMetrics exposes the key state's status.
func registerSignerMetrics(reg prometheus.Registerer, state *signerstate.Keys) {
	gauge := func(name, help string, value func(signerstate.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return value(state.Status()) })
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		gauge("kube_oidc_issuer_signer_ready", "1 once a key state has been accepted (from the cache or the state Secret), so Sign works.",
			func(s signerstate.Status) float64 { return b(s.Ready) }),
		gauge("kube_oidc_issuer_signer_state_generation", "Generation of the key state signed with.",
			func(s signerstate.Status) float64 { return float64(s.Generation) }),
		gauge("kube_oidc_issuer_signer_state_synced", "1 while the latest read of the state Secret agreed with the state signed with; 0 while it cannot be read, does not parse, or is foreign.",
			func(s signerstate.Status) float64 { return b(s.SecretSynced) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kube_oidc_issuer_signer_state_errors_total", Help: "Problems with the state Secret or the cache (unreadable, corrupt, foreign, cache write failed)."},
			func() float64 { return float64(state.Status().Errors) }),
	)
}

// signerInternalHandler serves /healthz, /readyz (ready once a key state was accepted) and /metrics.
func signerInternalHandler(gatherer prometheus.Gatherer, state *signerstate.Keys) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := state.Status()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(struct {
			Ready bool               `json:"ready"`
			State signerstate.Status `json:"state"`
		}{st.Ready, st})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}
