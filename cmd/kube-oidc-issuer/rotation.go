package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/kmskey"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/admin"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/leader"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/lifecycle"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/server"
)

// defaultMirrorAllowance is added to --max-age for the default --publish-lead: the time a mirror
// takes to carry a staged key to the bucket relying parties read.
const defaultMirrorAllowance = 5 * time.Minute

// defaultSignerRefresh is the default --signer-refresh: a signer sees a promote through its watch
// of the state Secret within seconds, and kube-apiserver asks it again after the signer's
// --refresh-hint (10s by default); 30s leaves room for a slow watch.
const defaultSignerRefresh = 30 * time.Second

// rotationOptions are serve's flags for the key lifecycle, the admin API and leader election.
type rotationOptions struct {
	stateSecret      string
	signingSecret    string
	maxTokenLifetime time.Duration
	clockSkew        time.Duration
	publishLead      time.Duration
	rotateEvery      time.Duration
	rotateAlgorithm  string
	signerRefresh    time.Duration
	// signerRefreshSet is whether --signer-refresh was given: only signer mode has signers.
	signerRefreshSet bool
	kmsKeys          bool

	adminListen      string
	adminTLSCertFile string
	adminTLSKeyFile  string
	adminTokenFile   string
	adminAudiences   []string

	leaderElect    bool
	leaseName      string
	leaseNamespace string
	leaderIdentity string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
}

func (o *rotationOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.stateSecret, "state-secret", "", "NAMESPACE/NAME of the Secret holding the key lifecycle (staged keys and their private keys, retained keys); enables rotation and the admin API. Without --secret and --key-file it is signer mode: the Secret holds the signer-mode state written by `kube-oidc-issuer signer` (its active key signs through the signers), and it is the only key source")
	f.BoolVar(&o.kmsKeys, "kms-keys", false, "signer mode: create staged keys in AWS KMS (RS256: RSA_2048, ES256: ECC_NIST_P256; tagged with the state Secret) instead of in memory; the state records their ARNs and the signers sign through kms:Sign. AWS configuration from the SDK's default chain (AWS_ENDPOINT_URL_KMS honoured); the permissions: `kube-oidc-issuer iam-policy --kms`")
	f.StringVar(&o.signingSecret, "signing-secret", "", "NAMESPACE/NAME of the signing-key Secret that promote writes into and whose departures are tracked (default: the only --secret)")
	f.DurationVar(&o.maxTokenLifetime, "max-token-lifetime", 24*time.Hour, "longest lifetime of a service-account token the cluster issues; a key that stops signing stays published this long + --token-clock-skew + --max-age")
	f.DurationVar(&o.clockSkew, "token-clock-skew", lifecycle.DefaultClockSkew, "clock skew relying parties allow on expiry, added to the retention of a key that stopped signing")
	f.DurationVar(&o.publishLead, "publish-lead", 0, "how long a staged key must be published before promote accepts it without force (default: --max-age + 5m for mirrors)")
	f.DurationVar(&o.rotateEvery, "rotate-every", 0, "scheduled rotation: stage a new key when the active key is this old, promote it after --publish-lead (0: off)")
	f.StringVar(&o.rotateAlgorithm, "rotate-algorithm", lifecycle.AlgorithmRS256, "algorithm of keys staged by scheduled rotation: RS256 or ES256")
	f.DurationVar(&o.signerRefresh, "signer-refresh", defaultSignerRefresh, "signer mode: how long the signers take at most to follow a promote (their watch of the state Secret plus kube-apiserver's refresh hint, the signer's --refresh-hint, default 10s); the outgoing key stays published that much longer; must be >= 0")

	f.StringVar(&o.adminListen, "admin-listen", "", "address of the admin API listener (TLS; off when empty); needs --state-secret, or --fleet (each cluster's keys at /admin/v1/clusters/NAMESPACE/CLUSTER/keys)")
	f.StringVar(&o.adminTLSCertFile, "admin-tls-cert-file", "", "certificate chain of the admin listener, reloaded on change (default: --tls-cert-file)")
	f.StringVar(&o.adminTLSKeyFile, "admin-tls-key-file", "", "private key for --admin-tls-cert-file (default: --tls-key-file)")
	f.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding a static bearer token (at least 16 bytes) allowed every admin action, for use outside a cluster; re-read when it changes (a bad replacement is logged and the previous token kept); other tokens are checked with TokenReview and SubjectAccessReview")
	f.StringSliceVar(&o.adminAudiences, "admin-token-audience", nil, "audience a bearer token must carry for the admin API (TokenReview); repeatable. Operators then mint tokens for it alone (kubectl create token NAME --audience AUD), and tokens meant for the API server are refused (default: the API server's own audiences)")

	f.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader with a Lease so that background work (pruning, departure tracking, scheduled rotation, mirror and IAM loops) runs on one replica; every replica serves")
	f.StringVar(&o.leaseName, "leader-elect-lease-name", "kube-oidc-issuer", "name of the leader election Lease")
	f.StringVar(&o.leaseNamespace, "leader-elect-namespace", "", "namespace of the leader election Lease (default: the --state-secret namespace)")
	f.StringVar(&o.leaderIdentity, "leader-elect-identity", "", "this replica's identity in the Lease (default: hostname + random suffix)")
	f.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", leader.DefaultLeaseDuration, "how long a standby waits after the last renewal before taking over a dead leader's Lease")
	f.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", leader.DefaultRenewDeadline, "how long the leader retries renewing before it gives up leading")
	f.DurationVar(&o.retryPeriod, "leader-elect-retry-period", leader.DefaultRetryPeriod, "interval between Lease acquire and renew attempts")
}

