// Package doctor diagnoses a live issuer the way AWS STS sees it: it fetches the discovery
// document and the JWKS over HTTPS, checks a token against them, compares the IAM OIDC provider
// and the S3 mirror with what is live and, given a cluster, compares the keys the control plane
// signs with against the JWKS and the signing-key Secret. Each failed check names the error AWS
// would return and what to fix. It only reads: nothing is changed anywhere (the signing probe's
// TokenRequest mints a short-lived token the API server does not store).
package doctor

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/oidcprovider"
	"github.com/kube-oidc-issuer/kube-oidc-issuer/iam/thumbprint"
)

// Status is the outcome of one check.
type Status string

// Outcomes. A check is skipped when what it needs is missing (no token, no AWS credentials) or an
// earlier check it depends on failed.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// DefaultTimeout is how long STS waits for the issuer's endpoints, as far as AWS documents it.
const DefaultTimeout = 5 * time.Second

// DefaultAudience is the audience AWS STS expects in IRSA tokens.
const DefaultAudience = "sts.amazonaws.com"

// Result is the outcome of one check.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// AWSError is the error AWS STS returns to the caller of AssumeRoleWithWebIdentity because of
	// this failure, as AWS phrases it as far as we know.
	AWSError string `json:"awsError,omitempty"`
	// Fix says what to change.
	Fix string `json:"fix,omitempty"`
}

// Report is the outcome of all checks, in the order they ran.
type Report struct {
	IssuerURL string        `json:"issuerURL"`
	Results   []Result      `json:"results"`
	Duration  time.Duration `json:"durationNanoseconds"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Result returns the result of the check named name.
func (r *Report) Result(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.Name == name {
			return res, true
		}
	}
	return Result{}, false
}

// WriteText writes one line per check, "STATUS name: detail", followed by indented "aws:" and
// "fix:" lines for failures.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, res := range r.Results {
		fmt.Fprintf(&b, "%s %s: %s\n", res.Status, res.Name, res.Detail)
		if res.Status != Fail {
			continue
		}
		if res.AWSError != "" {
			fmt.Fprintf(&b, "     aws: %s\n", res.AWSError)
		}
		if res.Fix != "" {
			fmt.Fprintf(&b, "     fix: %s\n", res.Fix)
		}
	}
	pass, fail, skip := r.counts()
	fmt.Fprintf(&b, "%d passed, %d failed, %d skipped in %s\n", pass, fail, skip, r.Duration.Round(time.Millisecond))
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *Report) counts() (pass, fail, skip int) {
	for _, res := range r.Results {
		switch res.Status {
		case Pass:
			pass++
		case Fail:
			fail++
		case Skip:
			skip++
		}
	}
	return pass, fail, skip
}

// ProviderFinder finds the IAM OIDC provider registered for exactly an issuer URL (nil when none);
// *oidcprovider.Reconciler is one.
type ProviderFinder interface {
	Find(ctx context.Context, issuerURL string) (*oidcprovider.Provider, error)
}

// Config says what to diagnose and how to reach it.
type Config struct {
	// IssuerURL is the issuer as the IAM provider and the tokens name it, byte for byte.
	IssuerURL string
	// HTTPClient fetches the documents; nil means one honouring HTTPS_PROXY that trusts RootCAs.
	HTTPClient *http.Client
	// RootCAs are trusted for the issuer's (and the mirror's) TLS; nil means the system roots
	// (SSL_CERT_FILE, SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// Timeout bounds each request; zero means DefaultTimeout, STS's own limit.
	Timeout time.Duration
	// Token is a service-account token (compact JWS) to check; empty skips the token checks.
	Token string
	// Audience is the audience the relying party expects; empty means DefaultAudience.
	Audience string
	// Now is the clock for the expiry check; nil means time.Now.
	Now func() time.Time
	// IAM finds the registered provider; nil skips the IAM checks.
	IAM ProviderFinder
	// Thumbprints computes live thumbprints for the IAM check; nil means a thumbprint.Fetcher
	// trusting RootCAs.
	Thumbprints *thumbprint.Fetcher
	// Mirrors are the S3 mirrors to compare with the live documents.
	Mirrors []Mirror
	// SigningProbe finds out which keys the control plane signs with; nil skips the
	// control-plane-signing check.
	SigningProbe SigningProbe
	// SigningSecret reads the signing-key Secret to compare with what the control plane signs
	// with; nil compares with the JWKS only.
	SigningSecret SigningSecret
}

// Mirror is a copy of the documents in a bucket, read anonymously the way the public reads it.
type Mirror struct {
	// Name identifies it in the report, e.g. s3://bucket/prefix.
	Name string
	// DiscoveryURL and JWKSURL are the objects' HTTPS (or, for local S3-compatible stores, HTTP)
	// URLs.
	DiscoveryURL, JWKSURL string
}

// state is what the checks learn and later checks use.
type state struct {
	cfg    Config
	client *http.Client

	discoveryRaw []byte
	discovery    *discoveryDoc
	jwksURI      string
	jwksRaw      []byte
	jwksHeader   http.Header
	jwksFetched  bool
	keySet       *jose.JSONWebKeySet

	token *tokenInfo

	provider *oidcprovider.Provider
}

type check struct {
	name string
	run  func(ctx context.Context, s *state) Result
}

// checks in the order they run; later ones use what earlier ones learnt.
func checks() []check {
	return []check{
		{"issuer-url", checkIssuerURL},
		{"discovery", checkDiscovery},
		{"discovery-issuer", checkDiscoveryIssuer},
		{"jwks-reachable", checkJWKSReachable},
		{"jwks-content-type", checkJWKSContentType},
		{"jwks-cacheable", checkJWKSCacheable},
		{"jwks-keys", checkJWKSKeys},
		{"token-issuer", checkTokenIssuer},
		{"token-kid", checkTokenKID},
		{"token-audience", checkTokenAudience},
		{"token-expiry", checkTokenExpiry},
		{"token-signature", checkTokenSignature},
		{"control-plane-signing", checkControlPlaneSigning},
		{"iam-provider", checkIAMProvider},
		{"iam-thumbprint", checkIAMThumbprint},
		{"iam-audience", checkIAMAudience},
		{"mirror", checkMirrors},
	}
}

// Run runs every check against the live issuer. Failures are in the report, not in an error.
func Run(ctx context.Context, cfg Config) *Report {
	start := time.Now()
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Thumbprints == nil {
		cfg.Thumbprints = &thumbprint.Fetcher{RootCAs: cfg.RootCAs, Timeout: cfg.Timeout}
	}
	s := &state{cfg: cfg, client: cfg.HTTPClient}
	if s.client == nil {
		s.client = NewHTTPClient(cfg.RootCAs)
	}
	rep := &Report{IssuerURL: cfg.IssuerURL}
	for _, c := range checks() {
		res := c.run(ctx, s)
		res.Name = c.name
		rep.Results = append(rep.Results, res)
	}
	rep.Duration = time.Since(start)
	return rep
}

func pass(format string, args ...any) Result {
	return Result{Status: Pass, Detail: fmt.Sprintf(format, args...)}
}

func skip(format string, args ...any) Result {
	return Result{Status: Skip, Detail: fmt.Sprintf(format, args...)}
}

func fail(awsError, fix, format string, args ...any) Result {
	return Result{Status: Fail, Detail: fmt.Sprintf(format, args...), AWSError: awsError, Fix: fix}
}
