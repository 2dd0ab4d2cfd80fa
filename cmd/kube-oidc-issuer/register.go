package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	awsiam "github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
)

// registration holds what `register` and `serve --iam-register` share: the provider's desired
// audiences, thumbprints and tags.
type registration struct {
	audiences        []string
	thumbprints      []string // pinned; empty means fetch
	tags             []string // KEY=VALUE
	pruneThumbprints bool
}

// addFlags registers the flags under prefix ("" for register, "iam-" for serve).
func (r *registration) addFlags(f *pflag.FlagSet, prefix string) {
	f.StringSliceVar(&r.audiences, prefix+"audience", []string{iam.DefaultAudience}, "audience (IAM client ID) the provider accepts; repeatable. Exactly these are registered: others are removed")
	f.StringSliceVar(&r.thumbprints, prefix+"thumbprint", nil, "pin this thumbprint (hex SHA-1, colons allowed) instead of fetching it from the issuer's hosts; repeatable, at most 5")
	f.StringSliceVar(&r.tags, prefix+"tag", nil, "tag KEY=VALUE to set on the provider; repeatable. Tags not named are left alone")
	f.BoolVar(&r.pruneThumbprints, prefix+"prune-thumbprints", false, "remove registered thumbprints the hosts no longer present (after a CA change has finished everywhere); by default they are kept, up to IAM's 5")
}

// validate checks everything that needs no network, so that mistakes surface before AWS is called.
func (r *registration) validate(prefix string) error {
	if err := iam.ValidateAudiences(r.audiences); err != nil {
		return fmt.Errorf("--%saudience: %w", prefix, err)
	}
	for _, t := range r.thumbprints {
		if _, err := iam.NormalizeThumbprint(t); err != nil {
			return fmt.Errorf("--%sthumbprint: %w", prefix, err)
		}
	}
	if _, err := r.tagMap(prefix); err != nil {
		return err
	}
	return nil
}

func (r *registration) tagMap(prefix string) (map[string]string, error) {
	tags := make(map[string]string, len(r.tags))
	for _, kv := range r.tags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%stag %q: want KEY=VALUE", prefix, kv)
		}
		if _, dup := tags[k]; dup {
			return nil, fmt.Errorf("--%stag: key %q given twice", prefix, k)
		}
		tags[k] = v
	}
	return tags, nil
}

// thumbprintTargets are the hosts STS connects to: the jwks_uri's host first, then the issuer's
// host when it differs (AWS wants both thumbprints then).
func thumbprintTargets(issuerURL, jwksURI string) []string {
	if jwksURI == "" {
		jwksURI = issuerURL + documents.JWKSPath
	}
	var targets []string
	seen := map[string]bool{}
	for _, raw := range []string{jwksURI, issuerURL} {
		u, err := url.Parse(raw)
		if err != nil || seen[u.Host] {
			continue
		}
		seen[u.Host] = true
		targets = append(targets, "https://"+u.Host)
	}
	return targets
}

// desired builds the provider's desired state; unless thumbprints are pinned it fetches them from
// the hosts now.
func (r *registration) desired(ctx context.Context, logger *slog.Logger, fetcher *thumbprint.Fetcher, issuerURL, jwksURI, prefix string) (oidcprovider.Desired, error) {
	tags, err := r.tagMap(prefix)
	if err != nil {
		return oidcprovider.Desired{}, err
	}
	d := oidcprovider.Desired{
		URL:              issuerURL,
		Audiences:        r.audiences,
		Thumbprints:      r.thumbprints,
		PruneThumbprints: r.pruneThumbprints,
		Tags:             tags,
	}
	if len(d.Thumbprints) > 0 {
		return d, nil
	}
	for _, target := range thumbprintTargets(issuerURL, jwksURI) {
		res, err := fetcher.Fetch(ctx, target)
		if err != nil {
			return d, fmt.Errorf("computing the thumbprint of %s (or pin it with --%sthumbprint): %w", target, prefix, err)
		}
		logger.Debug("fetched thumbprint", "host", res.Address, "proxy", res.Proxy, "thumbprint", res.Thumbprint,
			"subject", res.Certificate.Subject.String(), "chainLength", len(res.Chain))
		if res.LeafOnly() {
			logger.Warn("the host presents only its own certificate, no CA: its thumbprint changes at every renewal",
				"host", res.Address, "thumbprint", res.Thumbprint)
		}
		d.Thumbprints = append(d.Thumbprints, res.Thumbprint)
	}
	return d, nil
}