// lifecycleOn reports whether the key lifecycle is configured.
func (o rotationOptions) lifecycleOn() bool { return o.stateSecret != "" }

// signerMode reports whether serve publishes a signer-mode state (KEP-740 external signer): a
// state Secret and no other key source, since the signers sign with the state's active key and
// no signing-key Secret or key file holds it.
func (o rotationOptions) signerMode(so serveOptions) bool {
	return o.lifecycleOn() && len(so.secrets) == 0 && len(so.keyFiles) == 0
}

// signingRef is the signing-key Secret: --signing-secret, else the only --secret.
func (o rotationOptions) signingRef(so serveOptions) (ns, name string, err error) {
	ref := o.signingSecret
	if ref == "" {
		if len(so.secrets) == 0 {
			return "", "", errors.New("--state-secret with --key-file needs a signing-key Secret: give it as --secret and --signing-secret (signer mode, --state-secret without --secret, takes no --key-file)")
		}
		if len(so.secrets) != 1 {
			return "", "", fmt.Errorf("--state-secret needs the signing-key Secret: give --signing-secret NAMESPACE/NAME (one of the %d --secret)", len(so.secrets))
		}
		ref = so.secrets[0]
	}
	ns, name, err = splitRef("--signing-secret", ref)
	if err != nil {
		return "", "", err
	}
	if !slices.Contains(so.secrets, ns+"/"+name) {
		return "", "", fmt.Errorf("--signing-secret %s must also be a --secret: the issuer publishes its keys and follows its changes", ref)
	}
	return ns, name, nil
}

func (o rotationOptions) adminTLSFiles(so serveOptions) (cert, key string) {
	if o.adminTLSCertFile != "" || o.adminTLSKeyFile != "" {
		return o.adminTLSCertFile, o.adminTLSKeyFile
	}
	return so.tlsCertFile, so.tlsKeyFile
}

func (o rotationOptions) validate(so serveOptions) error {
	if o.leaderElect && (o.leaseName == "" || o.leaseDuration <= o.renewDeadline || o.retryPeriod <= 0) {
		return errors.New("--leader-elect needs a lease name and --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period > 0")
	}
	if so.fleet.enabled {
		// Each cluster's lifecycle lives in its own state Secret, beside its `<cluster>-sa`.
		return o.validateFleet(so)
	}
	if !o.lifecycleOn() {
		switch {
		case o.signingSecret != "":
			return errors.New("--signing-secret needs --state-secret")
		case o.adminListen != "":
			return errors.New("--admin-listen needs --state-secret: the admin API acts on the key lifecycle")
		case o.rotateEvery != 0:
			return errors.New("--rotate-every needs --state-secret")
		case o.signerRefreshSet:
			return errors.New("--signer-refresh needs signer mode: --state-secret without --secret and --key-file")
		case o.kmsKeys:
			return errors.New("--kms-keys needs signer mode: --state-secret without --secret and --key-file")
		case o.leaderElect && o.leaseNamespace == "":
			return errors.New("--leader-elect needs --leader-elect-namespace (or --state-secret, whose namespace is the default)")
		}
		return nil
	}
	ns, name, err := splitRef("--state-secret", o.stateSecret)
	if err != nil {
		return err
	}
	if o.signerMode(so) {
		if o.signingSecret != "" {
			return errors.New("--signing-secret: signer mode has no signing-key Secret (the signers sign with the state's active key); drop it, or give the Secret as --secret too for Secret mode")
		}
		if o.signerRefresh < 0 {
			return fmt.Errorf("--signer-refresh %s must not be negative", o.signerRefresh)
		}
	} else {
		if o.kmsKeys {
			return errors.New("--kms-keys needs signer mode: --state-secret without --secret and --key-file (in Secret mode kube-apiserver reads the private key from the signing-key Secret)")
		}
		if o.signerRefreshSet {
			// Refused rather than ignored: whoever set it expects signers, and a leftover --secret
			// or --key-file turned serve into Secret mode.
			return errors.New("--signer-refresh needs signer mode: --state-secret without --secret and --key-file")
		}
		sns, sname, err := o.signingRef(so)
		if err != nil {
			return err
		}
		if ns == sns && name == sname {
			return errors.New("--state-secret must not be the signing-key Secret")
		}
	}
	return o.validateLifecycle(so)
}

