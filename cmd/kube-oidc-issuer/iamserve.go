package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

// iamServeOptions are serve's --iam-* flags: keep the issuer registered with AWS IAM.
type iamServeOptions struct {
	register bool
	interval time.Duration
	reg      registration
}

const iamFlagPrefix = "iam-"

func (o *iamServeOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.register, "iam-register", false, "register the issuer with AWS IAM as an OpenID Connect provider and keep the registration (thumbprints, audiences, tags) up to date; AWS credentials from the SDK's standard sources (AWS_*, IRSA)")
	f.DurationVar(&o.interval, "iam-interval", 10*time.Minute, "how often --iam-register reconciles (failures are retried sooner)")
	o.reg.addFlags(f, iamFlagPrefix)
}

func (o *iamServeOptions) validate(issuerURL string) error {
	if !o.register {
		return nil
	}
	if err := iam.ValidateProviderURL(issuerURL); err != nil {
		return fmt.Errorf("--iam-register: %w", err)
	}
	if o.interval < time.Second {
		return fmt.Errorf("--iam-interval %s: want at least 1s", o.interval)
	}
	return o.reg.validate(iamFlagPrefix)
}

// iamRegistration is serve's reconcile loop; nil when --iam-register is off.
type iamRegistration struct {
	loop *oidcprovider.Loop
}

// newIAMRegistration builds the reconcile loop for serve and registers its metrics; nil when
// --iam-register is off.
func newIAMRegistration(ctx context.Context, logger *slog.Logger, o iamServeOptions, docs documents.Config, reg prometheus.Registerer) (*iamRegistration, error) {
	if !o.register {
		return nil, nil
	}
	cfg, err := loadAWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "iam")
	fetcher := &thumbprint.Fetcher{}
	loop := oidcprovider.NewLoop(oidcprovider.New(awsiam.NewFromConfig(cfg), logger), oidcprovider.LoopConfig{
		Desired: func(ctx context.Context) (oidcprovider.Desired, error) {
			return o.reg.desired(ctx, logger, fetcher, docs.IssuerURL, docs.JWKSURI, iamFlagPrefix)
		},
		Interval: o.interval,
		Logger:   logger,
	})
	if err := reg.Register(oidcprovider.NewStatusCollector(loop.Status)); err != nil {
		return nil, fmt.Errorf("registering IAM metrics: %w", err)
	}
	return &iamRegistration{loop: loop}, nil
}

// runOn registers the reconcile loop as leader-only work: replicas that reconciled on their own
// would fight over the thumbprint list whenever they saw different certificate chains.
func (r *iamRegistration) runOn(tasks leaderTasks) {
	if r != nil {
		tasks.Go("iam-register", r.loop.Run)
	}
}

// readiness reports the registration under checks.iam on /readyz. It is always ready: a failing
// registration shows in the detail, the metrics and the logs, but must not take the documents out
// of service, which STS needs all the same.
func (r *iamRegistration) readiness() []server.ReadinessCheck {
	if r == nil {
		return nil
	}
	return []server.ReadinessCheck{{
		Name:  "iam",
		Check: func() (bool, any) { return true, r.loop.Status() },
	}}
}
