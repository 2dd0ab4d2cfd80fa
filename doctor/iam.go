package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
)

// providerOrSkip returns the registered provider, or the result to report when there is none.
func (s *state) providerOrSkip() (*oidcprovider.Provider, *Result) {
	if s.cfg.IAM == nil {
		r := skip("no AWS credentials given (--aws)")
		return nil, &r
	}
	if s.provider == nil {
		r := skip("no IAM OIDC provider")
		return nil, &r
	}
	return s.provider, nil
}

func checkIAMProvider(ctx context.Context, s *state) Result {
	if s.cfg.IAM == nil {
		return skip("no AWS credentials given (--aws)")
	}
	u := s.cfg.IssuerURL
	if err := iam.ValidateProviderURL(u); err != nil {
		return fail(ErrNoProvider+u, "IAM accepts only https://HOST[/PATH] without port, query or trailing slash, byte-identical to the tokens' iss: serve the issuer at such a URL (an Ingress on 443)",
			"IAM cannot register %s: %v", u, err)
	}
	p, err := s.cfg.IAM.Find(ctx, u)
	if err != nil {
		var denied *oidcprovider.AccessDeniedError
		fix := "check the AWS credentials, region and endpoint (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_IAM)"
		if errors.As(err, &denied) {
			fix = "grant iam:ListOpenIDConnectProviders and iam:GetOpenIDConnectProvider to the identity running doctor (kube-oidc-issuer iam-policy prints a policy)"
		}
		return fail("", fix, "looking up the provider: %v", err)
	}
	if p == nil {
		return fail(ErrNoProvider+u, "kube-oidc-issuer register --issuer-url "+u+" (or serve --iam-register); the provider URL must equal the tokens' iss byte for byte",
			"no IAM OIDC provider for %s in this account", u)
	}
	s.provider = p
	return pass("%s", p.ARN)
}

// thumbprintTargets are the hosts STS connects to: the jwks_uri's and the issuer's.
func (s *state) thumbprintTargets() []string {
	jwks := s.jwksURI
	if jwks == "" {
		jwks = s.cfg.IssuerURL + documents.JWKSPath
	}
	var out []string
	for _, raw := range []string{jwks, s.cfg.IssuerURL} {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			continue
		}
		if t := "https://" + u.Host; !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

func checkIAMThumbprint(ctx context.Context, s *state) Result {
	p, r := s.providerOrSkip()
	if r != nil {
		return *r
	}
	registered := make([]string, len(p.Thumbprints))
	for i, t := range p.Thumbprints {
		registered[i] = strings.ToLower(t)
	}
	var seen, missing []string
	for _, target := range s.thumbprintTargets() {
		res, err := s.cfg.Thumbprints.Fetch(ctx, target)
		var certErr *thumbprint.CertificateError
		if errors.As(err, &certErr) {
			res = certErr.Result // still the chain STS sees; trust is checked by the discovery fetch
		} else if err != nil {
			return fail(ErrRetrieveKey, "make "+target+" reachable over HTTPS", "computing the thumbprint of %s: %v", target, err)
		}
		seen = append(seen, fmt.Sprintf("%s=%s", res.Address, res.Thumbprint))
		if !slices.Contains(registered, res.Thumbprint) {
			missing = append(missing, fmt.Sprintf("%s presents %s (last certificate %q)", res.Address, res.Thumbprint, res.Certificate.Subject))
		}
	}
	if len(missing) > 0 {
		return fail(ErrThumbprint, "kube-oidc-issuer register --issuer-url "+s.cfg.IssuerURL+" adds the live thumbprint in front and keeps the old ones (or serve --iam-register does it continuously)",
			"%s; registered: %s", strings.Join(missing, "; "), strings.Join(registered, ", "))
	}
	return pass("registered thumbprints include %s", strings.Join(seen, ", "))
}

func checkIAMAudience(_ context.Context, s *state) Result {
	p, r := s.providerOrSkip()
	if r != nil {
		return *r
	}
	want := []string{s.cfg.Audience}
	if s.token != nil && s.token.parseErr == nil && len(s.token.audience) > 0 {
		want = s.token.audience
	}
	// STS needs one of the token's audiences to be a client ID of the provider.
	for _, a := range want {
		if slices.Contains(p.Audiences, a) {
			return pass("provider audiences %q include %s", p.Audiences, a)
		}
	}
	return fail(ErrAudience, "kube-oidc-issuer register --issuer-url "+s.cfg.IssuerURL+" --audience "+want[0]+" (list every audience the provider should accept)",
		"provider audiences %q include none of %q", p.Audiences, want)
}