// validateLifecycle checks the flags every key lifecycle shares, one issuer's or a fleet's.
func (o rotationOptions) validateLifecycle(so serveOptions) error {
	if o.maxTokenLifetime <= 0 {
		return fmt.Errorf("--max-token-lifetime %s must be positive", o.maxTokenLifetime)
	}
	if o.clockSkew < 0 || o.publishLead < 0 || o.rotateEvery < 0 {
		return errors.New("--token-clock-skew, --publish-lead and --rotate-every must not be negative")
	}
	if o.rotateEvery > 0 && o.rotateEvery <= o.lead(so) {
		return fmt.Errorf("--rotate-every %s must be longer than the publish lead %s", o.rotateEvery, o.lead(so))
	}
	switch o.rotateAlgorithm {
	case lifecycle.AlgorithmRS256, lifecycle.AlgorithmES256:
	default:
		return fmt.Errorf("--rotate-algorithm %q: use RS256 or ES256", o.rotateAlgorithm)
	}
	if o.adminListen != "" {
		cert, key := o.adminTLSFiles(so)
		if cert == "" || key == "" {
			return errors.New("--admin-listen serves bearer tokens and needs TLS: give --admin-tls-cert-file and --admin-tls-key-file (or --tls-cert-file and --tls-key-file)")
		}
	}
	if slices.Contains(o.adminAudiences, "") {
		return errors.New("--admin-token-audience must not be empty")
	}
	return nil
}

// validateFleet checks the lifecycle flags of fleet mode, where every cluster has a key lifecycle
// of its own (state Secret `<cluster>-oidc-keys`), acted on through the admin API's cluster routes
// and by scheduled rotation.
func (o rotationOptions) validateFleet(so serveOptions) error {
	switch {
	case o.signingSecret != "":
		return errors.New("--signing-secret does not apply to --fleet: each cluster's signing-key Secret is its <cluster>-sa")
	case o.signerRefreshSet || o.kmsKeys:
		return errors.New("--signer-refresh and --kms-keys do not apply to --fleet: fleet mode publishes Cluster API clusters' keys (Secret mode)")
	case o.leaderElect && o.leaseNamespace == "":
		return errors.New("--leader-elect needs --leader-elect-namespace in fleet mode")
	}
	return o.validateLifecycle(so)
}

// fleetLifecycleOn tells whether fleet mode gives the clusters key lifecycles: only when something
// acts on them (the admin API, scheduled rotation), since they write Secrets.
func (o rotationOptions) fleetLifecycleOn() bool { return o.adminListen != "" || o.rotateEvery > 0 }

// lead is the publish lead in effect.
func (o rotationOptions) lead(so serveOptions) time.Duration {
	if o.publishLead > 0 {
		return o.publishLead
	}
	return so.docs.MaxAge + defaultMirrorAllowance
}

func splitRef(flag, ref string) (string, string, error) {
	ns, name, err := splitSecretRef(ref)
	if err != nil {
		return "", "", fmt.Errorf("%s %q: want NAMESPACE/NAME", flag, ref)
	}
	return ns, name, nil
}

// background is what the key lifecycle adds to serve: the leader elector (always present: without
// --leader-elect this replica always leads), the lifecycle manager and the admin API when
// configured.
//
// Other background loops that must run on one replica only (the mirror, IAM registration) register
// with leader.Go before run is called.
type background struct {
	leader  *leader.Elector
	manager *lifecycle.Manager
	admin   *adminListener
	logger  *slog.Logger
}

type adminListener struct {
	addr    string
	handler http.Handler
	tls     *server.CertReloader
}