type registerOptions struct {
	issuerURL string
	jwksURI   string
	reg       registration
	dryRun    bool
	timeout   time.Duration
	logLevel  string
}

func newRegisterCommand() *cobra.Command {
	o := registerOptions{}
	logs := logFlags{level: &o.logLevel}
	cmd := &cobra.Command{
		Use:   "register --issuer-url URL [--audience AUD]... [--thumbprint HEX]... [--tag KEY=VALUE]... [--dry-run]",
		Short: "Register the issuer with AWS IAM as an OpenID Connect provider, or bring the registration up to date",
		Long: `Find the IAM OpenID Connect provider for exactly --issuer-url and create it, or update its
thumbprints, audiences and tags to the desired state; print the plan first. Running it again
changes nothing.

Thumbprints are fetched from the jwks_uri's host (and the issuer's host if different): the SHA-1
of the last certificate each presents, the way AWS computes it, through HTTPS_PROXY if set. During
a CA change the new thumbprint is added in front and old ones are kept (IAM keeps 5) unless
--prune-thumbprints. --thumbprint pins them instead (air-gapped runs).

AWS credentials, region and endpoints come from the SDK's standard sources: AWS_* environment
variables (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_IAM, ...), ~/.aws, IRSA. The IAM actions needed
are printed by "kube-oidc-issuer iam-policy".`,
		Example: `  kube-oidc-issuer register --issuer-url https://oidc.example.com/clusters/prod-1 --dry-run
  kube-oidc-issuer register --issuer-url https://oidc.example.com/clusters/prod-1 --tag cluster=prod-1
  kube-oidc-issuer register --issuer-url https://oidc.example.com/clusters/prod-1 \
      --thumbprint 9e99a48a9960b14926bb7f3b02e22da2b0ab7280 --audience sts.amazonaws.com --audience vault`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			return runRegister(cmd.Context(), cmd, logger, o)
		},
	}
	f := cmd.Flags()
	issuerFlags{&o.issuerURL}.add(f, iamProviderURLSuffix)
	addJWKSURIFlag(f, &o.jwksURI, "; its host's thumbprint is registered too")
	o.reg.addFlags(f, "")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the plan (create / update thumbprints / audiences / tags) and change nothing")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	logs.add(f)
	return cmd
}

func runRegister(ctx context.Context, cmd *cobra.Command, logger *slog.Logger, o registerOptions) error {
	if err := validateProviderURLFlag(o.issuerURL); err != nil {
		return err
	}
	if err := validateDocumentFlags(documents.Config{IssuerURL: o.issuerURL, JWKSURI: o.jwksURI}); err != nil {
		return err
	}
	if err := o.reg.validate(""); err != nil {
		return err
	}
	if err := validatePositive("timeout", o.timeout); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	d, err := o.reg.desired(ctx, logger, &thumbprint.Fetcher{}, o.issuerURL, o.jwksURI, "")
	if err != nil {
		return err
	}
	cfg, err := loadAWSConfig(ctx)
	if err != nil {
		return err
	}
	r := oidcprovider.New(awsiam.NewFromConfig(cfg), logger)
	p, err := r.Plan(ctx, d)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprint(out, p.String())
	switch {
	case o.dryRun:
		fmt.Fprintln(out, "dry run: nothing changed")
		return nil
	case p.UpToDate():
		return nil
	}
	if err := r.Apply(ctx, p); err != nil {
		return err
	}
	if p.ARN == "" {
		return errors.New("IAM returned no ARN for the new provider")
	}
	_, err = fmt.Fprintf(out, "registered %s\n", p.ARN)
	return err
}
