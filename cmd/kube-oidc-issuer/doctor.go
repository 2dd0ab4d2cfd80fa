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

	"github.com/kube-oidc-issuer/kube-oidc-issuer/doctor"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
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
}

func newDoctorCommand() *cobra.Command {
	o := doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor --issuer-url URL [--token FILE] [--aws] [--mirror s3://BUCKET[/PREFIX]]...",
		Short: "Diagnose a live issuer the way AWS STS sees it, naming the AWS error each problem causes",
		Long: `Fetch the discovery document and the JWKS from --issuer-url over HTTPS the way AWS STS does and
check them; with --token, check a service-account token against them (iss, kid, aud, exp, and its
signature with go-oidc); with --aws, check the IAM OpenID Connect provider for exactly the issuer
URL (exists, thumbprints include the live chain's, audiences include the token's); with --mirror,
check that the mirrored objects are public (anonymous GET) and byte-identical to the live ones.

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
  kube-oidc-issuer doctor --issuer-url https://my-bucket.s3.eu-west-1.amazonaws.com/prod-1 --mirror s3://my-bucket --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.issuerURL, "issuer-url", "", "the issuer URL, byte for byte the tokens' iss and the IAM provider's URL")
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
	return cmd
}

func runDoctor(ctx context.Context, cmd *cobra.Command, o doctorOptions) error {
	if o.issuerURL == "" {
		return errors.New("--issuer-url is required")
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
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
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
	var err error
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
	pemBytes, err := os.ReadFile(file)
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