// setup builds the background work and returns the key sources for the collector: the signing-key
// Secret's source wrapped so its changes wake the leader, plus the lifecycle state's source; in
// signer mode the state's source alone.
func (o rotationOptions) setup(logger *slog.Logger, so serveOptions, sources []keys.Source, reg prometheus.Registerer, userAgent string) (*background, []keys.Source, error) {
	b := &background{logger: logger}
	if !o.lifecycleOn() && !o.leaderElect {
		el, err := leader.New(leader.Config{Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		b.leader = el
		return b, sources, b.registerMetrics(reg)
	}
	cfg, err := kubeConfig(so.kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg.UserAgent = userAgent
	// Each admin request costs a TokenReview, a SubjectAccessReview and a read of the state:
	// client-go's default of 5 requests/s would queue a handful of concurrent operators for
	// seconds. Still bounded, so a flood of bad tokens cannot flood the API server.
	cfg.QPS, cfg.Burst = 25, 50

	leaseNS := o.leaseNamespace
	if leaseNS == "" && o.lifecycleOn() {
		leaseNS, _, _ = splitRef("--state-secret", o.stateSecret)
	}
	lcfg := leader.Config{Enabled: o.leaderElect, Namespace: leaseNS, Name: o.leaseName, Identity: o.leaderIdentity,
		LeaseDuration: o.leaseDuration, RenewDeadline: o.renewDeadline, RetryPeriod: o.retryPeriod, Logger: logger}
	if o.leaderElect {
		if lcfg.Client, err = coordinationv1client.NewForConfig(cfg); err != nil {
			return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
		}
	}
	if b.leader, err = leader.New(lcfg); err != nil {
		return nil, nil, err
	}
	if err := b.registerMetrics(reg); err != nil {
		return nil, nil, err
	}
	if !o.lifecycleOn() {
		return b, sources, nil
	}

	secrets, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	stateNS, stateName, _ := splitRef("--state-secret", o.stateSecret)
	stateRef := lifecycle.Ref{Namespace: stateNS, Name: stateName}
	signer := o.signerMode(so)
	lc := lifecycle.Config{
		Secrets:          secrets,
		Events:           secrets,
		StateSecret:      stateRef,
		MaxTokenLifetime: o.maxTokenLifetime,
		ClockSkew:        o.clockSkew,
		MaxAge:           so.docs.MaxAge,
		PublishLead:      o.lead(so),
		RotateEvery:      o.rotateEvery,
		RotateAlgorithm:  o.rotateAlgorithm,
		Logger:           logger,
	}
	if signer {
		lc.Signer, lc.SignerRefresh = true, o.signerRefresh
		if o.kmsKeys {
			awsCfg, err := loadAWSConfig(context.Background())
			if err != nil {
				return nil, nil, err
			}
			lc.NewKey = kmsKeyMaker(kms.NewFromConfig(awsCfg), stateRef)
			logger.Info("staged keys are created in AWS KMS", "region", awsCfg.Region)
		}
	} else {
		signNS, signName, _ := o.signingRef(so)
		lc.SigningSecret = lifecycle.Ref{Namespace: signNS, Name: signName}
	}
	if b.manager, err = lifecycle.NewManager(lc); err != nil {
		return nil, nil, err
	}
	if o.maxTokenLifetime < 10*time.Minute {
		logger.Warn("--max-token-lifetime is below the 10 minute minimum of the TokenRequest API: keys may be pruned while tokens they signed are still valid", "maxTokenLifetime", o.maxTokenLifetime)
	}
	b.leader.Go("key-lifecycle", b.manager.RunLeader)

	var out []keys.Source
	if signer {
		logger.Info("signer mode: publishing the keys of signer-mode state Secret "+stateRef.String()+"; promote takes effect through the signers",
			"stateSecret", stateRef.String(), "signerRefresh", o.signerRefresh)
		out = []keys.Source{signerStateSource{Source: b.manager.Source(), ref: stateRef}}
	} else {
		signingName := "secret/" + lc.SigningSecret.String() // kubesource.Source.Name
		out = make([]keys.Source, 0, len(sources)+1)
		for _, s := range sources {
			if s.Name() == signingName {
				s = b.manager.WatchSigningSource(s)
			}
			out = append(out, s)
		}
		out = append(out, b.manager.Source())
	}

	if o.adminListen != "" {
		if b.admin, err = o.buildAdmin(logger, so, cfg, b.manager); err != nil {
			return nil, nil, err
		}
	}
	return b, out, nil
}

// signerStateSource is the state's source in signer mode, where it is the only key source. The
// state source takes a missing Secret for an empty state, right while it sits beside a signing-key
// Secret; alone, that would make /readyz ready with nothing to publish. So here a state without an
// active key (no Secret yet, or a Secret-mode state) is a failed observation: unready until the
// signers' state appears, and the last good keys stay published should it vanish.
type signerStateSource struct {
	keys.Source
	ref lifecycle.Ref
}

func (s signerStateSource) Run(ctx context.Context, report func(keys.Observation)) error {
	return s.Source.Run(ctx, func(o keys.Observation) {
		o.AllowEmpty = false
		if o.Err == nil && !slices.ContainsFunc(o.Keys, func(k keys.Key) bool { return k.Phase == keys.PhaseActive }) {
			o.Err = fmt.Errorf("state Secret %s holds no signer-mode state (no active key): create it with `kube-oidc-issuer signer init` and start the signers", s.ref)
		}
		report(o)
	})
}

func (o rotationOptions) buildAdmin(logger *slog.Logger, so serveOptions, cfg *rest.Config, m *lifecycle.Manager) (*adminListener, error) {
	return o.buildAdminFor(logger, so, cfg, admin.Config{Keys: m})
}

// buildAdminFor builds the admin listener for acfg's lifecycle (Keys, or a fleet's Clusters).
func (o rotationOptions) buildAdminFor(logger *slog.Logger, so serveOptions, cfg *rest.Config, acfg admin.Config) (*adminListener, error) {
	authn, err := authenticationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	authz, err := authorizationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	kube := &admin.KubeAuth{TokenReviews: authn, SubjectAccessReviews: authz, Audiences: o.adminAudiences}
	acfg.Authenticator, acfg.Authorizer, acfg.Logger = kube, kube, logger
	if o.adminTokenFile != "" {
		if acfg.StaticToken, err = admin.LoadStaticToken(o.adminTokenFile, logger); err != nil {
			return nil, err
		}
	}
	h, err := admin.NewHandler(acfg)
	if err != nil {
		return nil, err
	}
	cert, key := o.adminTLSFiles(so)
	reloader, err := server.NewCertReloader(cert, key, logger.With("listener", "admin"))
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	return &adminListener{addr: o.adminListen, handler: h, tls: reloader}, nil
}

func (b *background) registerMetrics(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kube_oidc_issuer_leader",
		Help: "1 while this replica runs the background work (leader election won, or election off), else 0.",
	}, func() float64 {
		if b.leader.IsLeader() {
			return 1
		}
		return 0
	}))
}

