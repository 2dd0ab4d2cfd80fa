// Package iam holds what AWS IAM requires of an OpenID Connect provider for a Kubernetes issuer,
// shared by the thumbprint, registration and trust-policy packages below it: the provider URL
// rules, the names IAM derives from the URL (condition-key prefix, provider ARN), and the minimal
// IAM policy that lets the issuer register itself.
//
// Nothing here calls AWS.
package iam

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/documents"
)

// DefaultAudience is the audience (IAM: client ID) AWS STS expects in web-identity tokens, and the
// one the EKS pod-identity webhook requests by default.
const DefaultAudience = "sts.amazonaws.com"

// Limits IAM enforces on an OpenID Connect provider.
const (
	MaxURLLength      = 255
	MaxThumbprints    = 5
	MaxAudiences      = 100
	MaxAudienceLength = 255
)

// ValidateProviderURL holds an issuer URL to AWS IAM's rules for an OpenID Connect provider URL on
// top of the issuer rules every command applies (documents.ValidateIssuerURL: https, a lower-case
// host, no query, fragment, user information, trailing slash, empty or dot segments): no port,
// and at most 255 characters. Its errors are *documents.IssuerURLError, like those rules'.
//
// moto accepts URLs AWS refuses (http, ports), so this runs before any AWS call.
func ValidateProviderURL(issuerURL string) error {
	if err := documents.ValidateIssuerURL(issuerURL); err != nil {
		return err
	}
	// The issuer rules leave exactly https://HOST[:PORT][/PATH].
	hostPort, path, _ := strings.Cut(strings.TrimPrefix(issuerURL, "https://"), "/")
	if u, err := url.Parse(issuerURL); err == nil && u.Port() != "" {
		return &documents.IssuerURLError{URL: issuerURL,
			Problem: fmt.Sprintf("it names port %s", u.Port()),
			Reason:  "AWS IAM refuses an OpenID Connect provider URL with a port (STS fetches from port 443)",
			Fix:     fmt.Sprintf("serve the issuer on port 443 (an Ingress or load balancer in front) and use %q", strings.TrimSuffix("https://"+strings.TrimSuffix(hostPort, ":"+u.Port())+"/"+path, "/")),
		}
	}
	if len(issuerURL) > MaxURLLength {
		return &documents.IssuerURLError{URL: issuerURL,
			Problem: fmt.Sprintf("it is %d characters long", len(issuerURL)),
			Reason:  fmt.Sprintf("AWS IAM allows at most %d in an OpenID Connect provider URL", MaxURLLength),
			Fix:     "use a shorter host or path",
		}
	}
	return nil
}

// HostPath is the provider URL without its scheme ("oidc.example.com/clusters/prod-1"): how IAM
// names the provider in its ARN and prefixes its condition keys (HOST/PATH:sub, HOST/PATH:aud).
// The URL must have passed ValidateProviderURL.
func HostPath(issuerURL string) string {
	return strings.TrimPrefix(issuerURL, "https://")
}

// ProviderARN is the ARN IAM gives the provider for issuerURL in accountID. partition is "aws"
// unless the account is in China ("aws-cn") or GovCloud ("aws-us-gov"); an account of "*" matches
// every account (for policies).
func ProviderARN(partition, accountID, issuerURL string) string {
	return fmt.Sprintf("arn:%s:iam::%s:oidc-provider/%s", partition, accountID, HostPath(issuerURL))
}

// HostPathFromARN returns the HOST/PATH an OpenID Connect provider ARN names, and false for any
// other ARN.
func HostPathFromARN(arn string) (string, bool) {
	const marker = ":oidc-provider/"
	i := strings.Index(arn, marker)
	if !strings.HasPrefix(arn, "arn:") || i < 0 {
		return "", false
	}
	return arn[i+len(marker):], true
}

// ValidateAccountID accepts a 12-digit AWS account ID.
func ValidateAccountID(id string) error {
	if len(id) != 12 || strings.Trim(id, "0123456789") != "" {
		return fmt.Errorf("AWS account ID %q: want 12 digits", id)
	}
	return nil
}

// ValidatePartition accepts an AWS partition name such as aws, aws-cn or aws-us-gov.
func ValidatePartition(p string) error {
	parts := strings.Split(p, "-")
	ok := parts[0] == "aws"
	for _, part := range parts[1:] {
		ok = ok && part != "" && strings.Trim(part, "abcdefghijklmnopqrstuvwxyz") == ""
	}
	if !ok {
		return fmt.Errorf("AWS partition %q: want aws, aws-cn, aws-us-gov or another AWS partition", p)
	}
	return nil
}

// ValidateAudiences checks audiences against IAM's client-ID rules: 1 to 100 of them, each 1 to
// 255 characters, no duplicates.
func ValidateAudiences(auds []string) error {
	if len(auds) == 0 {
		return fmt.Errorf("no audience: STS needs at least one (usually %s)", DefaultAudience)
	}
	if len(auds) > MaxAudiences {
		return fmt.Errorf("%d audiences: AWS IAM allows at most %d per provider", len(auds), MaxAudiences)
	}
	seen := make(map[string]bool, len(auds))
	for _, a := range auds {
		if a == "" || len(a) > MaxAudienceLength {
			return fmt.Errorf("audience %q: AWS IAM wants 1 to %d characters", a, MaxAudienceLength)
		}
		if seen[a] {
			return fmt.Errorf("audience %q given twice", a)
		}
		seen[a] = true
	}
	return nil
}
