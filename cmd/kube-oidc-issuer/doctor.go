package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/boundedread"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/internal/version"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/keys/kubesource"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/signingprobe"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/storage/s3sink"
)

// errChecksFailed makes the exit status non-zero once the report is printed.
var errChecksFailed = errors.New("doctor: some checks failed")

type doctorOptions struct {
	issuerURL   string
	tokenFile   string
	audience    string
	caFile      string
	useAWS      bool
	mirrors     []string
	s3Endpoint  string
	s3Region    string
	s3PathStyle bool
	output      string
	timeout     time.Duration

	// The control-plane-signing check: enabled by kubeconfig.
	kubeconfig          string
	signingSecret       string
	probeServiceAccount string
	probeCount          int
}

func newDoctorCommand() *cobra.Command {
	o := doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor --issuer-url URL [--token FILE] [--aws] [--mirror s3://BUCKET[/PREFIX]]... [--kubeconfig PATH [--signing-secret NAMESPACE/NAME]]",
		Short: "Diagnose a live issuer the way AWS STS sees it, naming the AWS error each problem causes",
		Long: `Fetch the discovery document and the JWKS from --issuer-url over HTTPS the way AWS STS does and
check them; with --token, check a service-account token against them (iss, kid, aud, exp, and its
signature with go-oidc); with --aws, check the IAM OpenID Connect provider for exactly the issuer
URL (exists, thumbprints include the live chain's, audiences include the token's); with --mirror,
check that the mirrored objects are public (anonymous GET) and byte-identical to the live ones.

With --kubeconfig, find out which key the control plane signs with now: mint --signing-probe-count
short-lived tokens for --signing-probe-service-account through the TokenRequest API (audience
` + "`" + signingprobe.Audience + "`" + `, which no relying party accepts), each over a new connection
so that several kube-apiservers behind one load balancer are each likely reached, and read the kid
in their headers; the tokens are never printed, logged or stored. Every such kid must be in the live
JWKS. With --signing-secret, the signing-key Secret's active key (the one whose private half it
holds: what kube-apiserver signs with after its next restart) must be the one the control plane
signs with now. The kubeconfig's identity needs create on serviceaccounts/token for the probe
ServiceAccount, and get on the Secret.

One line per check: PASS, FAIL or SKIP, its name and what was found; a failure adds the error AWS
STS returns because of it ("aws:") and what to fix ("fix:"). --output json prints the same as one
JSON object. The exit status is 1 when any check fails. Nothing is changed anywhere.

IAM is only contacted with --aws (or KUBE_OIDC_ISSUER_AWS=true), never just because credentials
happen to be present: credentials and endpoints then come from the SDK's standard sources (AWS_*,
~/.aws, IRSA), and the identity needs iam:ListOpenIDConnectProviders and
iam:GetOpenIDConnectProvider. --ca-file adds a private CA to the system roots (SSL_CERT_FILE works
too); STS itself trusts only public CAs and the registered thumbprints.`,
		Example: `  kube-oidc-issuer doctor --issuer-url https://oidc.example.com/clusters/prod-1
  kubectl create token my-app --audience sts.amazonaws.com > /tmp/token
  kube-oidc-issuer doctor --issuer-url https://oidc.example.com/clusters/prod-1 --token /tmp/token --aws
  kube-oidc-issuer doctor --issuer-url https://my-bucket.s3.eu-west-1.amazonaws.com/prod-1 --mirror s3://my-bucket --output json
  kube-oidc-issuer doctor --issuer-url https://oidc.example.com/clusters/prod-1 --kubeconfig ~/.kube/prod-1 --signing-secret eksa-system/prod-1-sa`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	issuerFlags{&o.issuerURL}.add(f, "; with --aws, also its IAM OpenID Connect provider's URL")
	f.StringVar(&o.tokenFile, "token", "", "file holding a service-account token to check against the issuer (e.g. from kubectl create token)")
	f.StringVar(&o.audience, "audience", doctor.DefaultAudience, "the audience the relying party expects in the token")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA certificate(s) to trust for the issuer and the mirror in addition to the system roots")
	f.BoolVar(&o.useAWS, "aws", false, "also check the IAM OIDC provider (needs AWS credentials: AWS_* environment, ~/.aws or IRSA)")
	f.StringSliceVar(&o.mirrors, "mirror", nil, "also check the mirror s3://BUCKET[/PREFIX] (as given to serve --mirror) is public and current; repeatable")
	f.StringVar(&o.s3Endpoint, "s3-endpoint", "", "S3 endpoint URL for S3-compatible stores (default: AWS, or AWS_ENDPOINT_URL_S3)")
	f.StringVar(&o.s3Region, "s3-region", "", "region of the --mirror bucket (default: from an S3 issuer URL, else AWS_REGION, else us-east-1)")
	f.BoolVar(&o.s3PathStyle, "s3-path-style", false, "address the bucket as ENDPOINT/BUCKET (most S3-compatible stores)")
	f.StringVar(&o.output, "output", "text", "text or json")
	f.DurationVar(&o.timeout, "timeout", doctor.DefaultTimeout, "give up on each request after this long (STS waits about 5 s)")
	kubeconfigFlag{&o.kubeconfig}.add(f, ": also check which key its control plane signs with (control-plane-signing)")
	f.StringVar(&o.signingSecret, "signing-secret", "", "NAMESPACE/NAME of the signing-key Secret, whose active key the control plane must sign with (needs --kubeconfig)")
	f.StringVar(&o.probeServiceAccount, "signing-probe-service-account", "default/default", "NAMESPACE/NAME of the ServiceAccount probe tokens are minted for (needs create on its serviceaccounts/token)")
	f.IntVar(&o.probeCount, "signing-probe-count", signingprobe.DefaultProbesPerRound, "probe tokens to mint, each over a new connection, so that each kube-apiserver behind a load balancer is likely asked")
	return cmd
}

func runDoctor(ctx context.Context, cmd *cobra.Command, o doctorOptions) error {
	if err := validateIssuerURLFlag(o.issuerURL); err != nil {
		return err
	}
	if err := validatePositive("timeout", o.timeout); err != nil {
		return err
	}
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("--output %q: use text or json", o.output)
	}
	cfg := doctor.Config{IssuerURL: o.issuerURL, Audience: o.audience, Timeout: o.timeout}
	if o.caFile != "" {
		pool, err := caPool(o.caFile)
		if err != nil {
			return err
		}
		cfg.RootCAs = pool
	}
	cfg.Thumbprints = &thumbprint.Fetcher{RootCAs: cfg.RootCAs, Timeout: o.timeout}
	probe, secret, err := o.signingCheck()
	if err != nil {
		return err
	}
	cfg.SigningProbe, cfg.SigningSecret = probe, secret
	if o.tokenFile != "" {
		b, err := boundedread.ReadFile(o.tokenFile, keys.MaxFileSize)
		if err != nil {
			return fmt.Errorf("reading --token: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
		if cfg.Token == "" {
			return fmt.Errorf("--token %s is empty", o.tokenFile)
		}
	}
	for _, raw := range o.mirrors {
		m, err := o.mirror(raw)
		if err != nil {
			return err
		}
		cfg.Mirrors = append(cfg.Mirrors, m)
	}
	if o.useAWS {
		awsCfg, err := loadAWSConfig(ctx)
		if err != nil {
			return err
		}
		cfg.IAM = oidcprovider.New(awsiam.NewFromConfig(awsCfg), slog.New(slog.DiscardHandler))
	}

	rep := doctor.Run(ctx, cfg)
	if o.output == "json" {
		err = rep.WriteJSON(cmd.OutOrStdout())
	} else {
		err = rep.WriteText(cmd.OutOrStdout())
	}
	if err != nil {
		return err
	}
	if rep.Failed() {
		return errChecksFailed
	}
	return nil
}

// caPool is the system roots plus the certificates in file.
func caPool(file string) (*x509.CertPool, error) {
	pemBytes, err := boundedread.ReadFile(file, keys.MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("reading --ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// mirror resolves s3://BUCKET[/PREFIX] to the public URLs of the two objects, the way serve
// --mirror places them.
func (o doctorOptions) mirror(raw string) (doctor.Mirror, error) {
	target, err := url.Parse(raw)
	if err != nil {
		return doctor.Mirror{}, fmt.Errorf("--mirror %q: %w", raw, err)
	}
	if target.Scheme != "s3" {
		return doctor.Mirror{}, fmt.Errorf("--mirror %s: doctor checks s3:// mirrors only", target.Redacted())
	}
	endpoint := (mirrorOptions{s3Endpoint: o.s3Endpoint}).endpoint()
	loc, err := s3sink.Resolve(target, o.issuerURL, endpoint)
	if err != nil {
		if !strings.Contains(err.Error(), "--mirror") {
			err = fmt.Errorf("--mirror %s: %w", target.Redacted(), err)
		}
		return doctor.Mirror{}, err
	}
	base, err := o.objectBase(loc, endpoint)
	if err != nil {
		return doctor.Mirror{}, fmt.Errorf("--mirror %s: %w", target.Redacted(), err)
	}
	return doctor.Mirror{
		Name:         target.Redacted(),
		DiscoveryURL: base + loc.Prefix + storage.Key(documents.DiscoveryPath),
		JWKSURL:      base + loc.Prefix + storage.Key(documents.JWKSPath),
	}, nil
}

// objectBase is the URL objects of loc's bucket are under, ending in "/".
func (o doctorOptions) objectBase(loc s3sink.Location, endpoint string) (string, error) {
	if endpoint == "" {
		region := o.s3Region
		for _, r := range []string{loc.Region, os.Getenv("AWS_REGION"), "us-east-1"} {
			if region == "" {
				region = r
			}
		}
		endpoint = "https://s3." + region + ".amazonaws.com"
		if strings.HasPrefix(region, "cn-") {
			endpoint += ".cn"
		}
	}
	u, err := url.Parse(strings.TrimSuffix(endpoint, "/"))
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("S3 endpoint %q is not a URL", endpoint)
	}
	if o.s3PathStyle || loc.Style == s3sink.StylePath || strings.Contains(loc.Bucket, ".") {
		return u.String() + "/" + loc.Bucket + "/", nil
	}
	u.Host = loc.Bucket + "." + u.Host
	return u.String() + "/", nil
}

// signingCheck validates the control-plane-signing flags and, given --kubeconfig, builds the
// check's probe and (given --signing-secret) the Secret reader; both are nil without
// --kubeconfig, which skips the check.
func (o doctorOptions) signingCheck() (doctor.SigningProbe, doctor.SigningSecret, error) {
	saNS, saName, err := splitRef("--signing-probe-service-account", o.probeServiceAccount)
	if err != nil {
		return nil, nil, err
	}
	var secretNS, secretName string
	if o.signingSecret != "" {
		if secretNS, secretName, err = splitRef("--signing-secret", o.signingSecret); err != nil {
			return nil, nil, err
		}
	}
	if o.probeCount < 1 {
		return nil, nil, fmt.Errorf("--signing-probe-count %d: want at least 1", o.probeCount)
	}
	if o.kubeconfig == "" {
		return nil, nil, nil
	}
	// Only the file given: doctor may run where $KUBECONFIG or an in-cluster identity points at
	// another cluster than the issuer's.
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig %s: %w", o.kubeconfig, err)
	}
	cfg.UserAgent = version.Get().UserAgent()
	probeClient, err := corev1client.NewForConfig(signingprobe.FreshConnections(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	probe := kubeSigningProbe{
		minter:         signingprobe.TokenRequester{Client: probeClient, Namespace: saNS, Name: saName},
		serviceAccount: saNS + "/" + saName,
		count:          o.probeCount,
		timeout:        signingprobe.DefaultTimeout,
	}
	if secretName == "" {
		return probe, nil, nil
	}
	client, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	return probe, kubeSigningSecret{client: client, namespace: secretNS, name: secretName, timeout: signingprobe.DefaultTimeout}, nil
}

// kubeSigningProbe is doctor.SigningProbe through the TokenRequest API: count tokens, each minted
// over a new connection when the minter's client uses signingprobe.FreshConnections. Only the kid
// of each token's header leaves it; the token goes out of scope in probe.
type kubeSigningProbe struct {
	minter         signingprobe.Minter
	serviceAccount string
	count          int
	timeout        time.Duration
}

func (p kubeSigningProbe) ServiceAccount() string { return p.serviceAccount }

// SigningKIDs returns the kids the probes saw, sorted. Like a round of serve's probe, it succeeds
// when any probe did: the kids seen are what the control plane signs with, and a lone failure (an
// apiserver restarting behind the load balancer) does not change that. When all fail, the first
// failure is returned.
func (p kubeSigningProbe) SigningKIDs(ctx context.Context) ([]string, error) {
	kids, err := signingprobe.Round(ctx, p.minter, p.count, p.timeout, nil)
	if err != nil {
		return nil, classifyKubeError(err)
	}
	return kids, nil
}

// kubeSigningSecret is doctor.SigningSecret: one GET of the signing-key Secret.
type kubeSigningSecret struct {
	client          corev1client.SecretsGetter
	namespace, name string
	timeout         time.Duration
}

func (s kubeSigningSecret) Name() string { return s.namespace + "/" + s.name }

func (s kubeSigningSecret) ActiveKIDs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	sec, err := s.client.Secrets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if err != nil {
		return nil, classifyKubeError(err)
	}
	return activeKIDs(sec)
}

// activeKIDs are the kids of the keys whose private half sec holds (in any layout kubesource
// reads): the keys kube-apiserver signs with when started from the Secret's contents.
func activeKIDs(sec *corev1.Secret) ([]string, error) {
	ks, err := kubesource.KeysFromSecret(sec)
	if err != nil {
		return nil, err
	}
	var kids []string
	for _, k := range ks {
		if k.Phase == keys.PhaseActive {
			kids = append(kids, k.Public.KeyID())
		}
	}
	return kids, nil
}

// classifyKubeError gives a failed request to kube-apiserver the reason doctor picks its fix by.
// An error that is no API status never got an answer from kube-apiserver: DNS, TCP, TLS, timeout.
func classifyKubeError(err error) error {
	var reason doctor.KubeErrorReason
	var status apierrors.APIStatus
	switch {
	case errors.Is(err, signingprobe.ErrUnreadableToken):
		return err // kube-apiserver answered, with something that is not a token
	case apierrors.IsForbidden(err):
		reason = doctor.KubeForbidden
	case apierrors.IsNotFound(err):
		reason = doctor.KubeNotFound
	case apierrors.IsUnauthorized(err):
		reason = doctor.KubeUnauthorized
	case !errors.As(err, &status):
		reason = doctor.KubeUnreachable
	default:
		return err
	}
	return &doctor.KubeError{Reason: reason, Err: err}
}