// readiness shows leadership and the lifecycle loop on /readyz under "leader". It never makes a
// replica unready: standbys serve the same documents.
func (b *background) readiness() server.ReadinessCheck {
	return server.ReadinessCheck{
		Name: "leader",
		Check: func() (bool, any) {
			d := struct {
				leader.Status
				Lifecycle *lifecycle.Status `json:"lifecycle,omitempty"`
			}{Status: b.leader.Status()}
			if b.manager != nil && d.Leader {
				st := b.manager.Status()
				d.Lifecycle = &st
			}
			return true, d
		},
	}
}

// run starts the elector (and with it the leader-only tasks) and the admin listener in g.
func (b *background) run(ctx context.Context, g *errgroup.Group) {
	g.Go(func() error { return b.leader.Run(ctx) })
	if b.admin == nil {
		return
	}
	g.Go(func() error { return b.admin.tls.Run(ctx) })
	g.Go(func() error {
		return server.Serve(ctx, b.admin.addr, b.admin.handler, b.admin.tls.TLSConfig(), b.logger.With("listener", "admin"))
	})
}

// kmsKeyMaker stages keys created in AWS KMS, tagged so that an operator can tell which cluster's
// state a key belongs to.
func kmsKeyMaker(api kmskey.API, state lifecycle.Ref) func(context.Context, string, time.Time) (lifecycle.Record, error) {
	return func(ctx context.Context, alg string, now time.Time) (lifecycle.Record, error) {
		if alg == "" {
			alg = lifecycle.AlgorithmRS256
		}
		if alg != lifecycle.AlgorithmRS256 && alg != lifecycle.AlgorithmES256 {
			return lifecycle.Record{}, fmt.Errorf("%w: algorithm %q: use %s or %s", lifecycle.ErrInvalid, alg, lifecycle.AlgorithmRS256, lifecycle.AlgorithmES256)
		}
		s, err := kmskey.Create(ctx, api, alg, "kube-oidc-issuer service-account signing key of state Secret "+state.String(),
			map[string]string{kmskey.ManagedByTag: kmskey.ManagedByValue, kmskey.StateSecretTag: state.String()})
		if err != nil {
			return lifecycle.Record{}, err
		}
		return lifecycle.NewKMSRecord(s.ARN(), s.Public(), now)
	}
}
